"""`imgbuild pull`: restore every output the lock names from the local cache or the remote, with
no API key and no provider call, then derive what is missing. For a fresh clone of a repository
that keeps generated images out of git. Holds the build mutex: it writes outputs and the lock."""
from __future__ import annotations

from collections import deque
from typing import Any

from imgbuild.plan.states import GENERATE, MISSING, MODIFIED, NOTHING, RESTORE, make_plan
from imgbuild.store import lockfile
from imgbuild.verbs import remote as remote_verbs
from imgbuild.verbs.common import Where, load, open_cache, project_lock, stat_cache
from imgbuild.verbs.results import PullResult, Row

NOT_FOUND = "no usable original in the local cache or the remote"
NOT_PINNED = "the lock does not pin this target as its spec stands; run `imgbuild build`"


def pull(where: Where, sink: Any, *, jobs: int | None = None, no_wait: bool = False,
         remote_required: bool = False) -> PullResult:
    with project_lock(where, sink.notice, no_wait):
        return _pull(where, sink, jobs, remote_required)


def _pull(where: Where, sink: Any, jobs: int | None, remote_required: bool) -> PullResult:
    from imgbuild import providers
    from imgbuild.run import pipeline
    from imgbuild.verbs.build import BuildOptions
    from imgbuild.verbs.build_run import Context

    project, targets = load(where)
    lock = lockfile.read(project.lock_path)
    link = remote_verbs.open_link(project.settings, sink, required=remote_required)
    with open_cache(project) as cache:
        # As a draft provider: a pinned target restores under the key the lock records,
        # whatever provider made it; no provider is ever created.
        ctx = Context(project, providers.Choice("placeholder", None), "placeholder", lock, cache,
                      stat_cache(project), sink, BuildOptions(jobs=jobs, keep_going=True), link=link)
        plan = _plan(ctx, targets)
        todo = deque(s for s in plan.steps if s.action == RESTORE)
        restores, outcomes = len(todo), []
        run = pipeline.Run(on_outcome=outcomes.append)
        pipeline.sweep(project, (s.target for s in todo))
        try:
            pipeline.generate(ctx, todo, run)
            if run.interruption is None:
                pipeline.derive(ctx, targets, run)
        finally:
            if restores or run.derived:
                lockfile.write(project.lock_path, lock)
            pipeline.write_manifest(project, targets, lock)
            ctx.stats.save()
    if link is not None:
        link.say_new_faults(sink)
    return PullResult(_rows(plan, outcomes, run), remote=link.summary() if link is not None else None)


def _plan(ctx: Any, targets: list[Any]) -> Any:
    def planned() -> Any:
        return make_plan(targets, ctx.lock, ctx.project.output_dir, provider="placeholder",
                         provider_draft=True, cache=ctx.cache, hasher=ctx.stats.sha256, root=ctx.project.root)

    plan = planned()
    damaged = [s for s in plan.steps if s.action == GENERATE and s.state in (MISSING, MODIFIED)]
    if remote_verbs.fetch_for(ctx.link, damaged, ctx.lock, ctx.cache, ctx.sink, then="cannot be restored"):
        plan = planned()
    return plan


def _rows(plan: Any, outcomes: list[Any], run: Any) -> list[Row]:
    rows = [Row(s.target.name, o, "up_to_date") for s in plan.steps if s.action == NOTHING
            for o in s.target.outputs]
    for s in plan.steps:
        if s.action == GENERATE:
            damaged = s.state in (MISSING, MODIFIED)
            status, reason = ("failed", NOT_FOUND) if damaged else ("stale", NOT_PINNED)
            rows.extend(Row(s.target.name, o, status, reason) for o in s.target.outputs)
    for o in outcomes:
        reason = o.failure.message if o.failure else ""
        rows.extend(Row(o.step.target.name, out, o.status, reason, failure=o.failure)
                    for out in o.step.target.outputs)
    rows.extend(Row(d.step.target.name, d.step.variant.output, "derived" if d.error is None else "failed",
                    d.error or d.step.reason, kind="derived") for d in run.derived)
    return rows
