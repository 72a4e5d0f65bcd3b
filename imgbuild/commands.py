"""One function per verb. Each composes the stages (load → expand → plan → execute → write)
and returns an exit code; the CLI only parses options and calls these."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgbuild import providers
from imgbuild.plan import cost
from imgbuild.store import lockfile
from imgbuild.errors import EXIT_FAILED, EXIT_OK, ImgbuildError, UsageError
from imgbuild.spec.expand import Target, expand
from imgbuild.plan.states import GENERATE, NOTHING, UP_TO_DATE, Plan, Step, make_plan
from imgbuild.spec.project import STATE_DIR, Project, find_project_file, load_project
from imgbuild.report import Reporter


@dataclass(frozen=True)
class Where:
    directory: str | None = None  # -C
    file: str | None = None  # -f


def load(where: Where) -> tuple[Project, list[Target]]:
    """The project and its expanded targets; from the plan cache when no input changed."""
    from imgbuild.plan import caches as statecache

    path = find_project_file(where.directory, where.file)
    state_dir = path.parent / STATE_DIR
    cached = statecache.load_plan(path, state_dir)
    if cached is not None:
        settings, targets = cached
        return Project(file=path, root=path.parent, settings=settings, files=[]), targets
    project = load_project(path)
    targets = expand(project)
    statecache.save_plan(path, state_dir, _plain(project.settings), project.read_files, targets)
    return project, targets


def _plain(value: Any) -> Any:
    """LocDict/LocList -> dict/list, for JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def select(targets: list[Target], patterns: tuple[str, ...]) -> list[Target]:
    """Targets whose name or any output matches one of the glob patterns (all when none)."""
    if not patterns:
        return targets
    chosen = []
    unmatched = set(patterns)
    for t in targets:
        hit = [p for p in patterns if fnmatch.fnmatchcase(t.name, p)
               or any(fnmatch.fnmatchcase(o, p) for o in t.outputs)]
        if hit:
            chosen.append(t)
            unmatched.difference_update(hit)
    if unmatched:
        import difflib

        names = [t.name for t in targets]
        hints = {p: difflib.get_close_matches(p, names, n=1) for p in sorted(unmatched)}
        text = "; ".join(f"'{p}'" + (f" (did you mean '{h[0]}'?)" if h else "") for p, h in hints.items())
        raise UsageError(f"no target matches {text}")
    return chosen


def _stat_cache(project: Project) -> Any:
    from imgbuild.plan.caches import StatCache

    return StatCache(project.state_dir)


def open_cache(project: Project) -> Any:
    from imgbuild.store.originals import for_project

    return for_project(project.root, project.settings.get("cache_dir"))


def _rows(step: Step, status: str, reason: str) -> list[dict[str, str]]:
    return [{"name": step.target.name, "output": o, "status": status, "reason": reason}
            for o in step.target.outputs]


def _counts(rows: list[dict[str, str]], *extra: str) -> dict[str, int]:
    counts = {k: 0 for k in ("built", "restored", "up_to_date", "failed", "stale", *extra)}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


# --- build / plan -------------------------------------------------------------------------------

DEFAULT_JOBS = 4  # -j without DashScope (drafts, cache restores): bound by CPU and disk


def build(where: Where, reporter: Reporter, *, no_wait: bool = False, **options: Any) -> int:
    """`_build` holding the project lock (.imgbuild/build.lock); a dry run only reads and
    never takes it. A second build waits for the first, or with `no_wait` refuses (exit 1)."""
    if options.get("dry_run"):
        return _build(where, reporter, **options)
    with _project_lock(where, reporter, no_wait):
        return _build(where, reporter, **options)


def _project_lock(where: Where, reporter: Reporter, no_wait: bool) -> Any:
    from imgbuild.store import mutex as projectlock

    state_dir = find_project_file(where.directory, where.file).parent / STATE_DIR
    return projectlock.hold(state_dir, wait=not no_wait, on_wait=reporter.notice)


