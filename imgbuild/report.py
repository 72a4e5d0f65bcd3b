"""All user-facing output. Text for people (results on stdout, notices on stderr), or with
--json exactly one JSON object as the last line of stdout. Nothing else in imgbuild prints.

While a build runs: with --json, one JSON object per state change of a target (NDJSON) before
that summary; on a terminal, a live status line on stderr (`LiveStatus`) under the permanent
one-line-per-finished-target output; otherwise only those permanent lines.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, ClassVar, TextIO

from imgbuild.plan.states import Plan, Step

STATE_LABEL = {
    "new": "new",
    "changed": "changed",
    "missing": "missing",
    "modified": "modified",
    "draft": "draft",
    "up_to_date": "up to date",
}


class Reporter:
    def __init__(self, *, json_mode: bool = False, verbosity: int = 0,
                 out: TextIO | None = None, err: TextIO | None = None, live: bool = False) -> None:
        self.json_mode = json_mode
        self.verbosity = verbosity
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.live = live and not json_mode and verbosity >= 0  # the CLI decides (a TTY?)
        self.started = time.monotonic()
        self._status: LiveStatus | None = None

    def _print(self, text: str, *, stream: TextIO | None = None) -> None:
        status = self._status
        if status is not None:
            status.clear()
        print(text, file=stream or self.out, flush=True)
        if status is not None:
            status.draw(force=True)

    # --- progress while a build runs ------------------------------------------------------

    def start_progress(self, targets: Sequence[tuple[str, int]]) -> None:
        """A build is about to run these (name, images) targets."""
        if self.live and targets:
            self._status = LiveStatus(self.err, targets)

    def event(self, name: str, outputs: Sequence[str], state: str) -> None:
        """A target changed state (queued, submitting, waiting, downloading, done, ...)."""
        if self.json_mode:
            t = round(time.monotonic() - self.started, 3)
            for output in outputs:
                print(json.dumps({"event": "state", "name": name, "output": output, "state": state,
                                  "t": t}, ensure_ascii=False), file=self.out, flush=True)
        elif self._status is not None:
            self._status.update(name, state)

    def tick(self) -> None:
        """Redraw the status line (elapsed time and ETA move on without events)."""
        if self._status is not None:
            self._status.draw()

    def end_progress(self) -> None:
        if self._status is not None:
            self._status.clear()
            self._status = None

    def notice(self, text: str) -> None:
        """One-line remarks (which provider, what was skipped): stderr, hidden by -q."""
        if self.verbosity >= 0:
            self._print(f"imgbuild: {text}", stream=self.err)

    def line(self, text: str) -> None:
        """Human results: stdout, hidden by -q and replaced by the JSON object in --json mode."""
        if self.json_mode:
            if self.verbosity >= 0:
                self._print(text, stream=self.err)
        elif self.verbosity >= 0:
            self._print(text)

    def error(self, text: str) -> None:
        self._print(text, stream=self.err)

    def progress(self, done: int, total: int, status: str, step: Step, error: str | None) -> None:
        outputs = ", ".join(step.target.outputs)
        width = len(str(total))
        text = f"[{done:>{width}}/{total}] {status:<8} {step.target.name} -> {outputs}"
        if error:
            text += f"\n    {step.target.where}: {error}"
        elif self.verbosity > 0 and step.reasons:
            text += "".join(f"\n    {r}" for r in step.reasons)
        if error:
            self.error(text) if self.json_mode else self.line(text)
        else:
            self.line(text)

    def variant_progress(self, done: int, total: int, status: str, step: Any, error: str | None) -> None:
        width = len(str(total))
        text = f"[{done:>{width}}/{total}] {status:<8} {step.target.name} -> {step.variant.output}"
        if error:
            text += f"\n    {step.target.where}: {error}"
            self.error(text) if self.json_mode else self.line(text)
        else:
            self.line(text)

    def plan(self, plan: Plan, *, show_fresh: bool) -> None:
        for step in plan.steps:
            if step.state == "up_to_date" and not show_fresh:
                continue
            label = STATE_LABEL[step.state]
            action = "" if step.action == "none" else f" ({step.action})"
            self.line(f"{label + action:<24} {step.target.name} -> {', '.join(step.target.outputs)}")
            for reason in step.reasons:
                self.line(f"    {reason}")
        for orphan in plan.orphans:
            self.line(f"{'orphan':<24} {orphan} (in the lock, produced by no spec)")

    def summary(self, summary: dict[str, Any], text: str) -> None:
        if self.json_mode:
            self._print(json.dumps(summary, sort_keys=True, ensure_ascii=False))
        elif self.verbosity >= 0 or summary.get("failed") or summary.get("stale"):
            self._print(text)


class LiveStatus:
    """One status line on a terminal, redrawn in place (carriage return + erase line), at most
    `interval` apart unless forced: counts per state, images per minute and an ETA.

    A plain ANSI line rather than a dependency such as rich: it is all a build needs, and
    keeps `imgbuild --version`/`check` start-up free of an import that costs more than they do.
    """

    ORDER = ("queued", "submitting", "waiting", "downloading", "done", "restored", "failed", "skipped")
    LABEL: ClassVar[dict[str, str]] = {"waiting": "waiting on task"}
    FINAL = ("done", "restored", "failed", "skipped")

    def __init__(self, stream: TextIO, targets: Sequence[tuple[str, int]], *,
                 interval: float = 0.1, clock: Any = time.monotonic) -> None:
        self.stream = stream
        self.images = dict(targets)
        self.total = len(self.images)
        self.state: dict[str, str] = dict.fromkeys(self.images, "queued")
        self.counts: dict[str, int] = {"queued": self.total}
        self.interval = interval
        self.clock = clock
        self.start = clock()
        self.finished_images = 0
        self.last_draw = -1e9
        self.shown = False

    def update(self, name: str, state: str) -> None:
        old = self.state.get(name)
        if old is not None:
            self.counts[old] -= 1
        self.state[name] = state
        self.counts[state] = self.counts.get(state, 0) + 1
        if state in ("done", "restored"):
            self.finished_images += self.images.get(name, 1)
        self.draw()

    def text(self) -> str:
        elapsed = max(1e-6, self.clock() - self.start)
        finished = sum(self.counts.get(s, 0) for s in self.FINAL)
        parts = [f"[{finished}/{self.total}]"]
        parts += [f"{self.counts.get(s, 0)} {self.LABEL.get(s, s)}" for s in self.ORDER
                  if self.counts.get(s) or s == "done"]
        rate = self.finished_images / elapsed * 60
        parts.append(f"{rate:.1f} img/min")
        left = self.total - finished
        if finished and left:
            parts.append(f"ETA {_duration(elapsed / finished * left)}")
        else:
            parts.append(f"{_duration(elapsed)} elapsed")
        return parts[0] + " " + " · ".join(parts[1:])

    def draw(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last_draw < self.interval:
            return
        self.last_draw = now
        import shutil

        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        text = self.text()
        if len(text) > width:  # a wrapped line cannot be redrawn in place
            text = text[: width - 1] + "…"
        self._write("\r\x1b[K" + text)
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self._write("\r\x1b[K")
            self.shown = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
