"""The body of `imgbuild build` once the no-op snapshot could not answer (verbs.build): load and
select the targets, plan them against the lock, the caches and the remote, run the plan, write
the lock, the manifest and, when nothing was left to do, a new snapshot."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from imgbuild import providers
from imgbuild.errors import ImgbuildError, LimitExceeded
from imgbuild.plan import cost
from imgbuild.plan.states import GENERATE, PENDING, UP_TO_DATE, Step, Work, make_plan
from imgbuild.store import lockfile
from imgbuild.store.lockfile import is_final
from imgbuild.verbs import remote as remote_verbs
from imgbuild.verbs.common import (
    Where,
    adopt,
    as_made,
    load,
    lock_path,
    lock_stamp,
    named,
    open_cache,
    project_folder,
    record_pending,
    remember_noop,
    select,
    stat_cache,
)
from imgbuild.verbs.results import BuildResult, Money, PlanResult, Row, Rows, row_spool


@dataclass
class Context:
    """One build's collaborators, passed down instead of a dozen arguments."""

    project: Any  # spec.project.Project (not imported: this module is at its limit of 9)
    choice: Any  # providers.Choice
    identity: str
    lock: lockfile.Lock
    cache: Any
    stats: Any
    sink: Any  # report.Reporter (progress, notices)
    options: Any  # verbs.build.BuildOptions (not imported: this module is at its limit of 9)
    notices: list[str] = field(default_factory=list)
    link: Any = None  # verbs.remote.Link when the project has a remote cache
    on_stored: Any = None  # the executor's write-through to it (uploads each paid original)


# Targets (and steps to run) a build keeps in memory beyond as many as its lock has entries:
# the rest wait on disk, so a first build's memory does not grow with its number of targets
# (store/spool.py). A build whose lock is full holds its targets, as its lock's entries.
SPOOL_MARGIN = 1000


def run_build(where: Where, sink: Any, options: Any) -> BuildResult | PlanResult:
    # The lock before the specs: how much it holds is how many targets stay in memory.
    locked, lock, damaged = _read_lock(where)
    project, targets = load(where, keep=len(lock.outputs) + SPOOL_MARGIN)
    if options.candidates:  # for the targets named, not for those they read (their inputs)
        from dataclasses import replace

        wanted = {t.name for t in named(targets, options.patterns)}
        targets = [replace(t, candidates=options.candidates) if t.request.n == 1 and t.name in wanted else t
                   for t in targets]
    selected = select(targets, options.patterns)
    # plan (a dry run) sends nothing, so it needs no key: it shows what a keyed build would do
    choice = providers.choose(options.provider, project.settings, need_key=not options.dry_run)
    identity = providers.identity(choice, project.settings)
    if damaged is not None:  # said after the specs' mistakes and the provider's, as it always was
        raise damaged
    targets, selected = adopt(targets, lock), adopt(selected, lock)
    stats = stat_cache(project)
    remote = None
    if options.shard or options.remote_required or remote_verbs.configured(project.settings):
        if options.shard:
            selected = remote_verbs.shard_targets(selected, identity, options.shard)
        if not options.dry_run:  # a plan shows what the local cache holds; it asks no store
            remote = remote_verbs.open_link(project.settings, sink, required=options.remote_required)
    with open_cache(project) as cache:
        if cache.notice:
            sink.notice(cache.notice)
        ctx = Context(project, choice, identity, lock, cache, stats, sink, options, link=remote,
                      on_stored=remote_verbs.write_through(remote, identity))
        plan = _plan(ctx, selected)
        # a dry run's plan is a list of steps; a build's, its Work, whose todo is what it runs
        steps = plan.steps if options.dry_run else plan.steps.todo
        if choice.notice and any(s.action == GENERATE for s in steps):
            sink.notice(choice.notice)
        estimate = cost.estimate(steps, project.settings.get("region", cost.DEFAULT_REGION))
        if options.dry_run:
            from imgbuild.verbs.plan import plan_result

            return plan_result(ctx, plan, selected, estimate)
        _enforce_limits(estimate, choice.name != "placeholder", options)
        work = plan.steps
        work.orphans = plan.orphans
        del plan, steps  # the executor uses up work.todo: each step is let go once it has finished
        result = _run(ctx, work, targets, selected, estimate)
    if result.nothing_to_do and remote is None and not options.patterns and not options.force:
        remember_noop(project, "build", lock, locked, {"provider": identity, "count": result.counts[UP_TO_DATE]},
                      targets, stats)
    return result