def _build(where: Where, reporter: Reporter, *, patterns: tuple[str, ...] = (), jobs: int | None = None,
          dry_run: bool = False, keep_going: bool = False, provider: str | None = None,
          force: bool = False, budget: float | None = None, max_images: int | None = None) -> int:
    project, targets = load(where)
    selected = select(targets, patterns)
    choice = providers.choose(provider, project.settings)
    identity = providers.identity(choice, project.settings)
    lock = lockfile.read(project.lock_path)
    stats = _stat_cache(project)
    with open_cache(project) as cache:
        if cache.notice:
            reporter.notice(cache.notice)
        plan = make_plan(selected, lock, project.output_dir, provider=identity,
                         provider_draft=choice.name == "placeholder", cache=cache, force=force,
                         hasher=stats.sha256)
        if choice.notice and any(s.action == GENERATE for s in plan.steps):
            reporter.notice(choice.notice)
        paid = choice.name != "placeholder"
        estimate = cost.estimate(plan.steps, project.settings.get("region", cost.DEFAULT_REGION))
        if dry_run:
            from imgbuild.plan import derivatives as variants

            steps = variants.plan_variants(selected, lock, project.output_dir, stats.sha256)
            return _report_plan(plan, reporter, identity, estimate, paid, steps)
        _enforce_limits(estimate, paid, budget, max_images)
        prune = [] if patterns else plan.orphans
        todo = [s for s in plan.steps if s.action != NOTHING]
        rows = [r for s in plan.steps if s.action == NOTHING for r in _rows(s, UP_TO_DATE, "")]
        outcomes: list[Any] = []
        derived: list[Any] = []
        _sweep(project, (s.target for s in todo))
        try:
            outcomes = _execute(project, todo, lock, cache, reporter, choice=choice, identity=identity,
                                jobs=jobs, keep_going=keep_going, prune=prune, stats=stats)
            derived = _derive(project, selected, lock, cache, reporter, jobs, stats)
        finally:
            for orphan in prune:
                lock.outputs.pop(orphan, None)
            # serialising a 10k-entry lock costs ~0.3 s: not on a no-op (unless this project
            # file's entries still live in the folder's shared imgbuild.lock)
            if todo or derived or prune or lock.adopted_from is not None:
                lockfile.write(project.lock_path, lock)
            _write_manifest(project, targets, lock, stats, force=bool(todo or derived or prune))
            stats.save()
    rows.extend(r for d in derived for r in [_variant_row(d)])
    for outcome in outcomes:
        for row in _rows(outcome.step, outcome.status, outcome.error or "; ".join(outcome.step.reasons)):
            if row["status"] == "failed" and row["output"] in outcome.entries:
                # partial success (n>1): this image was written and is in the lock
                row["status"], row["reason"] = "built", "kept from a partial result"
            rows.append(row)
    counts = _counts(rows, "skipped", "derived")
    summary = {"command": "build", "provider": identity, **counts, "targets": _sorted(rows),
               "provider_calls": sum(1 for o in outcomes if o.step.action == GENERATE and o.status != "skipped"),
               "images_bought": sum(o.images_bought for o in outcomes), "pruned_lock_entries": len(prune),
               **_spending(outcomes, estimate, paid)}
    if not todo and not prune and not derived:
        text = f"imgbuild: nothing to do ({counts['up_to_date']} up to date)"
    else:
        text = (f"imgbuild: {counts['built']} built, {counts['restored']} restored from cache, "
                + (f"{counts['derived']} derived, " if counts["derived"] else "")
                + f"{counts['up_to_date']} up to date, {counts['failed']} failed"
                + (f", {counts['skipped']} not started" if counts["skipped"] else ""))
        stopped = next((o.error for o in outcomes if o.status == "skipped" and o.error), None)
        if stopped:
            text += "\nimgbuild: stopped early: " + stopped.removeprefix("not started: ") + _hint(stopped, project)
        if summary["spent"] or summary["saved_by_cache"]:
            text += (f"; spent {summary['spent']:.2f} {summary['currency']}, "
                     f"saved {summary['saved_by_cache']:.2f} by the cache")
    reporter.summary(summary, text)
    return EXIT_FAILED if counts["failed"] or counts["skipped"] else EXIT_OK


