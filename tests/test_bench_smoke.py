"""The benchmarks in bench/ run, on tiny inputs, so that they never rot: each is started as the
docs say (a subprocess of this interpreter), must exit 0 and print the rows of its table with
numbers in them. The numbers themselves are not judged here (a shared CI machine is no place
for timing verdicts); docs/benchmarks.md holds real runs.

ninja (PyPI `ninja`, in the test extra), make and SeaweedFS's `weed` are outside parts: without
them these tests skip, except in CI (`CI` set), where they fail."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
NUMBER = r"\d+\.\d+"


def need(name: str) -> None:
    path = os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")])
    if shutil.which(name, path=path) is None:
        message = (f"`{name}` is not installed (ninja: pip install -e '.[test]'; make, GNU time: "
                   "apt-get install make time)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def bench(script: str, *args: str, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("DASHSCOPE_API_KEY", "IMGBUILD_PROVIDER")}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


def row(out: str, pattern: str) -> re.Match[str]:
    found = re.search(pattern, out, re.MULTILINE)
    assert found, f"no row matching {pattern!r} in:\n{out}"
    return found


def test_noop(tmp_path: Path) -> None:
    need("ninja")
    need("make")
    out = bench("noop.py", "--targets", "100", "--small", "100", "--runs", "1", "--workdir", str(tmp_path))
    for name in ("imgbuild build, 100 targets, warm", "imgbuild check, 100 targets, warm",
                 r"imgbuild check, 100 targets, fresh clone \(no \.imgbuild/\)",
                 "ninja \\(no work to do\\), 100 outputs", "make -q, 100 outputs", "imgbuild --version",
                 r"python -c pass \(interpreter start-up\)"):
        row(out, rf"^\| {name} \| {NUMBER} \|$")


def test_scale(tmp_path: Path) -> None:
    need("ninja")
    need("make")
    need("time")
    out = bench("scale.py", "--sizes", "100,200", "--runs", "1", "--workdir", str(tmp_path))
    for n in (100, 200):
        cells = row(out, rf"^\| {n} \|(.*)\|$").group(1).split("|")
        assert len(cells) == 11, cells
        first_wall, first_rss, ninja_rss, *times = (c.strip() for c in cells)
        assert float(first_wall) > 0 and 20 < float(first_rss) < 2000  # MiB: a Python process
        assert 0 < float(ninja_rss) < float(first_rss)  # a C++ process, smaller than any Python one
        assert all(float(t) > 0 for t in times), times
    # a signed figure for each: 100 targets apart, either may be lost in the noise of the allocator
    row(out, r"^first build, peak RSS added per target from 100 to 200: imgbuild -?\d+ B, ninja -?\d+ B per edge")
    # the project was built, so the no-op build left its snapshot, and the clone is gone
    assert (tmp_path / "imgbuild-100" / ".imgbuild" / "noop-snapshot.json").exists()
    assert not (tmp_path / "fresh-clone").exists()


def test_memory() -> None:
    out = bench("memory.py", "--images", "3", "--jobs", "2")
    row(out, r"^3 images of 2048\*2048 \(placeholder\), 3 written in \d+\.\d s: peak RSS \d+ MB")


def test_throughput() -> None:
    out = bench("throughput.py", "--n", "4", "--runs", "1", "--sdk-runs", "1", "--write", "-")
    for name in ("R binds", "C binds", "async Wan tasks"):
        cells = row(out, rf"^\| {name} [^|]*\|(.*)\|$").group(1).split("|")
        assert len(cells) == 13, cells
        assert cells[6].strip() == "0" and cells[9].strip() == "0", f"failures in {cells}"  # imgbuild, SDK
        for cpu in cells[10:12]:  # CPU ms per image, each client: "4.3 (3.4)"
            assert re.fullmatch(r"\d+\.\d+ \(\d+\.\d+\)", cpu.strip()), cells


def test_remote() -> None:
    from s3_support import require_weed

    require_weed()  # fails in CI when missing, skips elsewhere
    out = bench("remote.py", "--count", "4", "--jobs", "2", "--rounds", "1")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["count"] == 4 and result["raw_client_mb_s"] > 0
    assert result["raw_checked_mb_s"] > 0 and len(result["ratio_per_round_raw_checked"]) == 1
    assert set(result["server_cpu_ms_per_original"]) == set(result["cpu_ms_per_original"])
    for path in ("imgbuild_record", "imgbuild_lock"):  # through the AC record, and by the lock's digest
        assert result[f"{path}_mb_s"] > 0 and result[f"ratio_{path}"] > 0
        assert len(result[f"ratio_per_round_{path}"]) == 1 and result["cpu_ms_per_original"][path] > 0