def _read_lock(where: Where) -> tuple[Any, lockfile.Lock, ImgbuildError | None]:
    """(its stamp, the lock, None), the stamp taken before it is read; a damaged lock gives
    (stamp, an empty lock, its error)."""
    path = lock_path(where)
    stamp = lock_stamp(path)
    try:
        return stamp, lockfile.read(path), None
    except ImgbuildError as e:
        return stamp, lockfile.Lock(), e


def _plan(ctx: Context, selected: list[Any]) -> Any:
    """The plan; with a remote, what the plan would pay for is first looked up there (and,
    once verified, put into the local cache, from which the plan then restores it)."""
    def planned() -> Any:
        into = None if ctx.options.dry_run else Work(ctx.project.state_dir, len(ctx.lock.outputs) + SPOOL_MARGIN)
        return make_plan(selected, ctx.lock, ctx.project.output_dir, provider=ctx.identity,
                         provider_draft=ctx.choice.name == "placeholder", cache=ctx.cache,
                         force=ctx.options.force, hasher=ctx.stats.sha256, root=ctx.project.root,
                         into=into)

    plan = planned()
    steps = plan.steps if ctx.options.dry_run else plan.steps.todo
    if ctx.link is not None and any(s.action == GENERATE for s in steps):
        if remote_verbs.fetch_for(ctx.link, steps, ctx.lock, ctx.cache, ctx.sink,
                                  then="falls back to the next source"):
            del steps
            plan = planned()
    return plan


def _run(ctx: Context, work: Work, targets: list[Any], selected: list[Any],
         estimate: dict[str, Any]) -> BuildResult:
    from imgbuild.run import pipeline as execute

    project, lock = ctx.project, ctx.lock
    prune = [] if ctx.options.patterns or ctx.options.shard else work.orphans
    ran = bool(work.todo)
    pending_before = json.dumps(lock.pending, sort_keys=True)
    picks = {o: e for o, e in lock.outputs.items() if "picked_from" in e}
    tally = Tally(estimate, paid=ctx.choice.name != "placeholder",
                  rows=row_spool(project.state_dir, len(lock.outputs) + SPOOL_MARGIN))
    run = execute.Run(on_outcome=tally.add)
    execute.sweep(project, (s.target for s in work.todo))
    # A moved output_dir leaves the old tree behind: remember its files with the hashes the
    # lock has now, before this build replaces entries of the same name with new ones.
    moved = lockfile.retire(project.state_dir, lock, project_folder(project), [])
    lock.park(project.state_dir)  # what generation makes waits on disk until the lock is written
    try:
        execute.generate(ctx, work.todo, run)
        if run.interruption is None:
            execute.derive(ctx, as_made(selected, lock), run)
    finally:
        lockfile.keep_pins(lock, picks)
        lockfile.retire(project.state_dir, lock, project_folder(project), prune)
        for orphan in prune:
            lock.outputs.pop(orphan, None)
        if any(t.candidates > 1 for t in selected) or lock.pending:
            record_pending(work.waiting, selected, lock, ctx.cache, project, ctx.sink.notice)
        # serialising a 10k-entry lock costs ~0.3 s: not on a no-op (unless this project
        # file's entries still live in the folder's shared imgbuild.lock)
        if (ran or run.derived or prune or moved or lock.adopted_from is not None
                or json.dumps(lock.pending, sort_keys=True) != pending_before):
            lockfile.write(project.lock_path, lock)
        execute.write_manifest(project, targets, lock)
        ctx.stats.save()
        if ctx.options.shard:
            remote_verbs.write_fragment(project, lock, selected, ctx.options.shard)
    result = _result(ctx, run, tally, work.fresh, prune, nothing=not (ran or prune or run.derived))
    result.changed.extend(pending_rows(work.waiting))
    result.nothing_to_do = result.nothing_to_do and not any(r.status == PENDING for r in result.changed)
    result.pending_fails = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if run.interruption is None:  # derivation ran: the fresh ones and the ones it touched
        result.derived_files = run.derived_fresh + len(run.derived)
    return result


