"""Two imgbuild processes at once (issue 7): the project lock serialises builds of one project
(`.imgbuild/build.lock`), `--no-wait` refuses instead of queueing, and the shared diskcache of
paid originals takes writes from two processes at the same time without damage."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import (
    KEY,
    assert_lock_matches_files,
    assert_outputs_decode,
    generated_project,
    posts,
    subprocess_env,
    temp_files,
    wait_for,
)
from helpers import run

from imgbuild.store.originals import Cache
from imgbuild.emulator import Emulator, EmulatorConfig

COUNT = 9


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    config = EmulatorConfig(task_duration=0.8, sync_latency=0.8, documented_concurrency=False,
                            documented_rate_limits=False)  # unlimited: two builds at once
    with Emulator(config, api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        yield server


def _build(root: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "imgbuild", "build", "--provider", "dashscope",
                             "-j", "16", "-C", str(root), *extra],
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _lock_pid(root: Path) -> str:
    try:
        return (root / ".imgbuild" / "build.lock").read_text().strip()
    except OSError:
        return ""


def test_two_builds_at_once_are_serialised_and_pay_once(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "p"
    outputs = generated_project(root, COUNT)
    first = _build(root)
    try:
        # The first build holds the lock and has started paying before the others start.
        wait_for(lambda: _lock_pid(root) == str(first.pid) and posts(emu), 20, "the first build")
        refused = subprocess.run([sys.executable, "-m", "imgbuild", "build", "--provider",
                                  "dashscope", "--no-wait", "-C", str(root)], env=subprocess_env(),
                                 capture_output=True, timeout=30, check=False)
        clean_refused = subprocess.run([sys.executable, "-m", "imgbuild", "clean", "--yes",
                                        "--no-wait", "-C", str(root)], env=subprocess_env(),
                                       capture_output=True, timeout=30, check=False)
        second = _build(root)
        out1, err1 = first.communicate(timeout=60)
        out2, err2 = second.communicate(timeout=60)
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert first.returncode == 0, (out1, err1)
    assert second.returncode == 0, (out2, err2)
    assert refused.returncode == 1, refused
    assert (f"another imgbuild build is running in this project (pid {first.pid})"
            .encode() in refused.stderr), refused.stderr
    assert clean_refused.returncode == 1 and b"another imgbuild build is running" in clean_refused.stderr
    # The second one waited, said for whom, then found everything done by the first.
    assert f"waiting for another imgbuild build in this project (pid {first.pid})".encode() in err2
    assert b"nothing to do" in out2, (out2, err2)

    assert emu.billed == COUNT and len(posts(emu)) == COUNT  # once per image, no retries
    lock = assert_lock_matches_files(root, "out")
    assert sorted(lock) == sorted(outputs)
    assert_outputs_decode(root, "out", outputs)
    assert temp_files(root) == []
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0  # emulator images are drafts
    # plan and check never take the lock: they work while a build holds it.
    from imgbuild.store import mutex as projectlock

    with projectlock.hold(root / ".imgbuild"):
        assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0  # emulator images are drafts
        assert run(capsys, "plan", "-C", str(root), "--provider", "dashscope").code == 0
        r = run(capsys, "build", "-C", str(root), "--no-wait", "--provider", "dashscope")
        assert r.code == 1 and "another imgbuild build is running in this project" in r.err, r


_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from imgbuild.store.originals import Cache

    directory, who = Path(sys.argv[1]), sys.argv[2]
    with Cache(directory) as cache:
        for i in range(200):
            shared = bytes([i % 7]) * 20_000          # blobs both writers store
            own = (who + str(i)).encode() * 5_000     # blobs only this one stores
            cache.put(f"{who}-{i}", [shared, own], {"provider": who, "i": i})
    print("done")
""")


def test_two_processes_share_one_cache_without_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(directory), who],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for who in "ab"]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0 and out.strip() == b"done", err
    with Cache(directory) as cache:
        assert cache.verify() == {}
        assert len(cache.keys()) == 400
        assert len(cache.blobs()) == 7 + 400
        for who in "ab":
            for i in range(200):
                found = cache.get(f"{who}-{i}")
                assert found is not None
                images, record = found
                assert images == [bytes([i % 7]) * 20_000, (who + str(i)).encode() * 5_000]
                assert record["provider"] == who
