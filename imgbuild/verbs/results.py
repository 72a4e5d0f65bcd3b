"""What each verb returns: plain data. `report` turns it into text or JSON, `api` hands it to
the caller (`to_dict()` is the `--json` summary), `cli` takes the exit code from it."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from imgbuild.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Failure, Problem
from imgbuild.run.loop import Interruption

if TYPE_CHECKING:
    from imgbuild.store.spool import Spool

UP_TO_DATE = "up_to_date"
# Where a document's rows go: `json_head()` leaves this in "targets" and returns the rows
# beside it, so that `report` encodes them a slice at a time (a row is ~0.6 KB as a dict and
# its text: 30 MB held at once at the end of a 50k first build with --json).
ROWS_LATER = "\x00rows"


@dataclass(slots=True)
class Row:
    """One output file and what happened to it (or what state it is in)."""

    name: str  # target name ("" for the manifest)
    output: str  # relative to output_dir
    status: str
    reason: str = ""
    action: str | None = None  # plan only: none | generate | restore | derive
    failure: Failure | None = None
    kind: str = "image"  # the unit each count is in: image (an original), derived (a file), manifest

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "output": self.output, "status": self.status,
                             "reason": self.reason, "kind": self.kind}
        if self.action is not None:
            d["action"] = self.action
        if self.failure is not None:
            d["failure"] = self.failure.to_dict()
        return d


class Rows:
    """A build's rows in order: its derived files' first, then each target's as it finished
    (past the first few, waiting on disk: store/spool.py), then those left pending. Read as
    often as the summary needs; a first build of 50k targets does not hold 50k rows."""

    def __init__(self, first: list[Row], middle: Any) -> None:
        self.first, self.middle, self.last = first, middle, []

    def extend(self, rows: Iterable[Row]) -> None:
        self.last.extend(rows)

    def __iter__(self) -> Iterator[Row]:
        yield from self.first
        yield from self.middle
        yield from self.last

    def __len__(self) -> int:
        return len(self.first) + len(self.middle) + len(self.last)


def row_spool(folder: Any, keep: int) -> Spool[Row]:
    """Rows, past the first `keep` on disk (a row's failure with it, field by field)."""
    import json

    from imgbuild.store.spool import Spool  # here: a no-op build never makes rows

    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    shared: dict[str, str] = {}  # reasons repeat: "not built yet" 50k times is one string (a diff does not)

    def encoded(r: Row) -> bytes:
        failure = None if r.failure is None else [getattr(r.failure, f.name) for f in fields(Failure)]
        return encode([r.name, r.output, r.status, r.reason, r.action, failure, r.kind]).encode("utf-8")

    def decoded(data: bytes) -> Row:
        name, output, status, reason, action, failure, kind = json.loads(data)
        reason = shared.setdefault(reason, reason) if len(shared) < 64 else shared.get(reason, reason)
        return Row(name, output, status, reason, action,
                   None if failure is None else Failure(*failure), kind)

    return Spool(folder, encoded, decoded, keep)


def sort_rows(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.output, r.name))


