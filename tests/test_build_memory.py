"""A build lets each target's step go once the target is done (issue 17: first-build memory).

The plan makes one step per target (its request, key and reasons); the executor runs them, and
the summary needs only a row per output and a few sums. Holding every step, and an outcome for
each, to the end of the build cost ~330 bytes per target at its peak."""
from __future__ import annotations

import gc
from pathlib import Path

import pytest
from helpers import run

import imgbuild.report
from imgbuild.plan.states import Step

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
