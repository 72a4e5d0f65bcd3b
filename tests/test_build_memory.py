"""A build lets each target's step go once the target is done (issue 17: first-build memory).

The plan makes one step per target (its generation key and reasons); the executor runs them, and
the summary needs only a row per output and a few sums. Holding every step, and an outcome for
each, to the end of the build cost ~330 bytes per target at its peak."""
from __future__ import annotations

import gc
from pathlib import Path

import pytest
from helpers import run

import imgbuild.report
from imgbuild.plan.states import Step
from imgbuild.spec.types import Request, Target
from imgbuild.verbs import build_run
from imgbuild.verbs.results import Row

TARGETS = 40

PROJECT = f"""\
version: 1
output_dir: out
images:
  - name: "tile-{{{{ i }}}}"
    matrix:
      i: {list(range(TARGETS))}
    size: "1:1"
    output: "tile-{{{{ i }}}}.png"
    prompt: "Tile number {{{{ i }}}}."
"""


def live_steps() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Step)


def live_rows() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Row)


def live_targets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is Target)


def live_attached_images() -> int:
    """Input images attached to requests (as data URIs) that are still alive."""
    gc.collect()
    return sum(len(o.images) for o in gc.get_objects() if type(o) is Request)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "imgbuild.yaml").write_text(PROJECT, encoding="utf-8")
    return tmp_path


