"""The no-op snapshot's invariants on a 10,000-target project (issue 17): one spec file, one
template partial, one matrix data file, one output's bytes (size and mtime put back with
`os.utime`) and the provider identity, each changed alone, are each noticed by the fast path,
and undoing the change brings the fast path back. tests/test_noop_snapshot.py shows the same on
the example site; this is the scale the fast path exists for.

Slow (one placeholder build of 10,000 images for the module, 1-3 minutes on two cores): runs
with IMGBUILD_SLOW_TESTS=1 only."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import imgbuild.verbs.build
import imgbuild.verbs.build_run
import imgbuild.verbs.check
from imgbuild.cli import main
from imgbuild.plan import snapshot
from imgbuild.report import Reporter
from imgbuild.verbs.build import BuildOptions
from imgbuild.verbs.common import Where
from helpers import run

pytestmark = pytest.mark.skipif(not os.environ.get("IMGBUILD_SLOW_TESTS"),
                                reason="slow (a 10,000-image build): set IMGBUILD_SLOW_TESTS=1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from gen_project import generate  # noqa: E402

TARGETS = 10_000
B_LIST = "[" + ", ".join(f"b{i}" for i in range(10)) + "]"


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """bench/gen_project.py's 10k project, with one matrix read from a data file, built once with
    placeholder drafts; a no-op build and check have written the snapshot."""
    root = tmp_path_factory.mktemp("big") / "project"
    generate(root, TARGETS)
    spec = root / "specs" / "f000.yaml"
    spec.write_text(spec.read_text().replace(f"b: {B_LIST}", "b: ../data/b.yaml"))
    (root / "data").mkdir()
    (root / "data" / "b.yaml").write_text(B_LIST + "\n")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("DASHSCOPE_API_KEY", "IMGBUILD_PROVIDER", "DASHSCOPE_HTTP_BASE_URL", "IMGBUILD_REMOTE"):
            mp.delenv(name, raising=False)
        mp.setenv("IMGBUILD_CACHE_DIR", str(tmp_path_factory.mktemp("big-cache")))
        subprocess.run([sys.executable, "-m", "imgbuild", "build", "-q", "-j", "4", "-C", str(root)],
                       check=True, stdout=subprocess.DEVNULL)
        # everything was written just now; the racy-stamp guard would (rightly) refuse to vouch
        mp.setattr(snapshot, "_RACY_SECONDS", -1.0)
        assert main(["build", "-q", "-C", str(root)]) == 0
        assert main(["check", "-q", "--allow-drafts", "-C", str(root)]) == 0
        yield root


def vouches(root: Path, kind: str) -> bool:
    return snapshot.load(root / "imgbuild.yaml", root / ".imgbuild", kind) is not None


def forbid_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a: object) -> None:
        raise AssertionError("loaded the targets although the snapshot could answer")

    monkeypatch.setattr(imgbuild.verbs.build_run, "load", fail)
    monkeypatch.setattr(imgbuild.verbs.check, "load", fail)


def test_the_unchanged_10k_project_answers_from_the_snapshot(
        big: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_loading(monkeypatch)
    r = run(capsys, "build", "-C", str(big))
    assert r.code == 0 and f"nothing to do ({TARGETS} images" in r.err + r.out, r
    r = run(capsys, "check", "--allow-drafts", "-C", str(big))
    assert r.code == 0 and "files are up to date" in r.err + r.out, r


def _replace(path: Path, old: str, new: str) -> Callable[[], None]:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return lambda: path.write_text(text)


def _append(path: Path, extra: str) -> Callable[[], None]:
    text = path.read_text()
    path.write_text(text + extra)
    return lambda: path.write_text(text)


def _flip_byte_keep_stamp(path: Path) -> Callable[[], None]:
    st = path.stat()
    data = path.read_bytes()
    changed = bytearray(data)
    changed[-30] ^= 0xFF
    path.write_bytes(bytes(changed))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns

    def undo() -> None:
        path.write_bytes(data)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return undo


EDITS: dict[str, Callable[[Path], Callable[[], None]]] = {
    "spec file": lambda p: _replace(p / "specs" / "f042.yaml", "explicit image 3 of file 42",
                                    "explicit image 3 of file 42, at dusk"),
    "template partial": lambda p: _append(p / "templates" / "style.j2", "muted colours\n"),
    "matrix data file": lambda p: _replace(p / "data" / "b.yaml", "b7", "b7x"),
    "output bytes, same size and mtime": lambda p: _flip_byte_keep_stamp(p / "out" / "m77" / "a4" / "b2.png"),
}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_the_snapshot_notices_on_10k(big: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    assert vouches(big, "build") and vouches(big, "check")  # the fast path would answer
    undo = EDITS[what](big)
    try:
        assert not vouches(big, "build") and not vouches(big, "check")
        r = run(capsys, "check", "--allow-drafts", "-C", str(big))
        assert r.code == 1, r  # and the full path finds the change stale
    finally:
        undo()
    # undone: the full path finds everything fresh again and the fast path is back
    r = run(capsys, "check", "--allow-drafts", "-C", str(big))
    assert r.code == 0, r
    assert run(capsys, "build", "-C", str(big)).code == 0
    assert vouches(big, "build") and vouches(big, "check")


def test_the_snapshot_notices_the_provider_identity_on_10k(big: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test-not-used")
    sink = Reporter()
    same = imgbuild.verbs.build._unchanged(Where(directory=str(big)), sink, BuildOptions(provider="placeholder"))
    assert same is not None and same.nothing_to_do and same.unlisted == TARGETS
    other = imgbuild.verbs.build._unchanged(Where(directory=str(big)), sink, BuildOptions(provider="dashscope"))
    assert other is None  # the full path runs: drafts are replaced by a real provider
