"""All user-facing output. Text for people (results on stdout, notices on stderr), or with
--json exactly one JSON object as the last line of stdout. Nothing else in imgbuild prints."""
from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from imgbuild.plan import Plan, Step

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
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.json_mode = json_mode
        self.verbosity = verbosity
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def _print(self, text: str, *, stream: TextIO | None = None) -> None:
        print(text, file=stream or self.out, flush=True)

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
