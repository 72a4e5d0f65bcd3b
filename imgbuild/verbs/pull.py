"""`imgbuild pull`: restore every output the lock names from the local cache or the remote, with
no API key and no provider call, then derive what is missing. For a fresh clone of a repository
that keeps generated images out of git."""
from __future__ import annotations

from typing import Any

from imgbuild import commands
from imgbuild.errors import EXIT_FAILED, EXIT_OK
from imgbuild.plan.states import GENERATE, MISSING, MODIFIED, NOTHING, RESTORE, make_plan
from imgbuild.report import Reporter
from imgbuild.store import lockfile

NOT_FOUND = "no usable original in the local cache or the remote"
NOT_PINNED = "the lock does not pin this target as its spec stands; run `imgbuild build`"


def pull(where: commands.Where, reporter: Reporter, *, jobs: int | None = None,
         no_wait: bool = False, remote_required: bool = False) -> int:
    with commands._project_lock(where, reporter, no_wait):  # it writes outputs and the lock
        return _pull(where, reporter, jobs=jobs, remote_required=remote_required)


def _pull(where: commands.Where, reporter: Reporter, *, jobs: int | None, remote_required: bool) -> int:
    from imgbuild.verbs.remote_link import fetch_for, open_link

    project, targets = commands.load(where)
    lock = lockfile.read(project.lock_path)
    stats = commands._stat_cache(project)
    link = open_link(project.settings, reporter, required=remote_required)
    with commands.open_cache(project) as cache:
        def planned() -> Any:
            # As a draft provider: a pinned target is restored under the key the lock records,
            # whatever provider made it; no key is ever computed for a provider we would call.
            return make_plan(targets, lock, project.output_dir, provider="placeholder",
                             provider_draft=True, cache=cache, hasher=stats.sha256)

        plan = planned()
        damaged = [s for s in plan.steps if s.action == GENERATE and s.state in (MISSING, MODIFIED)]
        if fetch_for(link, damaged, lock, cache, reporter, then="cannot be restored"):
            plan = planned()
        todo = [s for s in plan.steps if s.action == RESTORE]
        commands._sweep(project, (s.target for s in todo))
        outcomes: list[Any] = []
        derived: list[Any] = []
        try:
            if todo:
                outcomes = commands._execute(project, todo, lock, cache, reporter, choice=_NO_PROVIDER,
                                             identity="placeholder", jobs=jobs, keep_going=True,
                                             prune=[], stats=stats)
            derived = commands._derive(project, targets, lock, cache, reporter, jobs, stats)
        finally:
            if todo or derived:
                lockfile.write(project.lock_path, lock)
            commands._write_manifest(project, targets, lock, stats, force=bool(todo or derived))
            stats.save()
    return _report(plan, outcomes, derived, link, reporter, remote_required)


class _NoProvider:
    name = "none"  # pull restores only: the executor is never handed a generation
    notice = None


_NO_PROVIDER: Any = _NoProvider()


def _report(plan: Any, outcomes: list[Any], derived: list[Any], link: Any, reporter: Reporter,
            remote_required: bool) -> int:
    rows = [r for s in plan.steps if s.action == NOTHING for r in commands._rows(s, "up_to_date", "")]
    for s in plan.steps:
        if s.action == GENERATE:
            damaged = s.state in (MISSING, MODIFIED)
            status, reason = ("failed", NOT_FOUND) if damaged else ("stale", NOT_PINNED)
            rows.extend(commands._rows(s, status, reason))
            reporter.line(f"{status:<9} {s.target.name} -> {', '.join(s.target.outputs)}: {reason}")
    for o in outcomes:
        rows.extend(commands._rows(o.step, o.status, o.error or ""))
    rows.extend(commands._variant_row(d) for d in derived)
    counts = commands._counts(rows, "derived")
    summary = {"command": "pull", **counts, "targets": commands._sorted(rows)}
    text = (f"imgbuild: {counts['restored']} restored, {counts['derived']} derived, "
            f"{counts['up_to_date']} up to date, {counts['failed']} failed"
            + (f", {counts['stale']} not in the lock (need a build)" if counts["stale"] else ""))
    if link is not None:
        link.say_new_faults(reporter)
        summary["remote"] = link.summary()
        text += "\nimgbuild: " + link.line()
    reporter.summary(summary, text)
    code = EXIT_FAILED if counts["failed"] else EXIT_OK
    return link.exit_code(code, remote_required) if link is not None else code
