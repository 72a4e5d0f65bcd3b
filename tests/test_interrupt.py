"""Ctrl-C for real: `python -m imgbuild build --provider dashscope` in a subprocess against the
emulator (in this process), SIGINT while some targets are finished, sync calls are in flight and
async tasks are running on the service.

One SIGINT: nothing new is started, the sync calls in flight (already paid) finish and are
kept, the running async tasks stay in the journal, exit 130; the rerun polls those same tasks
and nothing is billed twice. Two SIGINTs: out at once, still nothing half-written.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import wait_for
from helpers import run

from imgbuild.emulator import Emulator, EmulatorConfig

KEY = "sk-imgbuild-interrupt-test"
SYNC_TARGETS = 8
ASYNC_TARGETS = 3  # wan2.2-t2i-flash runs 2 tasks at once: the third waits for a slot
PROJECT = f"""\
version: 1
output_dir: out
limits:
  qwen-image-2.0: {{rps: 2}}  # 2 sync calls a second, 1.5 s each: always some in flight
images:
  - name: "task-{{{{ i }}}}"
    matrix: {{i: {list(range(ASYNC_TARGETS))}}}
    model: wan2.2-t2i-flash
    size: "512*512"
    prompt: A paper lantern number {{{{ i }}}} over a night market.
  - name: "sync-{{{{ i }}}}"
    matrix: {{i: {list(range(SYNC_TARGETS))}}}
    model: qwen-image-2.0
    size: "512*512"
    prompt: A red bicycle number {{{{ i }}}} leaning against a blue wall.
