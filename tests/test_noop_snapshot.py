"""The no-op snapshot answers a build or check that has nothing to do without loading targets;
it must notice every change the full path would: a spec file, a template partial, a matrix data
file, an output's bytes (even with its size and mtime put back) and the provider identity."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import imgbuild.verbs.build
import imgbuild.verbs.build_run
import imgbuild.verbs.check
import imgbuild.verbs.common
from imgbuild.plan import snapshot
from imgbuild.report import Reporter
from imgbuild.verbs.build import BuildOptions
from imgbuild.verbs.common import Where
from helpers import run


@pytest.fixture
def snapped(site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    # the files were written just now; the racy-stamp guard would (rightly) refuse to vouch
    monkeypatch.setattr(snapshot, "_RACY_SECONDS", -1.0)
    monkeypatch.chdir(site)
    assert run(capsys, "build").code == 0
    assert run(capsys, "build").code == 0  # a no-op: writes the build snapshot
    assert run(capsys, "check", "--allow-drafts").code == 0  # and the check one
    assert (site / ".imgbuild" / snapshot.SNAPSHOT_FILE).exists()
    return site


def forbid_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a: object) -> None:
        raise AssertionError("loaded the targets although the snapshot could answer")

    monkeypatch.setattr(imgbuild.verbs.build_run, "load", fail)
    monkeypatch.setattr(imgbuild.verbs.check, "load", fail)


def test_unchanged_project_answers_from_the_snapshot(snapped: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    full = run(capsys, "check", "--allow-drafts", "--json").json  # --json lists rows: full path
    forbid_loading(monkeypatch)
    r = run(capsys, "build")
    assert r.code == 0 and "nothing to do (11 images" in r.err + r.out
    r = run(capsys, "check", "--allow-drafts")
    assert r.code == 0 and f"all {len(full['targets'])} files are up to date" in r.err + r.out
    # made with --allow-drafts, the snapshot cannot pass a check that refuses drafts
    monkeypatch.setattr(imgbuild.verbs.check, "load", imgbuild.verbs.common.load)
    assert run(capsys, "check").code == 1


def test_a_noop_loads_neither_the_planner_nor_the_lock_reader(snapped: Path) -> None:
    """What a no-op answered from the snapshot may skip importing, it does: the planner, the
    lock reader, the stores, the providers' clients (the no-op's time is mostly imports)."""
    import subprocess
    import sys

    heavy = ["imgbuild.plan.states", "imgbuild.store.lockfile", "imgbuild.verbs.build_run",
             "imgbuild.store.originals", "imgbuild.spec.expand", "imgbuild.plan.caches", "yaml", "jinja2"]
    for argv in (["build", "-q"], ["check", "-q", "--allow-drafts"]):
        code = (f"import sys; from imgbuild.cli import main; rc = main({argv!r}); "
                f"print(rc, [m for m in {heavy!r} if m in sys.modules])")
        proc = subprocess.run([sys.executable, "-c", code], cwd=snapped, capture_output=True, text=True,
                              env={**os.environ}, timeout=60)
        assert proc.stdout.strip().splitlines()[-1] == "0 []", (argv, proc.stdout, proc.stderr)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _flip_byte_keep_stamp(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


EDITS: dict[str, Callable[[Path], None]] = {
    "spec file": lambda p: _edit(p / "specs" / "poster.yaml", "moody", "quiet"),
    "template partial": lambda p: (p / "templates" / "style.j2").write_text(
        (p / "templates" / "style.j2").read_text() + " muted colours"),
    "matrix data file": lambda p: _edit(p / "data" / "products.yaml", "jasmine", "lavender"),
    "output bytes, same size and mtime": lambda p: _flip_byte_keep_stamp(p / "assets/generated/hero.png"),
}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_the_snapshot_notices(snapped: Path, capsys: pytest.CaptureFixture[str], what: str) -> None:
    EDITS[what](snapped)
    assert run(capsys, "check", "--allow-drafts").code == 1
    assert snapshot.load(snapped / "imgbuild.yaml", snapped / ".imgbuild", "build") is None


def test_the_snapshot_notices_the_provider_identity(snapped: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test-not-used")
    sink = Reporter()
    same = imgbuild.verbs.build._unchanged(Where(), sink, BuildOptions(provider="placeholder"))
    assert same is not None and same.nothing_to_do
    other = imgbuild.verbs.build._unchanged(Where(), sink, BuildOptions(provider="dashscope"))
    assert other is None  # the full path runs: drafts are replaced by a real provider