def with_rows(doc: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    """A `json_head()` document made whole: what `to_dict()` returns."""
    doc["targets"] = [r.to_dict() for r in rows]
    return doc


def by_kind(rows: list[Row]) -> dict[str, dict[str, int]]:
    """Status counts per unit, for --json: {"images": {...}, "derived_files": {...}, ...}."""
    groups: dict[str, dict[str, int]] = {}
    for row in rows:
        group = groups.setdefault(KIND_KEY[row.kind], {})
        group[row.status] = group.get(row.status, 0) + 1
    return groups


KIND_KEY = {"image": "images", "derived": "derived_files", "manifest": "manifest"}


def count(rows: list[Row], *extra: str) -> dict[str, int]:
    counts = {k: 0 for k in ("built", "restored", "up_to_date", "failed", "stale", *extra)}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


@dataclass
class Money:
    currency: str
    spent: float = 0.0  # billed in this run
    resumed: float = 0.0  # billed in an earlier run, collected in this one
    saved_by_cache: float = 0.0  # what restores from the cache would have cost

    def to_dict(self) -> dict[str, Any]:
        return {"currency": self.currency, "spent": round(self.spent, 6),
                "resumed": round(self.resumed, 6), "saved_by_cache": round(self.saved_by_cache, 6)}


@dataclass
class RemoteSummary:
    """What a run did with the remote cache; every run that has one reports it."""

    url: str
    read_only: bool = False
    hits: int = 0  # generations restored from the remote
    uploaded: int = 0
    already_there: int = 0
    errors: int = 0
    skipped: int = 0  # lookups or uploads not tried (store down, writes denied)
    writes_denied: bool = False
    unreachable: bool = False
    faults: list[dict[str, str]] = field(default_factory=list)  # kind, path, detail
    required: bool = False  # --remote-required: any error fails the run

    def exit_code(self, code: int) -> int:
        return EXIT_FAILED if self.required and self.errors and code == EXIT_OK else code

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "read_only": self.read_only, "hits": self.hits,
                "uploaded": self.uploaded, "already_there": self.already_there, "errors": self.errors,
                "skipped": self.skipped, "writes_denied": self.writes_denied,
                "unreachable": self.unreachable, "faults": self.faults}


@dataclass
class BuildResult:
    provider: str
    changed: list[Row] | Rows  # every output this run touched (built, restored, derived, failed...)
    fresh: list[Any] = field(default_factory=list)  # plan steps already up to date
    provider_calls: int = 0
    images_bought: int = 0  # billed for requests this run submitted
    images_resumed: int = 0  # from async tasks an earlier run submitted (paid there)
    possibly_paid: int = 0
    pruned: list[str] = field(default_factory=list)
    money: Money | None = None
    stopped: Failure | None = None  # the failure that stopped submissions early
    interrupted: Interruption | None = None
    nothing_to_do: bool = False
    notices: list[str] = field(default_factory=list)
    command: str = "build"
    remote: RemoteSummary | None = None
    shard: str | None = None
    unlisted: int = 0  # up-to-date outputs counted but given no row (the no-op snapshot's answer)
    pending_fails: bool = False  # CI: leaving a target pending (no pick accepted) fails the build
    derived_files: int | None = None  # derivatives of the selected targets (None: not derived)

    @property
    def derived_up_to_date(self) -> int:
        """Derived files this run left as they were (0 when it stopped before deriving)."""
        touched = sum(1 for r in self.changed if r.kind == "derived")
        return max(0, (self.derived_files or 0) - touched)

    @property
    def rows(self) -> list[Row]:
        """One row per output; up-to-date ones are made only when asked for (--json): a no-op
        build of 10k targets needs only their count."""
        return [*(Row(s.target.name, o, UP_TO_DATE) for s in self.fresh for o in s.target.outputs),
                *self.changed]

    @property
    def counts(self) -> dict[str, int]:
        c = count(self.changed, "skipped", "derived")
        c[UP_TO_DATE] += sum(len(s.target.outputs) for s in self.fresh) + self.unlisted
        return c

    def _by_kind(self, rows: list[Row]) -> dict[str, dict[str, int]]:
        groups = by_kind(rows)
        if self.derived_up_to_date:
            derived = groups.setdefault("derived_files", {})
            derived[UP_TO_DATE] = derived.get(UP_TO_DATE, 0) + self.derived_up_to_date
        return groups

    @property
    def exit_code(self) -> int:
        if self.interrupted is not None:
            return EXIT_INTERRUPTED
        c = self.counts
        if self.pending_fails and c.get("pending"):
            return EXIT_FAILED
        code = EXIT_FAILED if c["failed"] or c["skipped"] else EXIT_OK
        return self.remote.exit_code(code) if self.remote is not None else code

    def to_dict(self) -> dict[str, Any]:
        return with_rows(*self.json_head())

    def json_head(self) -> tuple[dict[str, Any], list[Row]]:
        """The --json document with ROWS_LATER for its rows, and the rows in order."""
        rows = self.rows
        d: dict[str, Any] = {"command": self.command, "provider": self.provider, **self.counts,
                             "targets": ROWS_LATER,
                             "by_kind": self._by_kind(rows),
                             "provider_calls": self.provider_calls, "images_bought": self.images_bought,
                             "images_resumed": self.images_resumed,
                             "possibly_paid": self.possibly_paid,
                             "pruned_lock_entries": len(self.pruned)}
        if self.money is not None:
            d.update(self.money.to_dict())
        if self.stopped is not None:
            d["stopped"] = self.stopped.to_dict()
        if self.interrupted is not None:
            i = self.interrupted
            d["interrupted"] = {"kept": i.kept, "waiting_tasks": i.waiting,
                                "abandoned_paid_requests": i.abandoned_paid, "forced": i.forced}
        if self.remote is not None:
            d["remote"] = self.remote.to_dict()
        if self.shard is not None:
            d["shard"] = self.shard
        return d, sort_rows(rows)


