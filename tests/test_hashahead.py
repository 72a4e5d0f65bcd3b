"""A fresh clone's `check` hashes the outputs in a forked child while the specs expand (issue 17,
plan/hashahead.py). What it must keep: the verdict is the one in-process hashing gives (an
output edited with its size and mtime put back is still caught), and a row is only used for
the bytes it was made from. Run as subprocesses: the child is forked only from a process with
one thread, and the test process may have more."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from gen_project import generate  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the child is forked on Linux only")


def imgbuild(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgbuild", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A 100-target project built once with placeholder drafts (above hashahead.WORTH_IT)."""
    root = tmp_path_factory.mktemp("ahead") / "project"
    generate(root, 100)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DASHSCOPE_API_KEY", "IMGBUILD_PROVIDER", "DASHSCOPE_HTTP_BASE_URL", "IMGBUILD_REMOTE")}
    env["IMGBUILD_CACHE_DIR"] = str(tmp_path_factory.mktemp("ahead-cache"))
    done = imgbuild("build", "-q", "-C", str(root), env=env)
    assert done.returncode == 0, done.stderr
    yield root, env


def fresh_clone(root: Path, to: Path) -> Path:
    shutil.copytree(root, to, ignore=shutil.ignore_patterns(".imgbuild"))
    return to


def test_a_fresh_clone_check_takes_the_childs_hashes_and_catches_an_edit(
        built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, env = built
    clone = fresh_clone(root, tmp_path / "clone")
    victim = clone / "out" / "m0" / "a3" / "b4.png"
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF  # inside the last chunk's bytes: same size
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = imgbuild("check", "--allow-drafts", "--json", "-C", str(clone), env=env)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    bad = [row for row in doc["targets"] if row["status"] != "up_to_date"]
    assert doc["modified"] == 1 and [(row["output"], row["status"]) for row in bad] == [
        ("m0/a3/b4.png", "modified")], bad
    # every output's digest the stat cache now holds is the file's own
    entries = json.loads((clone / ".imgbuild" / "stat-cache.json").read_text())["entries"]
    outputs = sorted((clone / "out").rglob("*.png"))
    assert len(outputs) == 100 and {str(p) for p in outputs} <= set(entries)
    for path in outputs:
        assert entries[str(path)][4] == hashlib.sha256(path.read_bytes()).hexdigest(), path


def test_an_untouched_fresh_clone_checks_clean(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, env = built
    clone = fresh_clone(root, tmp_path / "clone")
    r = imgbuild("check", "-q", "--allow-drafts", "-C", str(clone), env=env)
    assert r.returncode == 0, r.stderr


CHILD = """
import json, sys
from pathlib import Path
from imgbuild.plan import hashahead
root = Path(sys.argv[1])
ahead = hashahead.start(root / "imgbuild.yaml")
rows = ahead.rows() if ahead else None
print(json.dumps({"rows": rows, "pid_reaped": ahead is not None and ahead.pid == 0}))
"""


def test_the_child_stamps_and_hashes_what_the_lock_names(
        built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, env = built
    clone = fresh_clone(root, tmp_path / "clone")
    r = subprocess.run([sys.executable, "-c", CHILD, str(clone)], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    doc = json.loads(r.stdout)
    locked = json.loads((clone / "imgbuild.lock").read_text())["outputs"]
    assert doc["pid_reaped"] and set(doc["rows"]) == {str(clone / "out" / o) for o in locked}
    for path, (size, mtime, ino, ctime, digest) in doc["rows"].items():
        st = os.stat(path)
        assert [size, mtime, ino, ctime] == [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        assert digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_no_child_where_it_would_not_pay(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """Not a fresh clone (a stat cache exists), or a lock too small to be worth a fork."""
    root, env = built
    clone = fresh_clone(root, tmp_path / "clone")
    (clone / ".imgbuild").mkdir()
    (clone / ".imgbuild" / "stat-cache.json").write_text("{}")
    r = subprocess.run([sys.executable, "-c", CHILD, str(clone)], capture_output=True, text=True, env=env)
    assert json.loads(r.stdout)["rows"] is None, r.stderr
    small = fresh_clone(root, tmp_path / "small")
    (small / "imgbuild.lock").write_text('{"version": 1, "outputs": {}}')
    r = subprocess.run([sys.executable, "-c", CHILD, str(small)], capture_output=True, text=True, env=env)
    assert json.loads(r.stdout)["rows"] is None, r.stderr
