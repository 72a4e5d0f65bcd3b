"""Progress while a build runs: NDJSON state events with --json (the summary stays the last
line), the live status line on a terminal, plain lines otherwise."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from helpers import run

from imgbuild.report import LiveStatus, Reporter


def test_json_build_streams_one_event_per_state_change_and_ends_with_the_summary(
        site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "-C", str(site), "--json")
    assert r.code == 0, r
    lines = [json.loads(line) for line in r.out.strip().splitlines()]
    events, summary = lines[:-1], lines[-1]
    assert summary["command"] == "build" and summary["built"] == 11
    assert all(e["event"] == "state" and set(e) == {"event", "name", "output", "state", "t"} for e in events)
    by_output: dict[str, list[str]] = {}
    for e in events:
        by_output.setdefault(e["output"], []).append(e["state"])
    built = {row["output"] for row in summary["targets"] if row["status"] == "built"}
    assert set(by_output) == built
    assert all(states == ["queued", "submitting", "done"] for states in by_output.values()), by_output
    times = [e["t"] for e in events]
    assert times == sorted(times) and times[0] >= 0

    # a no-op build, plan and check print only the summary
    for verb in ("build", "plan", "check"):
        r = run(capsys, verb, "-C", str(site), "--json", "--allow-drafts" if verb == "check" else "-q")
        assert len(r.out.strip().splitlines()) == 1 and r.json["command"] == verb


def test_without_a_terminal_each_finished_target_is_one_plain_line(
        site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "-C", str(site))
    assert r.code == 0, r
    assert "\r" not in r.out + r.err and "\x1b" not in r.out + r.err
    assert sum(1 for line in r.out.splitlines() if " built " in line) == 11


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_live_status_counts_states_rate_and_eta_and_redraws_at_most_ten_times_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")  # the whole line fits: this test reads it back
    stream, clock = io.StringIO(), FakeClock()
    status = LiveStatus(stream, [("a", 1), ("b", 2), ("c", 1), ("d", 1)], clock=clock)
    for name in "abcd":
        status.update(name, "queued")
    assert stream.getvalue().count("\r\x1b[K") == 1  # the other three came within 0.1 s
    status.update("a", "submitting")
    status.update("b", "waiting")
    clock.now = 30.0
    status.update("a", "done")
    status.update("c", "restored")
    text = status.text()
    assert text.startswith("[2/4 targets] 1 queued · 1 waiting on task · 1 done · 1 restored")
    assert "4.0 img/min" in text and "ETA 30s" in text
    clock.now = 30.05
    before = stream.getvalue()
    status.update("b", "downloading")
    assert stream.getvalue() == before  # throttled
    status.draw(force=True)
    assert stream.getvalue().endswith("\r\x1b[K" + status.text())
    status.clear()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_permanent_lines_print_above_the_live_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = Reporter(out=out, err=err, live=True)
    reporter.start_progress([("a", 1), ("b", 1)])
    reporter.event("a", ["a.png"], "queued")
    reporter.line("[1/2] built    a -> a.png")
    reporter.event("a", ["a.png"], "done")
    reporter.end_progress()
    assert out.getvalue() == "[1/2] built    a -> a.png\n"
    assert err.getvalue().endswith("\r\x1b[K")  # the status line is gone at the end
    assert not Reporter(out=out, err=err, live=True, json_mode=True).live
    assert not Reporter(out=out, err=err, live=True, verbosity=-1).live
