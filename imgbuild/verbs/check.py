"""`imgbuild check`: offline, specs vs lock vs files. Never opens the cache, never needs a key
or the network, never takes the build mutex."""
from __future__ import annotations

import os
from typing import Any

from imgbuild.verbs.common import Where, adopt, as_made, load, lock_stamp, remember_noop, stat_cache, unchanged
from imgbuild.verbs.results import UP_TO_DATE, CheckResult, Row

# The planner and the lock reader are imported below the no-op snapshot's answer: a check with
# nothing to report (pre-commit's) never loads them.


def check(where: Where, *, allow_drafts: bool = False, rows: bool = True) -> CheckResult:
    """`rows=False` (nothing will list up-to-date files) lets the no-op snapshot answer."""
    if not rows:
        known = answer_unchanged(where, allow_drafts)
        if known is not None:
            return known
    from imgbuild.plan.states import make_plan
    from imgbuild.store import lockfile

    ahead = _hash_ahead(where)  # a child hashing a fresh clone's outputs while the specs load
    try:
        project, targets = load(where)
        locked = lock_stamp(project)
        lock = lockfile.read(project.lock_path)
        targets = adopt(targets, lock)  # candidates a `build --candidates k` left pending or picked
        stats = stat_cache(project)
        # a fresh clone hashes them all
        stats.prefetch(_locked_outputs(project, targets, lock), ahead.rows() if ahead else None)
    finally:
        if ahead is not None:
            ahead.close()
    plan = make_plan(targets, lock, project.output_dir, provider="placeholder", provider_draft=True,
                     cache=None, hasher=stats.sha256, root=project.root)
    rows: list[Row] = []
    for step in plan.steps:
        if step.candidate > 1:
            continue  # a pending target is one row, whatever its number of candidates
        for output in step.target.outputs:
            status, reason = _status(step, output, allow_drafts)
            rows.append(Row(step.target.name, output, status, reason))
    targets = as_made(targets, lock)  # derivatives follow the accepted pick's seed
    rows.extend(_variant_rows(project, targets, lock, stats, allow_drafts))
    stats.save()
    for orphan in plan.orphans:
        entry = lock.outputs[orphan]
        rows.append(Row(str(entry.get("name", "")), orphan, "orphaned",
                        "in the lock but produced by no spec; run `imgbuild build` to prune it",
                        kind="derived" if entry.get("derived_from") else "image"))
    result = CheckResult(rows)
    if result.exit_code == 0:
        remember_noop(project, "check", lock, locked, {"allow_drafts": allow_drafts, "count": len(rows)},
                      targets, stats)
    return result



def answer_unchanged(where: Where, allow_drafts: bool) -> CheckResult | None:
    """The no-op snapshot's answer (no row is listed), or None when it cannot vouch."""
    known = unchanged(where, "check")
    if known is None or (known["allow_drafts"] and not allow_drafts):
        return None
    return CheckResult([], unlisted=known["count"])


def _hash_ahead(where: Where) -> Any:
    from imgbuild.errors import ImgbuildError
    from imgbuild.plan import hashahead
    from imgbuild.spec.project import find_project_file

    try:
        path = find_project_file(where.directory, where.file)
    except ImgbuildError:
        return None  # loading the project says why
    return hashahead.start(path)


def _locked_outputs(project: Any, targets: list[Any], lock: Any) -> list[str]:
    """The files the plan compares with the lock (as the plan names them), in path order."""
    base = str(project.output_dir)
    produced = {o for t in targets for o in (*t.outputs, *(v.output for v in t.variants))}
    return [os.path.join(base, o) for o in sorted(produced) if o in lock.outputs]


def _variant_rows(project: Any, targets: list[Any], lock: Any, stats: Any,
                  allow_drafts: bool) -> list[Row]:
    """Rows for web derivatives and the manifest (only for projects that have them)."""
    if not any(t.variants or t.alt for t in targets) and not project.settings.get("manifest"):
        return []
    from imgbuild.plan import derivatives as variants
    from imgbuild.store import manifest
    from imgbuild.store.lockfile import is_draft

    status_of = {variants.NEW: "stale", variants.CHANGED: "stale", variants.WAITING: "stale",
                 variants.MISSING: "missing", variants.MODIFIED: "modified", variants.UP_TO_DATE: UP_TO_DATE}
    rows = []
    for s in variants.plan_variants(targets, lock, project.output_dir, stats.sha256):
        status, reason = status_of[s.state], s.reason
        source = lock.get(s.variant.source) or {}
        if status == UP_TO_DATE and not allow_drafts and (is_draft(source) or (lock.get(s.variant.output) or {}).get("draft")):
            status, reason = "draft", f"derived from a draft made by {source.get('provider', 'the placeholder')}"
        rows.append(Row(s.target.name, s.variant.output, status, reason, kind="derived"))
    name = manifest.wanted(project.settings, targets)
    if name is not None:
        try:
            current: bytes | None = (project.output_dir / name).read_bytes()
        except OSError:
            current = None
        if current is None:
            rows.append(Row("", name, "missing", "the manifest is missing", kind="manifest"))
        elif current != manifest.build(targets, lock):
            rows.append(Row("", name, "stale", "the manifest does not match the lock", kind="manifest"))
        else:
            rows.append(Row("", name, UP_TO_DATE, kind="manifest"))
    return rows


def _status(step: Any, output: str, allow_drafts: bool) -> tuple[str, str]:
    if step.state == "pending":
        waiting = next((r for r in step.reasons if r.startswith("pending: input")), None)
        why = (waiting or "the accepted pick is not in the cache" if not step.candidate else
               f"pending: {step.target.candidates} candidates, run imgbuild review / imgbuild accept")
        return "pending", why
    if step.state in ("new", "changed"):
        return "stale", "; ".join(step.reasons)
    if output in step.damage:
        kind = step.damage[output]
        return kind, "the file is missing" if kind == "missing" else "the file differs from its lock hash (edited by hand?)"
    if step.state == UP_TO_DATE and step.draft and not allow_drafts:
        return "draft", (f"draft made by {step.provider or 'an unknown provider'}, not by the production "
                         "service (build with a DashScope API key, or pass --allow-drafts)")
    return UP_TO_DATE, ""