def pending_rows(steps: list[Step]) -> list[Row]:
    """One row per target left waiting for a pick (its output is not written)."""
    rows, seen = [], set()
    for step in steps:
        if step.state == PENDING and step.target.name not in seen:
            seen.add(step.target.name)
            why = next((r for r in step.reasons if r.startswith(("pending", "the accepted"))), "pending")
            rows.append(Row(step.target.name, step.target.outputs[0], PENDING, why))
    return rows


class Tally:
    """What the summary needs of each target the executor finished, taken as its outcome
    comes (in the same order as before, so money adds up to the same floats): rows, calls,
    images and money. The outcomes, with their steps and requests, are not kept."""

    def __init__(self, estimate: dict[str, Any], paid: bool, rows: Any) -> None:
        self.rows = rows  # a list, or a spool (verbs.results.row_spool)
        self.paid, self.region = paid, estimate["region"]
        # Money counted once, where it was spent: images billed in this run; tasks paid in an
        # earlier run and collected now as `resumed`; restores as saved. Drafts cost nothing.
        self.money = Money(estimate["currency"])
        self.provider_calls = self.images_bought = self.images_resumed = self.possibly_paid = 0
        self.stopped: Any = None  # errors.Failure

    def add(self, outcome: Any) -> None:
        step = outcome.step
        if not step.candidate or outcome.status == "failed":  # candidates: one pending row per target
            reason = "; ".join(step.reasons)
            for output in step.target.outputs:
                if outcome.status == "failed" and output in outcome.entries:
                    # partial success (n>1): this image was written and is in the lock
                    self.rows.append(Row(step.target.name, output, "built", "kept from a partial result"))
                else:
                    self.rows.append(Row(step.target.name, output, outcome.status, reason,
                                         failure=outcome.failure))
        # what stopped submissions: a target never started for it. A dependant skipped because
        # its input failed (InputFailed) was not stopped by anything but that input: not the reason.
        failure = outcome.failure
        if (self.stopped is None and outcome.status == "skipped" and failure
                and failure.code not in ("Interrupted", "InputFailed")):
            self.stopped = failure
        if step.action == GENERATE and outcome.status != "skipped":
            self.provider_calls += 1
        self.possibly_paid += failure.possibly_paid if failure else outcome.possibly_paid
        if self.paid:
            self._spend(outcome)

    def _spend(self, outcome: Any) -> None:
        step, money = outcome.step, self.money
        price = cost.unit_price(step.target.request.model, self.region) or 0.0  # unknown: not counted
        if outcome.resumed:
            self.images_resumed += outcome.images_bought
            money.resumed += outcome.images_bought * price
        else:
            self.images_bought += outcome.images_bought
            money.spent += outcome.images_bought * price
        if outcome.status == "restored" and is_final(step.provider):  # a restored draft saved nothing
            money.saved_by_cache += step.target.request.n * price


def _result(ctx: Context, run: Any, tally: Tally, fresh: list[Step], prune: list[str],
            nothing: bool) -> BuildResult:
    rows = Rows([Row(d.step.target.name, d.step.variant.output, "derived" if d.error is None else "failed",
                     d.error or d.step.reason, kind="derived") for d in run.derived], tally.rows)
    return BuildResult(
        provider=ctx.identity, changed=rows, fresh=fresh, provider_calls=tally.provider_calls,
        images_bought=tally.images_bought, images_resumed=tally.images_resumed,
        possibly_paid=tally.possibly_paid, pruned=prune, money=tally.money, stopped=tally.stopped,
        interrupted=run.interruption, nothing_to_do=nothing, notices=ctx.notices,
        remote=_remote_summary(ctx), shard=ctx.options.shard)


def _remote_summary(ctx: Context) -> Any:
    if ctx.link is None:
        return None
    ctx.link.say_new_faults(ctx.sink)  # failed uploads, said once each
    return ctx.link.summary()


def _enforce_limits(estimate: dict[str, Any], paid: bool, options: Any) -> None:
    """Refuse, before any request, a build that would exceed --max-images or --budget."""
    if options.max_images is not None and estimate["images"] > options.max_images:
        raise LimitExceeded("--max-images", options.max_images, estimate)
    if options.budget is not None and paid and estimate.get("price_unknown"):
        raise ImgbuildError(f"--budget cannot be checked: no {estimate['region']} price is known "
                            f"for {', '.join(estimate['price_unknown'])}; nothing was generated")
    if options.budget is not None and paid and estimate["total"] > options.budget:
        raise LimitExceeded("--budget", options.budget, estimate)
