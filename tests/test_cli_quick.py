"""A `build` that the no-op snapshot can answer, and `check` in its plain forms whatever it
finds, run before click is imported (`imgbuild.cli.quick`), and say byte for byte what click's
path says; every other form, and a build with work to do, goes to click."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imgbuild.cli import quick
from imgbuild.plan import snapshot
from helpers import run

CLICK_MAIN = "import sys; from imgbuild.cli.app import main; sys.exit(main(sys.argv[1:]))"
QUICK_MAIN = ("import sys; from imgbuild.cli import main; code = main(sys.argv[1:]); "
              "sys.stderr.write('|click loaded' if 'click' in sys.modules else '|no click'); sys.exit(code)")


def _both(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERM")}

    def one(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                              env=env, stdin=subprocess.DEVNULL, timeout=120)

    return one(QUICK_MAIN), one(CLICK_MAIN)


@pytest.fixture
def snapped(site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(snapshot, "_RACY_SECONDS", -1.0)  # written just now: vouch anyway
    monkeypatch.chdir(site)
    assert run(capsys, "build").code == 0
    assert run(capsys, "build").code == 0  # a no-op: writes the build snapshot
    assert run(capsys, "check", "--allow-drafts").code == 0
    return site


def test_noop_forms_are_answered_without_click_and_print_what_click_prints(snapped: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    forms = [(["build"], snapped), (["build", "-q"], snapped), (["check", "--allow-drafts"], snapped),
             (["check", "-q", "--quiet", "--allow-drafts"], snapped),
             (["build", "-C", str(snapped)], elsewhere),
             (["check", f"--directory={snapped}", "--allow-drafts"], elsewhere),
             (["build", "-f", str(snapped / "imgbuild.yaml"), "--quiet"], elsewhere)]
    for args, cwd in forms:
        fast, slow = _both(args, cwd)
        assert fast.stderr.endswith("|no click"), (args, fast.stderr)
        assert (fast.returncode, fast.stdout, fast.stderr[: -len("|no click")]) == \
            (slow.returncode, slow.stdout, slow.stderr) == (0, slow.stdout, slow.stderr), args
    assert "nothing to do" in _both(["build"], snapped)[1].stderr + _both(["build"], snapped)[1].stdout


def test_what_the_snapshot_cannot_answer_goes_to_click_for_build_and_runs_here_for_check(
        snapped: Path, tmp_path: Path) -> None:
    def same(args: list[str], cwd: Path, code: int, loaded: str) -> subprocess.CompletedProcess[str]:
        fast, slow = _both(args, cwd)
        assert fast.stderr.endswith(loaded), (args, fast.stderr)
        assert (fast.returncode, fast.stdout, fast.stderr[: -len(loaded)]) == \
            (code, slow.stdout, slow.stderr), (args, fast, slow)
        return fast

    # drafts refused: the snapshot was made with --allow-drafts, so the full check lists them
    fast = same(["check"], snapped, 1, "|no click")
    assert "draft" in fast.stdout + fast.stderr
    # a fresh clone: no local state at all, the full check runs here
    shutil.rmtree(snapped / ".imgbuild")
    same(["check", "-q", "--allow-drafts"], snapped, 0, "|no click")
    # an edited spec: the snapshot no longer vouches; the full build runs through click
    spec = next((snapped / "specs").glob("*.yaml"))
    spec.write_text(spec.read_text() + "\n# touched\n")
    fast, _ = _both(["build", "-q"], snapped)
    assert fast.stderr.endswith("|click loaded") and fast.returncode == 0
    # a broken spec, and no project at all: reported as click's path reports them
    spec.write_text(spec.read_text() + "\nimages: [\n")
    fast = same(["check"], snapped, 2, "|no click")
    assert spec.name in fast.stderr
    same(["check", "--allow-drafts"], tmp_path, 2, "|no click")
    assert _both(["build"], tmp_path)[0].stderr.endswith("|click loaded")


@pytest.mark.parametrize("args", [
    ["build", "-v"], ["build", "--json"], ["build", "hero"], ["build", "-C"], ["build", "-C", "-q"],
    ["check", "--allow-drafts=1"], ["build", "--allow-drafts"], ["build", "-k"], ["plan"], [],
    ["build", "--directory="], ["check", "-qv"],
])
def test_other_forms_are_left_to_click(args: list[str]) -> None:
    assert quick._parse(args) is None


def test_the_forms_handled_are_read_as_click_reads_them() -> None:
    assert quick._parse(["check", "-q", "-C", "d", "--allow-drafts", "-q"]) == ("check", 2, {"directory": "d"}, True)
    assert quick._parse(["build", "--file=x.yaml", "-C", "a", "--directory", "b"]) == \
        ("build", 0, {"file": "x.yaml", "directory": "b"}, False)  # the last one wins, as in click


def test_a_reader_gone_before_the_result_ends_check_quietly_on_both_paths(snapped: Path) -> None:
    """`imgbuild check | head -1`: the reader may be gone when the rows are written. The pipe's
    read end is closed before the command starts, so every write fails, whatever the timing.
    click's path exits 1 then (click's own handling of EPIPE); the quick path does the same."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERM")}
    outcomes = []
    for code in (QUICK_MAIN, CLICK_MAIN):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            proc = subprocess.run([sys.executable, "-c", code, "check"], cwd=snapped, stdout=write_end,
                                  stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL,
                                  timeout=120)
        finally:
            os.close(write_end)
        outcomes.append((proc.returncode, proc.stderr))
    assert outcomes == [(1, "|no click"), (1, "")], outcomes
    # a build streaming --json: the first line already fails; the same ending, and a lock
    shutil.rmtree(snapped / "assets" / "generated")  # work to do: the outputs come back from the cache
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-c", CLICK_MAIN, "build", "--json"], cwd=snapped,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "Exception" not in proc.stderr, proc
    assert (snapped / "imgbuild.lock").is_file()