@dataclass
class PullResult:
    """`imgbuild pull`: outputs restored from the local cache or the remote, variants derived."""

    rows: list[Row]
    remote: RemoteSummary | None = None
    command: str = "pull"

    @property
    def counts(self) -> dict[str, int]:
        return count(self.rows, "derived")

    @property
    def exit_code(self) -> int:
        code = EXIT_FAILED if self.counts["failed"] else EXIT_OK
        return self.remote.exit_code(code) if self.remote is not None else code

    def to_dict(self) -> dict[str, Any]:
        return with_rows(*self.json_head())

    def json_head(self) -> tuple[dict[str, Any], list[Row]]:
        d: dict[str, Any] = {"command": self.command, **self.counts, "targets": ROWS_LATER}
        if self.remote is not None:
            d["remote"] = self.remote.to_dict()
        return d, sort_rows(self.rows)


@dataclass
class PushResult:
    remote: RemoteSummary
    not_in_cache: list[str] = field(default_factory=list)  # target names the lock names
    command: str = "push"

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.remote.errors else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "remote": self.remote.to_dict(),
                "not_in_cache": self.not_in_cache}


@dataclass
class PlanResult:
    provider: str
    plan: Any  # plan.states.Plan
    variant_steps: list[Any]
    estimate: dict[str, Any]
    paid: bool
    rows: list[Row]
    notices: list[str] = field(default_factory=list)
    command: str = "plan"
    exit_code: int = EXIT_OK

    @property
    def images_to_generate(self) -> int:
        return sum(s.target.request.n for s in self.plan.steps if s.action == "generate")

    @property
    def images_to_restore(self) -> int:
        return sum(len(s.target.outputs) for s in self.plan.steps if s.action == "restore")

    @property
    def targets_to_restore(self) -> int:
        return sum(1 for s in self.plan.steps if s.action == "restore")

    @property
    def counts(self) -> dict[str, int]:
        c = count(self.rows)
        c["stale"] = sum(1 for r in self.rows if r.status != UP_TO_DATE)
        return c

    def to_dict(self) -> dict[str, Any]:
        return with_rows(*self.json_head())

    def json_head(self) -> tuple[dict[str, Any], list[Row]]:
        return ({"command": self.command, "provider": self.provider, **self.counts,
                 "targets": ROWS_LATER, "orphans": self.plan.orphans,
                 "by_kind": by_kind(self.rows),
                 "images_to_generate": self.images_to_generate, "images_to_restore": self.images_to_restore,
                 "cost": {**self.estimate, "paid": self.paid}}, sort_rows(self.rows))


@dataclass
class CheckResult:
    rows: list[Row]
    command: str = "check"
    unlisted: int = 0  # up-to-date files counted but given no row (the no-op snapshot's answer)

    @property
    def files(self) -> int:
        return len(self.rows) + self.unlisted

    @property
    def bad(self) -> list[Row]:
        return [r for r in self.rows if r.status != UP_TO_DATE]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.bad else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return with_rows(*self.json_head())

    def json_head(self) -> tuple[dict[str, Any], list[Row]]:
        counts = count(self.rows, "missing", "modified", "draft", "orphaned")
        counts[UP_TO_DATE] += self.unlisted
        counts["stale"] = len(self.bad)
        return ({"command": self.command, **counts, "by_kind": by_kind(self.rows),
                 "targets": ROWS_LATER}, sort_rows(self.rows))