def _execute(project: Project, todo: list[Step], lock: lockfile.Lock, cache: Any, reporter: Reporter,
             *, choice: providers.Choice, identity: str, jobs: int | None, keep_going: bool,
             prune: list[str], stats: Any) -> list[Any]:
    if not todo:
        return []  # a no-op build never imports asyncio and the executor
    import asyncio

    from imgbuild.run.executor import Executor, Outcome

    done: list[Outcome] = []

    def record(outcome: Outcome) -> None:
        # Entries join the lock as each target finishes, so an interrupted build keeps them.
        lock.outputs.update(outcome.entries)
        for output, entry in outcome.entries.items():
            stats.remember(project.output_dir / output, entry["sha256"])
        done.append(outcome)
        if outcome.status == "skipped" and executor.interrupted:
            return  # after Ctrl-C, one closing line says what was kept, not one per target
        reporter.progress(len(done), len(todo), outcome.status, outcome.step, outcome.error)

    needs_provider = any(s.action == GENERATE for s in todo)
    journal = None
    limiter = None
    if needs_provider and choice.name == "dashscope":
        from imgbuild.providers.dashscope.journal import Journal
        from imgbuild.run.scheduler import Scheduler, default_jobs

        journal = Journal(project.state_dir / "journal")
        # Per-model rate and concurrency limits (model table < project `limits:`) pace the
        # build; the default -j is sized so that they, not -j, are what binds.
        limiter = Scheduler.from_settings(project.settings)
        if jobs is None:
            jobs = default_jobs((s.target.request for s in todo if s.action == GENERATE),
                                limiter.overrides)
    jobs = jobs or DEFAULT_JOBS
    provider = (providers.create(choice, project.settings, journal=journal, limiter=limiter)
                if needs_provider else None)
    executor = Executor(provider=provider, provider_name=identity, draft=choice.name == "placeholder",
                        cache=cache, output_dir=project.output_dir, jobs=jobs, keep_going=keep_going,
                        on_outcome=record, journal=journal, limiter=limiter,
                        on_event=lambda step, state: reporter.event(step.target.name, step.target.outputs, state))

    async def run() -> None:
        stop_signals = _install_interrupt(executor, reporter)
        ticker = asyncio.create_task(_tick(reporter)) if reporter.live else None
        try:
            await executor.run(todo)
        finally:
            stop_signals()
            if ticker is not None:
                ticker.cancel()
            if provider is not None:
                await provider.close()

    reporter.start_progress([(s.target.name, s.target.request.n) for s in todo])
    try:
        asyncio.run(run())  # the caller writes the lock, also when this is interrupted
    finally:
        reporter.end_progress()
        for warning in dict.fromkeys(journal.warnings if journal is not None else ()):
            reporter.notice(warning)
    if executor.interrupted:
        kept = sum(len(o.entries) for o in done)
        waiting = len(journal.entries()) if journal is not None else 0
        from imgbuild.errors import Interrupted

        raise Interrupted(
            f"interrupted; kept {kept} finished image(s) in {project.lock_path.name}"
            + (f", {waiting} submitted task(s) stay in the journal" if waiting else "")
            + "; the next build resumes" + (" them without paying again" if waiting else " from there"))
    return done


INTERRUPT_GRACE = 5.0  # seconds in-flight requests, downloads and writes get after a Ctrl-C