def test_finished_steps_are_let_go_during_the_build(project: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[int, int] = {}  # images done -> steps alive just then
    progress = imgbuild.report.Reporter.progress

    def counting(self: object, done: int, total: int, *args: object) -> None:
        if done in (1, total):
            seen[done] = live_steps()
        progress(self, done, total, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(imgbuild.report.Reporter, "progress", counting)
    monkeypatch.setattr(build_run, "SPOOL_MARGIN", 1000)  # steps in memory: counted here
    r = run(capsys, "build", "-C", str(project), "-j", "2", "--json")
    assert r.code == 0, r
    # When the first target is done, the others still wait to run; when the last is, only
    # the one being reported may still be alive (it is this call's argument).
    assert seen[1] >= TARGETS - 2, seen
    assert seen[TARGETS] <= 1, seen
    # ...and the summary still has every row, as before
    doc = r.json
    assert doc["built"] == TARGETS and doc["provider_calls"] == TARGETS
    assert sorted(t["output"] for t in doc["targets"]) == sorted(f"tile-{i}.png" for i in range(TARGETS))
    assert {t["status"] for t in doc["targets"]} == {"built"}
    assert {t["reason"] for t in doc["targets"]} == {"not built yet"}


EDITS = 12


def test_an_edit_lets_its_input_images_go_once_it_is_done(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An edit's request carries its input images as data URIs while it runs: they were held,
    through the finished steps, until the build ended (a copy of every input of every edit)."""
    from PIL import Image

    Image.new("RGB", (640, 480), (200, 20, 20)).save(tmp_path / "logo.png")
    (tmp_path / "imgbuild.yaml").write_text(f"""\
version: 1
output_dir: out
defaults: {{model: qwen-image-edit, size: "512*512"}}
images:
  - name: "edit-{{{{ i }}}}"
    matrix:
      i: {list(range(EDITS))}
    prompt: "Version {{{{ i }}}} of this logo"
    inputs: [logo.png]
""", encoding="utf-8")
    seen: dict[int, int] = {}
    progress = imgbuild.report.Reporter.progress

    def counting(self: object, done: int, total: int, *args: object) -> None:
        if done == total:
            seen[done] = live_attached_images()
        progress(self, done, total, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(imgbuild.report.Reporter, "progress", counting)
    r = run(capsys, "build", "-C", str(tmp_path), "-j", "2", "--json")
    assert r.code == 0, r
    assert r.json["built"] == EDITS
    assert seen[EDITS] <= 1, seen  # the last edit's own input, still an argument of this call


KEEP = 5


def test_a_first_build_holds_no_more_targets_than_its_margin(project: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SPOOL_MARGIN (more than the lock has entries), targets and the steps that make them
    wait on disk from expansion until they run: a first build holds a few, not one per target."""
    seen: dict[str, int] = {}
    progress = imgbuild.report.Reporter.progress
    make_plan = build_run.make_plan

    def planning(*args: object, **kwargs: object) -> object:
        seen["before plan"] = live_targets()
        plan = make_plan(*args, **kwargs)  # type: ignore[arg-type]
        seen["after plan"] = live_targets()
        return plan

    def counting(self: object, done: int, total: int, *args: object) -> None:
        if done in (1, total):
            seen[f"done {done}"] = live_targets()
            seen[f"steps {done}"] = live_steps()
            seen[f"rows {done}"] = live_rows()
        progress(self, done, total, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(imgbuild.report.Reporter, "progress", counting)
    monkeypatch.setattr(build_run, "make_plan", planning)
    monkeypatch.setattr(build_run, "SPOOL_MARGIN", KEEP)
    r = run(capsys, "build", "-C", str(project), "-j", "2", "--json")
    assert r.code == 0, r
    # the first KEEP targets (and steps) in memory, and the one or two being worked on
    assert seen["before plan"] <= KEEP + 1, seen
    assert seen["after plan"] <= 2 * KEEP + 2, seen  # its KEEP targets and the KEEP steps' own
    assert seen["done 1"] <= 2 * KEEP + 4 and seen["steps 1"] <= KEEP + 3, seen
    assert seen[f"done {TARGETS}"] <= KEEP + 2, seen
    assert seen[f"rows {TARGETS}"] <= KEEP + 1, seen  # the summary's rows too, past the first KEEP
    doc = r.json  # ...and they are all in the summary
    assert doc["built"] == TARGETS
    assert sorted(t["output"] for t in doc["targets"]) == sorted(f"tile-{i}.png" for i in range(TARGETS))
    assert {(t["status"], t["reason"]) for t in doc["targets"]} == {("built", "not built yet")}


def test_a_spooled_build_writes_what_a_build_in_memory_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The same project built twice, every target and step spooled or none: the same lock, byte
    for byte, the same images and manifest, the same summary."""
    spec = PROJECT + """  - name: wide
    size: "16:9"
    prompt: "A wide one, with ünïcode and a \\"quote\\""
    negative_prompt: "nothing blurry"
    seed: 7
    alt: "a wide picture"
    formats: [webp, jpeg]
    widths: [64, 128]
"""
    results = {}
    for margin in (0, 1000):
        folder = tmp_path / f"m{margin}"
        folder.mkdir()
        (folder / "imgbuild.yaml").write_text(spec, encoding="utf-8")
        monkeypatch.setattr(build_run, "SPOOL_MARGIN", margin)
        monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / f"cache-{margin}"))  # both generate
        r = run(capsys, "build", "-C", str(folder), "-j", "2", "--json")
        assert r.code == 0, r
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                 if p.is_file() and ".imgbuild" not in p.parts}
        doc = r.json
        doc.pop("elapsed_s", None)
        results[margin] = files, sorted(map(str, doc["targets"])), doc["built"], doc["provider_calls"]
    assert {"imgbuild.lock", "out/manifest.json", "out/wide.png"} <= results[0][0].keys(), sorted(results[0][0])
    assert len([f for f in results[0][0] if f.endswith((".webp", ".jpg"))]) == 4
    assert results[0] == results[1000]


def test_a_build_whose_lock_is_full_keeps_its_targets_in_memory(project: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The margin counts beyond the lock's entries: once the 40 targets are built, a build that
    expands them again (its project file changed) keeps all 40 in memory, and reads none back
    from disk."""
    monkeypatch.setattr(build_run, "SPOOL_MARGIN", KEEP)
    assert run(capsys, "build", "-C", str(project), "-j", "2").code == 0
    seen: dict[str, int] = {}
    make_plan = build_run.make_plan

    def planning(targets: object, *args: object, **kwargs: object) -> object:
        seen["spilled"] = targets.spilled  # type: ignore[attr-defined]
        seen["alive"] = live_targets()
        return make_plan(targets, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(build_run, "make_plan", planning)
    with (project / "imgbuild.yaml").open("a") as f:
        f.write("# a comment: the plan cache no longer matches, the specs are expanded again\n")
    r = run(capsys, "build", "-C", str(project), "-j", "2", "--json")
    assert r.code == 0 and r.json["up_to_date"] == TARGETS, r
    assert seen == {"spilled": 0, "alive": TARGETS}, seen
