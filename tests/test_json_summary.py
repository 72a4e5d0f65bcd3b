"""The --json summary is written a slice of rows at a time, and is the same text
`json.dumps(result.to_dict(), sort_keys=True, ensure_ascii=False)` makes."""
from __future__ import annotations

import json
import tracemalloc
from types import SimpleNamespace
from typing import Any

import pytest

from imgbuild import report
from imgbuild.errors import Failure
from imgbuild.verbs.results import (
    BuildResult,
    CheckResult,
    DataResult,
    Money,
    PlanResult,
    PullResult,
    RemoteSummary,
    Row,
)


def rows(n: int) -> list[Row]:
    made = [Row(f"t{i}", f"out/{i:05d}.png", "built", "new") for i in range(n)]
    if n:
        # what the split must not be fooled by: the marker's text inside a value, non-ASCII
        made[0] = Row("é-ü", "zz/ß.png", "failed", '"targets": "\x00rows"',
                      failure=Failure("Throttling", "slow down: 限流", where="specs/a.yaml:3"))
    return made


def results(n: int) -> list[Any]:
    plan = SimpleNamespace(steps=[], orphans=["old.png"])
    return [
        BuildResult("placeholder", rows(n), money=Money("CNY", spent=0.5),
                    remote=RemoteSummary("s3://bucket/x"), shard="1/2"),
        PullResult(rows(n)),
        PlanResult("placeholder", plan, [], {"currency": "CNY", "total": 0.0}, False, rows(n)),
        CheckResult(rows(n), unlisted=3),
    ]


@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_the_pieces_are_what_json_dumps_makes(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "_ROWS_AT_ONCE", 2)  # several slices, and a last short one
    for result in results(n):
        whole = json.dumps(result.to_dict(), sort_keys=True, ensure_ascii=False)
        assert "".join(report.json_pieces(result)) == whole, type(result).__name__
        assert len(json.loads(whole)["targets"]) == n


def test_a_result_without_rows_is_one_piece() -> None:
    result = DataResult("reject", {"targets": [{"name": "a"}]})
    assert list(report.json_pieces(result)) == [json.dumps(result.to_dict(), sort_keys=True,
                                                           ensure_ascii=False)]


def test_a_large_summary_is_never_held_whole() -> None:
    """50k rows: encoding them at once holds every row's dict and the whole text; the pieces
    hold a slice's worth (tracemalloc, deterministic: no clock, no RSS)."""
    result = CheckResult(rows(50_000))

    def peak(work: Any) -> int:
        tracemalloc.start()
        try:
            work()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole = peak(lambda: json.dumps(result.to_dict(), sort_keys=True, ensure_ascii=False))
    pieces = peak(lambda: sum(len(p) for p in report.json_pieces(result)))
    assert pieces * 4 < whole, (pieces, whole)