@dataclass
class GraphNode:
    name: str
    model: str
    outputs: list[str]
    inputs: list[tuple[str, str]]  # (kind, ref): "target" + name, or "file" + path

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "outputs": self.outputs,
                "inputs": [{"kind": k, "ref": r} for k, r in self.inputs]}


@dataclass
class GraphResult:
    nodes: list[GraphNode]  # inputs first
    style: str = "text"  # text | dot
    command: str = "graph"
    exit_code: int = EXIT_OK

    @property
    def files(self) -> list[str]:
        return sorted({r for n in self.nodes for k, r in n.inputs if k == "file"})

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "targets": [n.to_dict() for n in self.nodes],
                "files": self.files,
                "edges": [{"from": r, "to": n.name, "kind": k} for n in self.nodes for k, r in n.inputs]}


@dataclass
class ValidateResult:
    files: int
    targets: int
    problems: list[Problem] = field(default_factory=list)
    command: str = "validate"

    @property
    def exit_code(self) -> int:
        return 2 if self.problems else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "files": self.files, "targets": self.targets,
                "problems": [p.to_dict() for p in self.problems]}


@dataclass
class CleanResult:
    files: list[str]
    lock_entries: list[str]
    deleted: bool
    command: str = "clean"
    exit_code: int = EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "files": self.files, "lock_entries": self.lock_entries,
                "deleted": self.deleted}


@dataclass
class DataResult:
    """Small verbs (html, init, cache ...): their JSON summary as it is; `report` knows how
    to say each one in words."""

    command: str
    data: dict[str, Any]
    exit_code: int = EXIT_OK
    lines: list[str] = field(default_factory=list)  # per-item lines (listings), before the summary

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, **self.data}


@dataclass
class ReviewResult:
    """`imgbuild review`: the comparison of two locks and the page written for it."""

    project: str  # the project file, as displayed
    base: Any  # store.gitref.Revision
    comparison: Any  # plan.compare.Comparison
    cards: list[dict[str, Any]]  # one per output, as review.json lists them (see verbs.review_page)
    out_dir: Any  # Path of the report folder
    markdown: Any = None  # Path of the summary, when written
    notices: list[str] = field(default_factory=list)
    command: str = "review"
    picks: list[dict[str, Any]] = field(default_factory=list)  # pending targets and their candidates
    exit_code: int = EXIT_OK

    @property
    def counts(self) -> dict[str, int]:
        return self.comparison.counts()  # type: ignore[no-any-return]

    @property
    def changed(self) -> list[dict[str, Any]]:
        return [c for c in self.cards if c["kind"] != "unchanged"]

    @property
    def index(self) -> Any:
        return self.out_dir / "index.html"

    def document(self) -> dict[str, Any]:
        """review.json: everything the page shows, for scripts."""
        targets = [{k: v for k, v in c.items() if k != "ops"} for c in self.cards]
        return {"version": 1, "project": self.project, "base": self._base(), **self._money(),
                "counts": self.counts, "targets": targets, "pending": self.picks}

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "project": self.project, "base": self._base(),
                **self.counts, **self._money(), "report": str(self.index),
                "markdown": None if self.markdown is None else str(self.markdown),
                "notices": self.notices, "pending": [p["name"] for p in self.picks],
                "targets": [{"name": c["name"], "output": c["output"], "kind": c["kind"]}
                            for c in self.changed]}

    def _base(self) -> dict[str, str]:
        return {"ref": self.base.ref, "commit": self.base.commit, "how": self.base.how}

    def _money(self) -> dict[str, Any]:
        c = self.comparison
        return {"images_paid": c.images_paid, "spent": c.spent, "currency": c.currency}