"""


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    # unlimited rate: the interrupt, not the documented limits, decides what is in flight
    config = EmulatorConfig(task_duration=60.0, sync_latency=1.5, documented_rate_limits=False)
    with Emulator(config, api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        yield server


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "imgbuild.yaml").write_text(PROJECT, encoding="utf-8")
    return tmp_path


def start_build(root: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "IMGBUILD_PROVIDER"}
    return subprocess.Popen([sys.executable, "-m", "imgbuild", "build", "--provider", "dashscope",
                             "-j", "8", *extra, "-C", str(root)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes, float]:
    start = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"build did not exit within {timeout}s of SIGINT:\n{err.decode()}") from None
    return out, err, time.monotonic() - start


def journal(root: Path) -> dict[str, str]:
    """key -> task id of the committed journal entries."""
    directory = root / ".imgbuild" / "journal"
    entries = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))
               if not p.name.startswith(".")] if directory.is_dir() else []
    return {e["key"]: e["task_id"] for e in entries}


def outputs_on_disk(root: Path) -> set[str]:
    out = root / "out"
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} if out.is_dir() else set()


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith((".imgbuild-tmp-", ".tmp-"))]


def checked_lock(root: Path) -> dict[str, dict[str, Any]]:
    """The lock's outputs, each matching its file's sha256."""
    lock = json.loads((root / "imgbuild.lock").read_text("utf-8"))["outputs"]
    for output, entry in lock.items():
        assert hashlib.sha256((root / "out" / output).read_bytes()).hexdigest() == entry["sha256"], output
    return lock


def task_submissions(emu: Emulator) -> list[dict[str, Any]]:
    return [s for s in emu.stats()["submissions"] if s["task_id"]]


def sync_in_flight(emu: Emulator) -> int:
    return int(emu.stats()["in_flight"].get("qwen-image-2.0", 0))


def test_one_ctrl_c_keeps_finished_images_and_journaled_tasks_and_the_rerun_pays_nothing_twice(
        root: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    proc = start_build(root)
    try:
        # two tasks running on the service (journaled), some sync images paid, more in flight
        wait_for(lambda: len(journal(root)) == 2 and emu.billed >= 2 and sync_in_flight(emu) >= 1,
                 20, "2 journaled tasks, 2 sync images billed and 1 sync call in flight")
    finally:
        proc.send_signal(signal.SIGINT)
    out, err, took = finish(proc, 15)
    assert proc.returncode == 130, err.decode()
    assert took < 8  # in-flight sync calls take 1.5 s; the grace is 5 s
    message = err.decode().strip().splitlines()[-1]
    assert message.startswith("imgbuild: interrupted; kept ") and "2 submitted task(s)" in message, message
    # The progress counter (in images) goes up one image per line, never jumps over the
    # targets Ctrl-C skipped, never claims the total, and ends where the closing line's count is.
    counters = [line.split("]")[0] for line in out.decode().splitlines() if line.startswith("[")]
    total = SYNC_TARGETS + ASYNC_TARGETS
    assert counters == [f"[{i:>2}/{total} images" for i in range(1, len(counters) + 1)], counters
    assert 0 < len(counters) < total and f"kept {len(counters)} finished image(s)" in message, (counters, message)

    lock = checked_lock(root)
    assert set(lock) == outputs_on_disk(root)  # exactly the finished outputs, no stray file
    assert all(o.startswith("sync-") for o in lock)
    # every sync image the service billed, including those in flight at the SIGINT, is kept
    assert emu.billed == len(lock) < SYNC_TARGETS
    assert temp_files(root) == []
    tasks = task_submissions(emu)
    assert len(tasks) == 2  # the third async target was never submitted
    assert set(journal(root).values()) == {s["task_id"] for s in tasks}
    billed_before = emu.billed

    emu.configure(task_duration=0.05, sync_latency=0.0)  # the same tasks now finish quickly
    r = run(capsys, "build", "--provider", "dashscope", "-C", str(root), "--json")
    assert r.code == 0, r
    assert r.json["built"] == SYNC_TARGETS + ASYNC_TARGETS - len(lock)
    after = task_submissions(emu)
    assert after[:2] == tasks and len(after) == 3  # only the never-submitted task is new
    polled = {q["path"].rsplit("/", 1)[1] for q in emu.requests if q["endpoint"] == "tasks.get"}
    assert {s["task_id"] for s in tasks} <= polled
    # each image billed exactly once over both runs
    assert emu.billed == SYNC_TARGETS + ASYNC_TARGETS
    assert emu.billed - billed_before == SYNC_TARGETS + ASYNC_TARGETS - len(lock)
    assert len(checked_lock(root)) == SYNC_TARGETS + ASYNC_TARGETS
    assert journal(root) == {} and temp_files(root) == []


def test_two_ctrl_c_exit_at_once_with_nothing_half_written(root: Path, emu: Emulator) -> None:
    emu.configure(sync_latency=5.0)
    proc = start_build(root)
    try:
        wait_for(lambda: len(journal(root)) >= 1 and sync_in_flight(emu) >= 1, 20,
                 "a journaled task and a sync call in flight")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
    _, err, took = finish(proc, 10)
    assert proc.returncode == 130, err.decode()
    assert took < 3.0, took  # neither the 5 s sync call in flight nor the 5 s grace
    assert b"Traceback" not in err
    assert temp_files(root) == []
    lock = checked_lock(root)  # valid JSON, and whatever it lists is on disk
    assert set(lock) <= outputs_on_disk(root)
    assert len(journal(root)) >= 1  # the running tasks are still known


def test_one_ctrl_c_waits_for_paid_sync_calls_longer_than_the_grace(root: Path, emu: Emulator) -> None:
    """Sync calls of 7 s (the grace is 5 s): cutting them off would pay for them again."""
    emu.configure(sync_latency=7.0)
    proc = start_build(root, "--json")
    try:
        wait_for(lambda: sync_in_flight(emu) >= 1, 20, "a sync call in flight")
    finally:
        proc.send_signal(signal.SIGINT)
    out, err, _ = finish(proc, 30)
    assert proc.returncode == 130, err.decode()
    assert b"waiting for" in err and b"paid request(s) in flight" in err, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])  # --json still ends with its summary
    assert summary["command"] == "build" and summary["interrupted"]["abandoned_paid_requests"] == 0
    lock = checked_lock(root)
    billed_sync = emu.billed_by_model.get("qwen-image-2.0", 0)
    assert billed_sync == len([o for o in lock if o.startswith("sync-")])  # every paid image kept


def test_two_ctrl_c_count_the_paid_requests_they_abandon(root: Path, emu: Emulator) -> None:
    emu.configure(sync_latency=5.0)
    proc = start_build(root, "--json")
    try:
        wait_for(lambda: sync_in_flight(emu) >= 1, 20, "a sync call in flight")
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
    out, err, _ = finish(proc, 10)
    assert proc.returncode == 130, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])
    abandoned = summary["interrupted"]["abandoned_paid_requests"]
    assert abandoned >= 1 and summary["interrupted"]["forced"] is True
    assert f"{abandoned} paid request(s) were abandoned in flight".encode() in err, err.decode()
