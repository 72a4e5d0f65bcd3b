"""All user-facing output. Text for people (results on stdout, notices on stderr), or with
--json exactly one JSON object as the last line of stdout, on every exit code. Nothing else in
imgbuild prints, and nothing else turns a result, a `Problem` or a `Failure` into words.

While a build runs: with --json, one JSON object per state change of a target (NDJSON) before
that summary; on a terminal, a live status line on stderr (`LiveStatus`) under the permanent
one-line-per-finished-target output; otherwise only those permanent lines.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, TextIO

from imgbuild.errors import Failure, Problem

STATE_LABEL = {
    "pending": "pending",
    "new": "new",
    "changed": "changed",
    "missing": "missing",
    "modified": "modified",
    "draft": "draft",
    "up_to_date": "up to date",
}


_ROWS_AT_ONCE = 1000
# One encoder each, made once: json.dumps makes a new one on every call that passes options
# (a build with --json writes an event per output and state). Same text as json.dumps.
_summary = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
_event = json.JSONEncoder(ensure_ascii=False).encode


def json_pieces(result: Any) -> Iterator[str]:
    """`result`'s --json document, the text `json.dumps(result.to_dict(), sort_keys=True,
    ensure_ascii=False)` makes, in pieces: a result with one row per output gives its rows
    apart (`json_head`), and they are turned into dicts and text a slice at a time."""
    head = getattr(result, "json_head", None)
    if head is None:
        yield _summary(result.to_dict())
        return
    from imgbuild.verbs.results import ROWS_LATER

    doc, rows = head()
    # exactly once: a string value holding these characters would have its quotes escaped
    before, after = _summary(doc).split('"targets": ' + _summary(ROWS_LATER), 1)
    yield before + '"targets": ['
    for start in range(0, len(rows), _ROWS_AT_ONCE):
        part = _summary([r.to_dict() for r in rows[start:start + _ROWS_AT_ONCE]])[1:-1]
        yield (", " + part) if start else part
    yield "]" + after


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

    def start_progress(self, targets: Iterable[tuple[str, int]]) -> None:
        """A build is about to run these (name, images) targets (read only for a live status
        line: a build that prints none makes no pair per target)."""
        if self.live:
            self._status = LiveStatus(self.err, targets)

    def event(self, name: str, outputs: Sequence[str], state: str) -> None:
        """A target changed state (queued, submitting, waiting, downloading, done, ...)."""
        if self.json_mode:
            t = round(time.monotonic() - self.started, 3)
            for output in outputs:
                print(_event({"event": "state", "name": name, "output": output, "state": state,
                              "t": t}), file=self.out, flush=True)
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

    def progress(self, done: int, total: int, status: str, step: Any, failure: Failure | None) -> None:
        outputs = ", ".join(step.target.outputs)
        width = len(str(total))
        text = f"[{done:>{width}}/{total} images] {status:<8} {step.target.name} -> {outputs}"
        error = failure_text(failure) if failure is not None else None
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
        text = f"[{done:>{width}}/{total} files] {status:<8} {step.target.name} -> {step.variant.output}"
        if error:
            text += f"\n    {step.target.where}: {error}"
            self.error(text) if self.json_mode else self.line(text)
        else:
            self.line(text)

    def interrupt_notice(self, paid_in_flight: int, grace: float, again: bool) -> None:
        if again:
            self.notice("interrupted again: stopping now"
                        + (f"; abandoning {paid_in_flight} paid request(s) in flight (the next build "
                           "pays for them again)" if paid_in_flight else ""))
        elif paid_in_flight:
            self.notice(f"interrupted: starting nothing new; waiting for {paid_in_flight} paid request(s) "
                        "in flight to finish (Ctrl-C again abandons them, and the next build pays again)")
        else:
            self.notice(f"interrupted: starting nothing new (at most {grace:g}s; Ctrl-C again to stop now)")

    # --- results ----------------------------------------------------------------------------

    def result(self, result: Any) -> None:
        """The closing output of a verb: its lines, then its summary (text or one JSON object)."""
        lines, text, loud = _RENDER[type(result).__name__](result, self.verbosity)
        for line in lines:
            self.line(line)
        problems = getattr(result, "problems", None)
        if problems:  # spec problems read the same from every verb: on stderr
            self.error(text)
            text = ""
        if self.json_mode:
            for piece in json_pieces(result):
                self.out.write(piece)
            self.out.write("\n")
            self.out.flush()
        elif text and (self.verbosity >= 0 or loud):
            self._print(text)
        interrupted = getattr(result, "interrupted", None)
        if interrupted is not None:
            self.error(interrupted_text(interrupted, result))

    def failure(self, command: str, error: Exception, exit_code: int, crash_log: str | None = None) -> None:
        """An error that ended a verb: text on stderr; with --json also the closing object."""
        from imgbuild.errors import LimitExceeded, SpecError

        if isinstance(error, SpecError):
            text = problems_text(error.problems)
        elif isinstance(error, KeyboardInterrupt):
            text = "imgbuild: interrupted; what finished is kept in the lock, and the next build resumes from there"
        elif crash_log is not None:
            text = (f"imgbuild: internal error (a bug). The traceback is in {crash_log}; "
                    "please report it with that file.")
        else:
            text = f"imgbuild: error: {error}"
            if isinstance(error, LimitExceeded):
                text += "\n" + "\n".join(describe_cost(error.estimate))
        self.error(text)
        if self.json_mode:
            doc: dict[str, Any] = {"command": command, "exit_code": exit_code, "error": str(error)}
            if isinstance(error, SpecError):
                doc["problems"] = [p.to_dict() for p in error.problems]
            if crash_log is not None:
                doc["crash_log"] = crash_log
            self._print(_summary(doc))


class LiveStatus:
    """One status line on a terminal, redrawn in place (carriage return + erase line), at most
    `interval` apart unless forced: counts per state, images per minute and an ETA.

    A plain ANSI line rather than a dependency such as rich: it is all a build needs, and
    keeps `imgbuild --version`/`check` start-up free of an import that costs more than they do.
    """

    ORDER = ("queued", "submitting", "waiting", "downloading", "done", "restored", "failed", "skipped")
    LABEL: ClassVar[dict[str, str]] = {"waiting": "waiting on task"}
    FINAL = ("done", "restored", "failed", "skipped")

    def __init__(self, stream: TextIO, targets: Iterable[tuple[str, int]], *,
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
        parts = [f"[{finished}/{self.total} targets]"]
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


# --- words for data ------------------------------------------------------------------------------

def problem_text(p: Problem) -> str:
    """`file:line:col: where: message` (and the hint on its own line)."""
    loc = f"{p.file}:{p.line}:{p.col}" if p.line else p.file
    text = f"{loc}: {p.where}: {p.message}" if p.where else f"{loc}: {p.message}"
    return text + (f"\n    hint: {p.hint}" if p.hint else "")


def problems_text(problems: Sequence[Problem]) -> str:
    count = len(problems)
    head = f"{count} problem{'s' if count != 1 else ''} in the image specs:"
    return "\n".join([head, *map(problem_text, problems)])


def failure_text(f: Failure) -> str:
    if f.code == "Interrupted":
        return "interrupted"
    if f.code == "NotStarted":
        return f"not started: {f.message}"
    if f.code in ("PartialResult", "CacheEntryDamaged", "CacheCannotStore", "WriteFailed"):
        text = f.message
    else:
        text = f"{f.code}: {f.message}"
    if f.request_id:
        text += f" (request id {f.request_id})"
    if f.possibly_paid:
        text += f"; possibly paid: {f.possibly_paid} request(s) timed out after sending"
    if f.hint and f.scope == "model":  # the account's hint closes the build; a model's, here
        text += f"; {f.hint}"
    return text


def describe_cost(est: dict[str, Any]) -> list[str]:
    lines = []
    for model, row in est["by_model"].items():
        if row["unit_price"] is None:  # no price in this region's table: never a borrowed one
            lines.append(f"  {model}: {row['images']} × price unknown in {est['region']}")
        else:
            lines.append(f"  {model}: {row['images']} × {row['unit_price']:.4g} = {row['cost']:.2f} {est['currency']}"
                         + (" (price unverified)" if row.get("price_unverified") else ""))
    unknown = est.get("price_unknown") or []
    tail = f", plus {', '.join(unknown)} at a price unknown here" if unknown else ""
    lines.append(f"  total: {est['images']} image(s), {est['total']:.2f} {est['currency']} "
                 f"({est['region']} prices{tail})")
    return lines


def interrupted_text(i: Any, result: Any) -> str:
    text = f"imgbuild: interrupted; kept {i.kept} finished image(s) in the lock"
    if i.waiting:
        text += f", {i.waiting} submitted task(s) stay in the journal"
    text += "; the next build resumes" + (" them without paying again" if i.waiting else " from there")
    if i.abandoned_paid:
        text += (f"; {i.abandoned_paid} paid request(s) were abandoned in flight and the next build "
                 "pays for them again")
    return text


def remote_text(r: Any) -> str:
    """`remote: N hits, N uploaded, N already there, N errors`, and why uploads did not happen."""
    text = (f"imgbuild: remote: {r.hits} hits, {r.uploaded} uploaded, {r.already_there} already there, "
            f"{r.errors} error{'s' if r.errors != 1 else ''}")
    if r.read_only:
        text += " (read-only: uploads skipped)"
    elif r.writes_denied:
        text += " (writes denied: uploads skipped)"
    if r.unreachable:
        text += f"; the store was unreachable, {r.skipped} request(s) not tried"
    return text


def _with_remote(r: Any, rendered: tuple[list[str], str, bool]) -> tuple[list[str], str, bool]:
    """Every run that uses a remote closes with its line, even a no-op, so that a misconfigured
    remote never goes unnoticed; with --remote-required an error makes the run loud."""
    remote = getattr(r, "remote", None)
    if remote is None:
        return rendered
    lines, text, loud = rendered
    return lines, f"{text}\n{remote_text(remote)}", loud or bool(remote.required and remote.errors)


def _render_build(r: Any, verbosity: int) -> tuple[list[str], str, bool]:
    return _with_remote(r, _build_text(r))


def _build_text(r: Any) -> tuple[list[str], str, bool]:
    c = r.counts
    fresh = _fresh_text(c["up_to_date"], r.derived_up_to_date)
    if r.nothing_to_do:
        return [], f"imgbuild: nothing to do ({fresh})", False
    failed_files = sum(1 for row in r.changed if row.kind == "derived" and row.status == "failed")
    text = ((f"imgbuild: {c['accepted']} accepted\n" if c.get("accepted") else "")
            + f"imgbuild: {_n(c['built'], 'image')} built, {c['restored']} restored from cache, "
            + f"{c['failed'] - failed_files} failed"
            + (f", {c['skipped']} not started" if c["skipped"] else "")
            + (f"; {_n(c['derived'], 'file')} derived" if c["derived"] else "")
            + (f", {failed_files} failed to derive" if failed_files else "")
            + f"; {fresh}")
    if r.stopped is not None:
        text += "\nimgbuild: stopped early: " + failure_text(r.stopped).removeprefix("not started: ")
        if r.stopped.hint:
            text += f" ({r.stopped.hint})"
    m = r.money
    if m is not None and (m.spent or m.saved_by_cache or m.resumed):
        text += f"; spent {m.spent:.2f} {m.currency}"
        if m.resumed:
            text += f" (plus {m.resumed:.2f} paid by an earlier run, collected now)"
        text += f", saved {m.saved_by_cache:.2f} by the cache"
    if r.possibly_paid:
        text += f"\nimgbuild: possibly paid: {r.possibly_paid} request(s) timed out after sending"
    from imgbuild.verbs.results import sort_rows

    pending = [row for row in r.changed if row.status == "pending"]
    lines = [f"pending  {row.output} ({row.name}): {row.reason}" for row in sort_rows(pending)]
    if pending:
        text += f"\nimgbuild: {len(pending)} pending (no output until `imgbuild accept TARGET --pick N`)"
    return lines, text, bool(c["failed"] or c["skipped"] or (pending and r.pending_fails))


def _n(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _fresh_text(images: int, derived: int) -> str:
    """Up-to-date counts in their units: originals are images, derivatives are files."""
    return f"{_n(images, 'image')}" + (f" and {_n(derived, 'derived file')}" if derived else "") + " up to date"


def _render_pull(r: Any, verbosity: int) -> tuple[list[str], str, bool]:
    from imgbuild.verbs.results import sort_rows

    lines = [f"{row.status:<9} {row.output} ({row.name}): {row.reason}"
             for row in sort_rows(r.rows) if row.status in ("failed", "stale")]
    c = r.counts
    text = (f"imgbuild: {c['restored']} restored, {c['derived']} derived, {c['up_to_date']} up to date, "
            f"{c['failed']} failed" + (f", {c['stale']} not pinned by the lock (need a build)" if c["stale"] else ""))
    return _with_remote(r, (lines, text, bool(c["failed"])))


def _render_push(r: Any, verbosity: int) -> tuple[list[str], str, bool]:
    lines = [f"not in the local cache, not pushed: {name}" for name in r.not_in_cache]
    text = remote_text(r.remote)
    if r.not_in_cache:
        text += f"\nimgbuild: {len(r.not_in_cache)} target(s) the lock names are not in this machine's cache"
    return lines, text, bool(r.remote.errors)


def _render_plan(r: Any, verbosity: int) -> tuple[list[str], str, bool]:
    lines = []
    for step in r.plan.steps:
        if step.state == "up_to_date" and verbosity <= 0:
            continue
        label = STATE_LABEL[step.state]
        action = "" if step.action == "none" else f" ({step.action})"
        lines.append(f"{label + action:<24} {step.target.name} -> {', '.join(step.target.outputs)}")
        lines.extend(f"    {reason}" for reason in step.reasons)
    lines.extend(f"{'orphan':<24} {o} (in the lock, produced by no spec)" for o in r.plan.orphans)
    noted: set[str] = set()
    for v in r.variant_steps:
        if v.state == "up_to_date":
            continue
        lines.append(f"{'derive (' + v.state + ')':<24} {v.target.name} -> {v.variant.output}")
        if v.state != "waiting":
            lines.append(f"    {v.reason}")
        if v.target.name not in noted:
            noted.add(v.target.name)
            lines.extend(f"    note: {note}" for note in v.target.notes)
    if r.estimate["images"]:
        lines.append("cost" + ("" if r.paid else " (with a real provider; placeholder drafts are free)") + ":")
        lines.extend(describe_cost(r.estimate))
    fresh = {"image": 0, "derived": 0}
    for row in r.rows:
        if row.status == "up_to_date":
            fresh[row.kind] += 1
    derive = sum(1 for v in r.variant_steps if v.state not in ("up_to_date", "waiting"))
    waiting = sum(1 for v in r.variant_steps if v.state == "waiting")
    text = (f"imgbuild: {_n(r.images_to_generate, 'image')} to generate, {_n(r.images_to_restore, 'image')} "
            "to restore from cache"
            + (f", {_n(derive, 'file')} to derive" if derive else "")
            + (f", {_n(waiting, 'derived file')} waiting on their original" if waiting else "")
            + f"; {_fresh_text(fresh['image'], fresh['derived'])}"
            + (f"; {len(r.plan.orphans)} orphaned lock entr{'y' if len(r.plan.orphans) == 1 else 'ies'}"
               if r.plan.orphans else ""))
    return lines, text, False


def _render_check(r: Any, verbosity: int) -> tuple[list[str], str, bool]:
    from imgbuild.verbs.results import sort_rows

    bad = r.bad
    lines = [f"{row.status:<9} {row.output} ({row.name}): {row.reason}" for row in sort_rows(bad)]
    if not bad:
        kinds = {k: sum(1 for row in r.rows if row.kind == k) for k in ("image", "derived", "manifest")}
        if sum(kinds.values()) != r.files:  # the no-op snapshot answers with counts, no rows
            return lines, f"imgbuild: all {r.files} files are up to date", False
        parts = [_n(kinds["image"], "image")]
        if kinds["derived"]:
            parts.append(_n(kinds["derived"], "derived file"))
        if kinds["manifest"]:
            parts.append("the manifest")
        return lines, f"imgbuild: all {r.files} files are up to date ({', '.join(parts)})", False
    # A build without a key cannot replace a draft: name the remedy that does, or users go round
    # between `check` (fails) and `build` (nothing to do).
    drafts = sum(1 for row in bad if row.status == "draft")
    pending = sum(1 for row in bad if row.status == "pending")
    parts = []
    if len(bad) > drafts + pending:
        parts.append(f"{len(bad) - drafts - pending} of {len(r.rows)} files need `imgbuild build`")
    if pending:
        parts.append(f"{pending} pending: pick a candidate with `imgbuild accept TARGET --pick N`")
    if drafts:
        parts.append(f"{drafts} of {len(r.rows)} files are drafts: build them with a DashScope API key "
                     "(DASHSCOPE_API_KEY), or accept drafts with `imgbuild check --allow-drafts`")
    return lines, "imgbuild: " + "; ".join(parts), True


def _render_validate(r: Any, verbosity: int) -> tuple[list[str], str, bool]:
    if r.problems:
        return [], problems_text(r.problems), True
    return [], f"imgbuild: {r.files} file(s), {r.targets} target(s): valid", False


def _render_graph(r: Any, verbosity: int) -> tuple[list[str], str, bool]:
    if r.style == "dot":
        return _graph_dot(r), "", False
    children: dict[str, list[str]] = {}
    for node in r.nodes:
        for _, ref in node.inputs:
            children.setdefault(ref, []).append(node.name)
    roots = [*r.files, *(n.name for n in r.nodes if n.name in children and not n.inputs)]
    lines: list[str] = []
    for root in roots:
        lines.append(root + ("  (file)" if root in r.files else ""))
        _tree(root, children, "", lines, {root})
    alone = [n.name for n in r.nodes if not n.inputs and n.name not in children]
    if verbosity > 0:
        lines += [f"{name}  (no inputs, read by none)" for name in alone]
    edges = sum(len(n.inputs) for n in r.nodes)
    return lines, (f"imgbuild: {len(r.nodes)} target(s), {edges} input edge(s), "
                   f"{len(alone)} target(s) on their own"), False


def _tree(node: str, children: dict[str, list[str]], indent: str, lines: list[str],
          seen: set[str]) -> None:
    kids = children.get(node, [])
    for i, kid in enumerate(kids):
        last = i == len(kids) - 1
        lines.append(f"{indent}{'└── ' if last else '├── '}{kid}")
        if kid not in seen:  # a diamond is drawn once per path; a cycle cannot get here
            _tree(kid, children, indent + ("    " if last else "│   "), lines, seen | {kid})


def _graph_dot(r: Any) -> list[str]:
    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["digraph imgbuild {", "  rankdir=LR;", "  node [shape=box];"]
    lines += [f"  {q(path)} [shape=note];" for path in r.files]
    lines += [f"  {q(n.name)} [label={q(n.name)[:-1]}\\n{n.model}\"];" for n in r.nodes]
    lines += [f"  {q(ref)} -> {q(n.name)};" for n in r.nodes for _, ref in n.inputs]
    return lines + ["}"]


def _plural(count: int, one: str, many: str | None = None) -> str:
    return one if count == 1 else (many or one + "s")


def _render_clean(r: Any, verbosity: int) -> tuple[list[str], str, bool]:
    lines = [f"{'deleted' if r.deleted else 'would delete'}: {rel}" for rel in r.files]
    lines += [f"{'dropped' if r.deleted else 'would drop'} lock entry: {o}" for o in r.lock_entries]
    files, entries = len(r.files), len(r.lock_entries)
    said = f"{files} {_plural(files, 'file')} and {entries} {_plural(entries, 'lock entry', 'lock entries')}"
    if not files and not entries:
        text = "imgbuild: nothing to clean"
    elif r.deleted:
        text = f"imgbuild: deleted {files} {_plural(files, 'file')}, dropped {entries} {_plural(entries, 'lock entry', 'lock entries')}"
    else:
        text = f"imgbuild: {said} to clean; run with --yes to delete"
    return lines, text, False


def _render_data(r: Any, verbosity: int) -> tuple[list[str], str, bool]:
    return _DATA[r.command](r.data)


def _render_html(d: dict[str, Any]) -> tuple[list[str], str, bool]:
    return [], d["html"], False


def _render_init(d: dict[str, Any]) -> tuple[list[str], str, bool]:
    from pathlib import Path

    from imgbuild.spec.project import display_path

    path = Path(d["project_file"])
    lines = [f"created {display_path(path)}"]
    if d.get("schema_file"):
        lines.append(f"created {display_path(Path(d['schema_file']))} (the schema, for editors)")
    if d["gitignore"] != "unchanged":
        lines.append(f"{d['gitignore']} {display_path(path.parent / '.gitignore')} (ignores .imgbuild/)")
    return lines, "imgbuild: add an image to imgbuild.yaml, then run `imgbuild build`", False


def _render_cache_info(d: dict[str, Any]) -> tuple[list[str], str, bool]:
    return [], (f"directory: {d['directory']}\n"
                f"entries:   {d['entries']} generation(s), {d['images']} image(s)\n"
                f"blobs:     {d['blobs']}\n"
                f"size:      {_size(d['bytes'])}"), False


def _render_cache_verify(d: dict[str, Any]) -> tuple[list[str], str, bool]:
    lines = [f"incomplete entry {key}: names a blob that is not stored" for key in d["incomplete"]]
    lines += [f"unreadable entry {key}: is not a record imgbuild can read" for key in d["unreadable_entries"]]
    lines += [f"{'damaged':<10} blob {digest}: its bytes do not match its sha256" for digest in d["damaged"]]
    if not d["failed"]:
        return lines, f"imgbuild: all {d['blobs']} blob(s) intact", False
    found = (f"imgbuild: {len(d['damaged'])} of {d['blobs']} blob(s) damaged, {len(d['incomplete'])} "
             f"incomplete and {len(d['unreadable_entries'])} unreadable entries")
    if d["repaired"]:
        return lines, (f"{found}; removed {len(d['removed_entries'])} entries and "
                       f"{len(d['removed_blobs'])} blob(s). A build needing one of those images "
                       "generates it again (paid)."), True
    return lines, (f"{found}. A build removes a damaged original when it meets it and generates the "
                   "image again (paid); `imgbuild cache verify --yes` removes them now."), True


def _unpicked(u: dict[str, Any]) -> str:
    return f"{u['target'] or '?'}: {u['reason'] or 'not picked'} on {u['since'][:10]}"


def _render_cache_prune(d: dict[str, Any]) -> tuple[list[str], str, bool]:
    verb = "deleted" if d["deleted"] else "would delete"
    expired = {u["key"]: u for u in d.get("expired_unpicked", [])}
    days = d.get("keep_unpicked_days")
    lines = [f"{verb}: entry {key}" + (f" ({_unpicked(expired[key])}; to be kept until "
                                       f"{expired[key]['until'][:10]}, keep_unpicked_days: {days})"
                                       if key in expired else "")
             for key in d["entries"]] + [f"{verb}: blob {b}" for b in d["blobs"]]
    lines[:0] = [f"keeping: entry {u['key']} ({_unpicked(u)}; kept until {u['until'][:10]}, "
                 f"keep_unpicked_days: {days})" for u in d.get("kept_unpicked", [])]
    keys, blobs = len(d["entries"]), len(d["blobs"])
    if keys or blobs:
        lines.insert(0, f"keeping what {', '.join(d['keep_locks'])} reference(s); the cache at "
                        f"{d['directory']} may be shared by other projects: pass --keep-lock for each of them")
    if d["kept_recent"]:
        lines.insert(0, f"keeping {d['kept_recent']} unreferenced entries stored in the last "
                        f"{d['grace_hours']:g} h or while a build was running: a running build "
                        "records its images in its lockfile only when it ends")
    if not keys and not blobs:
        text = "imgbuild: nothing to prune"
    elif d["deleted"]:
        text = f"imgbuild: deleted {keys} entries and {blobs} blob(s)"
    else:
        text = (f"imgbuild: {keys} entries and {blobs} blob(s) to prune; "
                "run with --yes to delete (paid originals cannot be restored)")
    return lines, text, False


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _render_review(r: Any, verbosity: int) -> tuple[list[str], str, bool]:
    from imgbuild.plan.compare import KINDS, UNCHANGED, describe
    from imgbuild.spec.project import display_path

    shown = [c for c in r.comparison.changes if c.kind != UNCHANGED or verbosity > 0]
    lines = [f"{c.kind:<10} {c.output} ({c.name})" + (f": {describe(c)}" if c.kind != UNCHANGED else "")
             for c in shown]
    lines += [f"{'pending':<10} {p['name']}: {len(p['candidates'])} candidates to pick from on the page "
              f"(or list them with `imgbuild accept {p['name']}`)" for p in r.picks]
    counts, m = r.counts, r.comparison
    text = (f"imgbuild: against {r.base.ref} ({r.base.commit[:10]}): "
            + ", ".join(f"{counts[k]} {k}" for k in KINDS)
            + (f", {len(r.picks)} waiting for a pick" if r.picks else "")
            + f"; {m.images_paid} image(s) paid, {m.spent:.2f} {m.currency}"
            + f"\nimgbuild: report: {display_path(r.index)}")
    if r.markdown is not None:
        text += f"\nimgbuild: summary: {r.markdown}"
    return lines, text, False


def _render_watch(d: dict[str, Any]) -> tuple[list[str], str, bool]:
    text = f"imgbuild: stopped watching after {d['builds']} build(s)"
    if d["interrupted_build"]:
        text += "; the last one was interrupted, and what it finished is in the lock"
    return [], text, False


def _near(path: str) -> str:
    """A path as typed from here when it is under the current folder, else in full."""
    import os

    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel


def _render_accept_list(d: dict[str, Any]) -> tuple[list[str], str, bool]:
    lines = [f"{c['name']}  candidate {c['pick']}: seed {c['seed']}  sha256 {c['sha256'][:12]}  "
             f"{_near(c['file']) if c['file'] else '(not in the cache)'}  ->  {c['command']}"
             for c in d["candidates"]]
    return lines, "imgbuild: pick one with --pick N or --digest PREFIX (or --all-first)", True


def _render_reject(d: dict[str, Any]) -> tuple[list[str], str, bool]:
    lines = [f"rejected {t['name']}: seeds {', '.join(map(str, t['rejected_seeds']))} will not be asked for again"
             for t in d["targets"]]
    return lines, "imgbuild: `imgbuild build` makes new candidates", False


_DATA = {"html": _render_html, "init": _render_init, "cache info": _render_cache_info,
         "cache verify": _render_cache_verify, "cache prune": _render_cache_prune,
         "watch": _render_watch, "accept-list": _render_accept_list, "reject": _render_reject}


_RENDER = {"BuildResult": _render_build, "PlanResult": _render_plan, "CheckResult": _render_check,
           "ValidateResult": _render_validate, "CleanResult": _render_clean, "DataResult": _render_data,
           "ReviewResult": _render_review, "GraphResult": _render_graph, "PullResult": _render_pull, "PushResult": _render_push}
