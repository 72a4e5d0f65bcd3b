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
from imgbuild.spec.types import Request

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
