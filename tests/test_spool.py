"""store/spool.py: a sequence whose items past the first `keep` wait on disk (issue 17: a first
build's memory does not grow with its number of targets)."""
from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from imgbuild.store import parked
from imgbuild.store.spool import Spool


def spool(folder: Path | None, keep: int = 0) -> Spool[list[object]]:
    return Spool(folder, lambda item: json.dumps(item).encode(), json.loads, keep)


ITEMS = [[i, f"target-{i}", "ü" * (i % 5), {"n": i}] for i in range(300)]


@pytest.mark.parametrize("keep", [0, 1, 7, 300, 1000])
def test_items_come_back_in_order_as_often_as_asked(tmp_path: Path, keep: int) -> None:
    s = spool(tmp_path, keep)
    s.extend(ITEMS)
    assert len(s) == 300 and s
    assert s.spilled == max(300 - keep, 0)
    assert list(s) == ITEMS
    assert list(s) == ITEMS  # a second pass reads them again
    assert [s[i] for i in (0, 6, 7, 299)] == [ITEMS[i] for i in (0, 6, 7, 299)]


def test_popleft_takes_each_item_once_and_iteration_sees_the_rest(tmp_path: Path) -> None:
    s = spool(tmp_path, 3)
    s.extend(ITEMS[:10])
    taken = [s.popleft() for _ in range(5)]  # two from memory, then three from disk... and more
    assert taken == ITEMS[:5]
    assert len(s) == 5 and list(s) == ITEMS[5:10]
    with pytest.raises(IndexError):
        s[2]  # taken: gone
    while s:
        taken.append(s.popleft())
    assert taken == ITEMS[:10] and len(s) == 0 and list(s) == []
    with pytest.raises(IndexError):
        s.popleft()


def test_an_item_replaced_reads_back_replaced(tmp_path: Path) -> None:
    s = spool(tmp_path, 2)
    s.extend(ITEMS[:6])
    s[1] = ["held"]
    s[4] = ["spilled", "and longer than before"]
    assert list(s) == [ITEMS[0], ["held"], ITEMS[2], ITEMS[3], ["spilled", "and longer than before"], ITEMS[5]]
    with pytest.raises(IndexError):
        s[6] = ["past the end"]


def test_without_a_usable_folder_items_stay_in_memory(tmp_path: Path) -> None:
    for folder in (None, tmp_path / "missing"):
        s = spool(folder, 0)
        s.extend(ITEMS)
        assert s.spilled == 0 and list(s) == ITEMS


def test_a_file_that_fails_midway_brings_everything_back_in_order(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk after some items: nothing is lost or reordered; the rest stays in memory."""
    s = spool(tmp_path, 2)
    s.extend(ITEMS[:20])
    assert s.popleft() == ITEMS[0] and s.popleft() == ITEMS[1] and s.popleft() == ITEMS[2]
    monkeypatch.setattr(parked.Spill, "append", lambda self, data: None)
    s.extend(ITEMS[20:30])
    assert s.spilled == 0 and len(s) == 27
    assert list(s) == ITEMS[3:30]
    assert [s.popleft() for _ in range(27)] == ITEMS[3:30]


def test_memory_per_spilled_item_is_one_integer(tmp_path: Path) -> None:
    s = spool(tmp_path, 0)
    n = 20_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            s.append([i, f"a name of some length {i}", "a prompt " * 10])
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 12 * n, kept  # 8 bytes per item in an array, and its growth
    assert s.spilled == n and s[n - 1][0] == n - 1


def test_steps_read_back_equal_and_share_only_their_common_reasons(tmp_path: Path) -> None:
    """A build's steps to run, spooled (plan.states.Work): every field comes back, common
    reasons are one object again, and a reason of each step's own (a diff) is not collected."""
    from imgbuild.plan.states import GENERATE, NEW, NOTHING, PENDING, UP_TO_DATE, Source, Step, Work
    from imgbuild.spec.types import Input, Request, Target, Variant

    def target(i: int) -> Target:
        request = Request("qwen-image-plus", f"prompt {i} ü", "", "1328*1328", 1, i, False, False,
                          inputs=(f"logo.png@sha256:{i:064x}",))
        return Target(f"t-{i}", request, (f"t-{i}.png",), "specs/a.yaml", 3 + i, True,
                      (Variant(f"t-{i}.png", f"t-{i}-64.webp", "webp", 64, 64, 80, None),), "alt", (),
                      1, (Input("file", "logo.png"),))

    work = Work(tmp_path, 0)
    steps = [Step(target(i), NEW, GENERATE, f"{i:064x}", "placeholder",
                  ("not built yet",) if i % 2 else (f"prompt: a -> {i}",), True,
                  {f"t-{i}.png": "missing"} if i == 3 else {}, {}, 0,
                  (Source("file", "logo.png", f"{i:064x}"),)) for i in range(200)]
    for step in steps:
        work.append(step)
    work.append(Step(target(999), UP_TO_DATE, NOTHING, "k", "placeholder"))
    work.append(Step(target(998), PENDING, NOTHING, "k", "placeholder"))
    assert work.todo.spilled == 200 and len(work.fresh) == 1 and len(work.waiting) == 1
    back = list(work.todo)
    assert [(s.target, s.state, s.action, s.key, s.provider, tuple(s.reasons), s.draft, dict(s.damage),
             dict(s.locked), s.candidate, tuple(s.sources)) for s in back] == \
           [(s.target, s.state, s.action, s.key, s.provider, tuple(s.reasons), s.draft, dict(s.damage),
             dict(s.locked), s.candidate, tuple(s.sources)) for s in steps]
    common = {id(s.reasons) for s in back if s.reasons == ("not built yet",)}
    assert len(common) == 1
    again = [work.todo.popleft() for _ in range(200)]  # a second reader of the same spool
    assert [s.reasons for s in again] == [s.reasons for s in back] and not work.todo
    assert all(again[i].reasons is back[i].reasons for i in range(1, 200, 2))  # shared
    # 100 reasons of their own: past the first few, each read makes its own (none is collected)
    assert all(again[i].reasons is not back[i].reasons for i in range(150, 200, 2))