def _install_interrupt(executor: Any, reporter: Reporter) -> Any:
    """First SIGINT: the executor starts nothing new and in-flight work gets INTERRUPT_GRACE
    seconds to finish; a second SIGINT (or the end of the grace) cancels what is left.
    Returns the function that uninstalls the handler. Without add_signal_handler (Windows),
    Ctrl-C stays a KeyboardInterrupt and the lock is still written by the caller."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()

    def hard_stop() -> None:
        executor.cancel()

    def on_sigint() -> None:
        if executor.interrupted:
            reporter.notice("interrupted again: stopping now")
            hard_stop()
            return
        executor.interrupt()
        if executor.in_flight:
            reporter.notice(f"interrupted: starting nothing new; finishing {executor.in_flight} "
                            f"request(s) in flight (at most {INTERRUPT_GRACE:g}s; Ctrl-C again to stop now)")
        loop.call_later(INTERRUPT_GRACE, hard_stop)

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        return lambda: None

    def remove() -> None:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError, ValueError):
            pass

    return remove


async def _tick(reporter: Reporter) -> None:
    import asyncio

    while True:
        await asyncio.sleep(0.5)
        reporter.tick()


def _hint(reason: str, project: Project) -> str:
    """What to do about an account-level error that stopped the build."""
    if "InvalidApiKey" in reason or "AccessDenied" in reason:
        key_env = project.settings.get("api_key_env", providers.DEFAULT_KEY_ENV)
        region = project.settings.get("region", cost.DEFAULT_REGION)
        return (f" (check {key_env}: API keys are per region, and this project uses {region}; "
                "a workspace key also needs `workspace:`)")
    if "Arrearage" in reason or "BillOverdue" in reason or "AllocationQuota" in reason:
        return " (check the account's balance and quota in the Model Studio console)"
    return ""


def _sweep(project: Project, targets: Any) -> None:
    """Before writing, remove what a killed build may have left half-way: temp files beside
    the lock, in .imgbuild/ and its journal, in output_dir and in the folders about to be
    written. Builds hold the project lock, so no live writer owns these files."""
    from imgbuild.store.atomic import sweep_temp_files

    sweep_temp_files({project.root, project.state_dir, project.output_dir,
                      *((project.output_dir / o).parent for t in targets for o in t.outputs)})
    sweep_temp_files({project.state_dir / "journal"}, prefixes=(".tmp-",))


def _derive(project: Project, targets: list[Target], lock: lockfile.Lock, cache: Any,
            reporter: Reporter, jobs: int | None, stats: Any) -> list[Any]:
    """Web derivatives of every original that is now fresh: local work, no provider."""
    if not any(t.variants for t in targets):
        return []  # most projects: skip importing the derivation stack at all
    from imgbuild.plan import derivatives as variants

    steps = variants.plan_variants(targets, lock, project.output_dir, stats.sha256)
    todo = [s for s in steps if s.state not in (variants.UP_TO_DATE, variants.WAITING)]
    if not todo:
        return []
    from imgbuild.store.atomic import sweep_temp_files

    sweep_temp_files({(project.output_dir / s.variant.output).parent for s in todo})
    done: list[Any] = []

    def record(outcome: Any) -> None:
        done.append(outcome)
        if outcome.entry is not None:
            stats.remember(project.output_dir / outcome.step.variant.output, outcome.entry["sha256"])
        status = "derived" if outcome.error is None else "failed"
        reporter.variant_progress(len(done), len(todo), status, outcome.step, outcome.error)

    variants.run(todo, lock, project.output_dir, cache, jobs or DEFAULT_JOBS, record)
    return done


def _variant_row(outcome: Any) -> dict[str, str]:
    step = outcome.step
    return {"name": step.target.name, "output": step.variant.output,
            "status": "derived" if outcome.error is None else "failed",
            "reason": outcome.error or step.reason}


def _write_manifest(project: Project, targets: list[Target], lock: lockfile.Lock, stats: Any,
                    *, force: bool) -> None:
    from imgbuild.store import manifest
    from imgbuild.store.atomic import atomic_write_bytes

    name = manifest.wanted(project.settings, targets)
    if name is None:
        return
    path = project.output_dir / name
    if not force and path.exists():
        return  # nothing changed this run; `check` compares the manifest in full
    data = manifest.build(targets, lock)
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write_bytes(path, data)


def _enforce_limits(estimate: dict[str, Any], paid: bool, budget: float | None,
                   max_images: int | None) -> None:
    """Refuse, before any request, a build that would exceed --max-images or --budget."""
    if max_images is not None and estimate["images"] > max_images:
        raise ImgbuildError(f"this build would generate {estimate['images']} image(s), more than "
                            f"--max-images {max_images}; nothing was generated\n" + "\n".join(cost.describe(estimate)))
    if budget is not None and paid and estimate["total"] > budget:
        raise ImgbuildError(f"this build would cost {estimate['total']:.2f} {estimate['currency']}, more than "
                            f"--budget {budget:g}; nothing was generated\n" + "\n".join(cost.describe(estimate)))


def _spending(outcomes: list[Any], estimate: dict[str, Any], paid: bool) -> dict[str, Any]:
    spent = 0.0
    saved = 0.0
    region = estimate["region"]
    for o in outcomes:
        price = cost.unit_price(o.step.target.request.model, region)
        if paid:
            spent += o.images_bought * price
        if o.status == "restored":
            saved += o.step.target.request.n * price
    return {"currency": estimate["currency"], "spent": round(spent, 6), "saved_by_cache": round(saved, 6)}


def _report_plan(plan: Plan, reporter: Reporter, provider: str, estimate: dict[str, Any],
                 paid: bool, variant_steps: list[Any]) -> int:
    reporter.plan(plan, show_fresh=reporter.verbosity > 0)
    pending = [v for v in variant_steps if v.state != "up_to_date"]
    noted: set[str] = set()
    for v in pending:
        reporter.line(f"{'derive (' + v.state + ')':<24} {v.target.name} -> {v.variant.output}")
        if v.state != "waiting":
            reporter.line(f"    {v.reason}")
        if v.target.name not in noted:
            noted.add(v.target.name)
            for note in v.target.notes:
                reporter.line(f"    note: {note}")
    if estimate["images"]:
        reporter.line("cost" + ("" if paid else " (with a real provider; placeholder drafts are free)") + ":")
        for line in cost.describe(estimate):
            reporter.line(line)
    rows = []
    for step in plan.steps:
        status = step.state
        for row in _rows(step, status, "; ".join(step.reasons)):
            row["action"] = step.action
            rows.append(row)
    for v in variant_steps:
        rows.append({"name": v.target.name, "output": v.variant.output, "status": v.state,
                     "reason": v.reason, "action": "none" if v.state == "up_to_date" else "derive"})
    counts = _counts(rows)
    counts["stale"] = sum(1 for r in rows if r["status"] != UP_TO_DATE)
    to_generate = sum(s.target.request.n for s in plan.steps if s.action == GENERATE)
    to_restore = sum(1 for s in plan.steps if s.action == "restore")
    summary = {"command": "plan", "provider": provider, **counts, "targets": _sorted(rows),
               "orphans": plan.orphans, "images_to_generate": to_generate,
               "cost": {**estimate, "paid": paid}}
    text = (f"imgbuild: {to_generate} image(s) to generate, {to_restore} target(s) to restore from cache, "
            f"{counts['up_to_date']} up to date" + (f", {len(plan.orphans)} orphaned lock entries" if plan.orphans else ""))
    reporter.summary(summary, text)
    return EXIT_OK


def _sorted(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(rows, key=lambda r: (r["output"], r["name"]))


# --- check ---------------------------------------------------------------------------------------

def check(where: Where, reporter: Reporter, *, allow_drafts: bool = False) -> int:
    """Offline: specs vs lock vs files. Never opens the cache, never needs a key or network."""
    project, targets = load(where)
    lock = lockfile.read(project.lock_path)
    stats = _stat_cache(project)
    plan = make_plan(targets, lock, project.output_dir, provider="placeholder", provider_draft=True,
                     cache=None, hasher=stats.sha256)
    rows: list[dict[str, str]] = []
    for step in plan.steps:
        for output in step.target.outputs:
            status, reason = _check_status(step, output, allow_drafts)
            rows.append({"name": step.target.name, "output": output, "status": status, "reason": reason})
    rows.extend(_check_variants(project, targets, lock, stats, allow_drafts))
    stats.save()
    for orphan in plan.orphans:
        entry = lock.outputs[orphan]
        rows.append({"name": str(entry.get("name", "")), "output": orphan, "status": "orphaned",
                     "reason": "in the lock but produced by no spec; run `imgbuild build` to prune it"})
    bad = [r for r in rows if r["status"] != UP_TO_DATE]
    for row in _sorted(bad):
        reporter.line(f"{row['status']:<9} {row['output']} ({row['name']}): {row['reason']}")
    counts = _counts(rows, "missing", "modified", "draft", "orphaned")
    counts["stale"] = len(bad)
    summary = {"command": "check", **counts, "targets": _sorted(rows)}
    if bad:
        text = f"imgbuild: {len(bad)} of {len(rows)} outputs need `imgbuild build`"
    else:
        text = f"imgbuild: all {len(rows)} outputs are up to date"
    reporter.summary(summary, text)
    return EXIT_FAILED if bad else EXIT_OK


def _check_variants(project: Project, targets: list[Target], lock: lockfile.Lock, stats: Any,
                    allow_drafts: bool) -> list[dict[str, str]]:
    """Rows for web derivatives and the manifest (only for projects that have them)."""
    if not any(t.variants for t in targets) and not any(t.alt for t in targets) and not project.settings.get("manifest"):
        return []
    from imgbuild.store import manifest
    from imgbuild.plan import derivatives as variants

    status_of = {variants.NEW: "stale", variants.CHANGED: "stale", variants.WAITING: "stale",
                 variants.MISSING: "missing", variants.MODIFIED: "modified", variants.UP_TO_DATE: UP_TO_DATE}
    rows = []
    for s in variants.plan_variants(targets, lock, project.output_dir, stats.sha256):
        status, reason = status_of[s.state], s.reason
        if status == UP_TO_DATE and not allow_drafts and (lock.get(s.variant.output) or {}).get("draft"):
            status, reason = "draft", "derived from a placeholder draft"
        rows.append({"name": s.target.name, "output": s.variant.output, "status": status, "reason": reason})
    name = manifest.wanted(project.settings, targets)
    if name is not None:
        try:
            current = (project.output_dir / name).read_bytes()
        except OSError:
            current = None
        if current is None:
            rows.append({"name": "", "output": name, "status": "missing", "reason": "the manifest is missing"})
        elif current != manifest.build(targets, lock):
            rows.append({"name": "", "output": name, "status": "stale",
                         "reason": "the manifest does not match the lock"})
        else:
            rows.append({"name": "", "output": name, "status": UP_TO_DATE, "reason": ""})
    return rows


def _check_status(step: Step, output: str, allow_drafts: bool) -> tuple[str, str]:
    if step.state in ("new", "changed"):
        return "stale", "; ".join(step.reasons)
    if output in step.damage:
        kind = step.damage[output]
        return kind, "the file is missing" if kind == "missing" else "the file differs from its lock hash (edited by hand?)"
    if step.state == UP_TO_DATE and step.draft and not allow_drafts:
        return "draft", "placeholder draft (build with a real provider, or pass --allow-drafts)"
    return UP_TO_DATE, ""


# --- validate / clean / schema -----------------------------------------------------------------

def validate(where: Where, reporter: Reporter) -> int:
    project = load_project(find_project_file(where.directory, where.file))  # never from a cache
    targets = expand(project)
    summary = {"command": "validate", "files": len(project.files), "targets": len(targets), "problems": []}
    reporter.summary(summary, f"imgbuild: {len(project.files)} file(s), {len(targets)} target(s): valid")
    return EXIT_OK


def clean(where: Where, reporter: Reporter, *, yes: bool = False, no_wait: bool = False) -> int:
    if not yes:  # only lists: reads like `plan`, no lock
        return _clean(where, reporter, yes=False)
    with _project_lock(where, reporter, no_wait):  # never delete under a running build
        return _clean(where, reporter, yes=True)


def _clean(where: Where, reporter: Reporter, *, yes: bool = False) -> int:
    project, targets = load(where)
    from imgbuild.store import manifest

    produced = {o for t in targets for o in (*t.outputs, *(v.output for v in t.variants))}
    manifest_name = manifest.wanted(project.settings, targets)
    if manifest_name:
        produced.add(manifest_name)
    out_dir = project.output_dir
    stray: list[str] = []
    if out_dir.is_dir():
        for dirpath, dirnames, filenames in os.walk(out_dir):
            dirnames.sort()
            for name in sorted(filenames):
                rel = Path(dirpath, name).relative_to(out_dir).as_posix()
                if rel not in produced:
                    stray.append(rel)
    lock = lockfile.read(project.lock_path)
    orphans = sorted(o for o in lock.outputs if o not in produced)
    for rel in stray:
        reporter.line(f"{'deleted' if yes else 'would delete'}: {rel}")
    for orphan in orphans:
        reporter.line(f"{'dropped' if yes else 'would drop'} lock entry: {orphan}")
    if yes:
        from imgbuild.store.outputs import remove_output

        for rel in stray:
            remove_output(out_dir, rel)
        for orphan in orphans:
            lock.outputs.pop(orphan)
        if orphans:
            lockfile.write(project.lock_path, lock)
    summary = {"command": "clean", "files": stray, "lock_entries": orphans, "deleted": yes}
    if not stray and not orphans:
        text = "imgbuild: nothing to clean"
    elif yes:
        text = f"imgbuild: deleted {len(stray)} file(s), dropped {len(orphans)} lock entr(ies)"
    else:
        text = f"imgbuild: {len(stray)} file(s) and {len(orphans)} lock entr(ies) to clean; run with --yes to delete"
    reporter.summary(summary, text)
    return EXIT_OK


def schema_text() -> str:
    from importlib.resources import files

    return files("imgbuild").joinpath("_schemas/imgbuild.schema.json").read_text("utf-8")


def html(where: Where, reporter: Reporter, *, name: str, sizes: str, base_url: str,
         css_class: str | None) -> int:
    """Print the `<picture>` markup of one image, from the manifest the last build wrote."""
    import json

    from imgbuild.store import manifest

    project, targets = load(where)
    manifest_name = manifest.wanted(project.settings, targets)
    if manifest_name is None:
        raise UsageError("this project writes no manifest: give images `formats`/`widths` (or `alt`), "
                         "or set `manifest: manifest.json`")
    path = project.output_dir / manifest_name
    try:
        images = json.loads(path.read_bytes())["images"]
    except (OSError, ValueError, KeyError):
        raise UsageError(f"{path}: no readable manifest; run `imgbuild build` first") from None
    if name not in images:
        import difflib

        hint = difflib.get_close_matches(name, list(images), n=1)
        raise UsageError(f"no image named '{name}' in {manifest_name}" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    markup = manifest.picture(images[name], sizes=sizes, base_url=base_url, css_class=css_class)
    reporter.summary({"command": "html", "name": name, "html": markup}, markup)
    return EXIT_OK
