"""One build's execution, after the plan: generate or restore every step that needs it, then
derive the web variants, then write the manifest. The verb (`verbs.build`) owns the lock write;
this module owns the executor, the provider's lifetime and the journal.

Everything a target produces joins the lock as soon as it finishes, so an interrupted build
keeps it."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from imgbuild.plan.states import GENERATE

DEFAULT_JOBS = 4  # -j without DashScope (drafts, cache restores): bound by CPU and disk


_HANDED_OVER: Mapping[str, Any] = MappingProxyType({})


@dataclass
class Run:
    # Each run.executor.Outcome, once the lock holds its entries: the verb keeps what its summary
    # needs of it. Outcomes are not collected here, so a finished target's step and outcome
    # (and an edit's attached input images) are let go as the build goes on, not held to its end.
    on_outcome: Callable[[Any], None]
    derived: list[Any] = field(default_factory=list)  # run.derivatives.VariantOutcome
    interruption: Any = None  # verbs.results.Interruption
    derived_fresh: int = 0  # variants already up to date (not counting those still waiting)
    kept: int = 0  # images written and put in the lock by this run


def sweep(project: Any, targets: Iterable[Any]) -> None:
    """Before writing, remove what a killed build may have left half-way: temp files beside
    the lock, in .imgbuild/ and its journal, in output_dir and in the folders about to be
    written. Builds hold the project lock, so no live writer owns these files."""
    from imgbuild.store.atomic import sweep_temp_files

    sweep_temp_files({project.root, project.state_dir, project.output_dir,
                      *((project.output_dir / o).parent for t in targets for o in t.outputs)})
    sweep_temp_files({project.state_dir / "journal"}, prefixes=(".tmp-",))


def generate(ctx: Any, todo: Any, run: Run) -> None:
    """Run the executor over `todo` (run.executor.StepQueue), which it uses up (a no-op build
    never imports asyncio or the executor)."""
    if not todo:
        return
    from imgbuild.run.executor import Executor, Outcome
    from imgbuild.run.loop import run_executor

    project, sink = ctx.project, ctx.sink
    output_dir = str(project.output_dir)  # the stat cache's keys, as the planner joins them
    provider, journal, limiter, jobs = _provider(ctx, todo)

    # The counter is in images (outputs), like the summary's counts, and counts only lines it
    # prints: targets skipped after Ctrl-C make no line, so it never jumps or reaches the total.
    total = sum(len(s.target.outputs) for s in todo)
    shown = 0

    def record(outcome: Outcome) -> None:
        nonlocal shown
        ctx.lock.add(outcome.entries)
        run.kept += len(outcome.entries)
        for output, entry in outcome.entries.items():
            ctx.stats.remember(os.path.join(output_dir, output), entry["sha256"])
        if outcome.status != "failed":  # handed over to the lock; a partial failure's rows still read them
            outcome.entries = _HANDED_OVER
        run.on_outcome(outcome)
        if outcome.status == "skipped" and executor.interrupted:
            return  # after Ctrl-C, one closing line says what was kept, not one per target
        shown += len(outcome.step.target.outputs)
        # a candidate is stored, not written: say so, not "built"
        status = "candidate" if outcome.step.candidate and outcome.status == "built" else outcome.status
        sink.progress(shown, total, status, outcome.step, outcome.failure)
        for warning in outcome.warnings:  # e.g. an image a few pixels off, kept
            sink.notice(f"{outcome.step.target.where}: {outcome.step.target.name}: {warning}")

    executor = Executor(provider=provider, provider_name=ctx.identity,
                        cache=ctx.cache, output_dir=project.output_dir, jobs=jobs,
                        keep_going=ctx.options.keep_going, on_outcome=record, journal=journal,
                        limiter=limiter, on_stored=getattr(ctx, "on_stored", None),
                        on_event=lambda step, state: sink.event(step.target.name, step.target.outputs, state))
    executor.root = project.root
    sink.start_progress((s.target.name, s.target.request.n) for s in todo)
    try:
        stop = run_executor(executor, todo, sink, on_close=provider.close if provider else None)
    finally:
        sink.end_progress()
        for warning in dict.fromkeys(journal.warnings if journal is not None else ()):
            sink.notice(warning)
    if stop is not None:
        stop.kept = run.kept
        stop.waiting = len(journal.entries()) if journal is not None else 0
        run.interruption = stop


def _provider(ctx: Any, todo: list[Any]) -> tuple[Any, Any, Any, int]:
    """(provider or None, journal, limiter, jobs) for the steps to run."""
    from imgbuild import providers

    jobs = ctx.options.jobs
    if not any(s.action == GENERATE for s in todo):
        return None, None, None, jobs or DEFAULT_JOBS
    journal = limiter = None
    if ctx.choice.name == "dashscope":
        from imgbuild.providers.dashscope.journal import Journal
        from imgbuild.run.scheduler import Scheduler, default_jobs

        journal = Journal(ctx.project.state_dir / "journal")
        # Per-model rate and concurrency limits (model table < project `limits:`) pace the
        # build; the default -j is sized so that they, not -j, are what binds.
        limiter = Scheduler.from_settings(ctx.project.settings)
        if jobs is None:
            jobs = default_jobs((s.target.request for s in todo if s.action == GENERATE), limiter.overrides)
    provider = providers.create(ctx.choice, ctx.project.settings, journal=journal, limiter=limiter)
    return provider, journal, limiter, jobs or DEFAULT_JOBS


def derive(ctx: Any, targets: list[Any], run: Run) -> None:
    """Web derivatives of every original that is now fresh: local work, no provider."""
    if not any(t.variants for t in targets):
        return  # most projects: skip importing the derivation stack at all
    from imgbuild.run import derivatives

    done, run.derived_fresh = derivatives.derive_fresh(ctx, targets, ctx.options.jobs or DEFAULT_JOBS)
    run.derived.extend(done)


def write_manifest(project: Any, targets: list[Any], lock: Any) -> None:
    from imgbuild.store import manifest

    manifest.write(project.output_dir, project.settings, targets, lock)

