"""Run the plan's steps concurrently: restore from the cache, or call the provider, then store
the originals in the cache and write the outputs. Failures become data (`Outcome`), so one bad
image does not cancel the rest; nothing here prints.

Order per generated target: provider → cache (the paid original is safe) → outputs → journal
entry discarded. A crash between any two of these loses nothing that was paid for.

Progress: `on_event(step, state)` is called on every state change of a target: queued →
submitting → waiting (an async task) → downloading → done | failed | restored | skipped.
Providers with `reports_progress` say submitting/waiting/downloading themselves (through
`base.report_progress`); for the others the executor says "submitting" when it calls them.

Interrupts: `interrupt()` (first Ctrl-C) starts nothing new, stops generations that have not
sent their paid request or only wait on an async task (its id stays in the journal), and lets
requests in flight, downloads and writes finish. `cancel()` (second Ctrl-C, or the grace period
is over) cancels everything in flight.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from imgbuild.errors import (
    CACHE_DAMAGED,
    CACHE_FULL,
    INTERRUPTED_CODE,
    NOT_STARTED,
    PARTIAL,
    WRITE_FAILED,
    Failure,
)
from imgbuild.plan.states import RESTORE, Step
from imgbuild.run import inputs
from imgbuild.providers.base import Generation, Provider, ProviderError, progress
from imgbuild.store.originals import Cache, CacheWriteError
from imgbuild.store.outputs import NotVouched, write_target

BUILT, RESTORED, FAILED, SKIPPED = "built", "restored", "failed", "skipped"

# states reported through on_event
QUEUED, SUBMITTING, WAITING, DOWNLOADING = "queued", "submitting", "waiting", "downloading"
DONE = "done"
FINAL_STATE = {BUILT: DONE, RESTORED: RESTORED, FAILED: FAILED, SKIPPED: SKIPPED}


class Stopped(Exception):
    """Raised by the progress hook in a generation that must not go on (interrupted build)."""


@dataclass(slots=True)
class Outcome:
    step: Step
    status: str
    entries: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # the lock takes them over
    failure: Failure | None = None
    images_bought: int = 0
    resumed: bool = False  # an async task paid in an earlier run, collected now
    warnings: tuple[str, ...] = ()  # it went through, but the user should know
    possibly_paid: int = 0  # requests that may have been billed although the target succeeded


INTERRUPTED_FAILURE = Failure(INTERRUPTED_CODE, "interrupted")


class StepQueue(Protocol):
    """Where the executor takes its steps from: a deque, or a build's spool (store/spool.py),
    whose steps past the first few wait on disk until taken."""

    def popleft(self) -> Step: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Step]: ...


class Executor:
    def __init__(self, *, provider: Provider | None, provider_name: str, cache: Cache,
                 output_dir: Path, jobs: int, keep_going: bool,
                 on_outcome: Callable[[Outcome], None] = lambda o: None,
                 journal: Any = None, limiter: Any = None,
                 on_event: Callable[[Step, str], None] | None = None,
                 on_stored: Callable[[str, list[bytes], dict[str, Any]], None] | None = None) -> None:
        self.provider = provider
        self.provider_name = provider_name
        self.cache = cache
        self.output_dir = output_dir
        self.jobs = max(1, jobs)
        self.keep_going = keep_going
        self.on_outcome = on_outcome
        self.journal = journal
        # The scheduler (imgbuild.run.scheduler): a per-model concurrency slot is held around each
        # generation, released on success or failure; `jobs` still caps the total in flight.
        self.limiter = limiter
        self.stop_reason: Failure | None = None  # why nothing new is started
        self.provider_calls = 0
        self.on_event = on_event
        # Write-through to a remote cache: called in the worker thread once a paid original
        # is in the local cache, so a target counts as built only after its upload was tried.
        self.on_stored = on_stored
        self.interrupted = False
        self.root: Path | None = None  # the project root, where file inputs are read
        self._active: dict[asyncio.Task[Outcome], Step] = {}
        # id(step) -> last reported state; no entry: queued (every step is, up front)
        self._states: dict[int, str] = {}
        self._abandon = threading.Event()  # seen by the threads that write outputs

    def _emit(self, step: Step, state: str) -> None:
        if self._states.get(id(step)) == state:
            return
        if state != QUEUED:
            self._states[id(step)] = state
        if self.on_event is not None:
            self.on_event(step, state)

    def interrupt(self) -> None:
        """Start nothing new; stop generations that are queued or only waiting on a task."""
        self.interrupted = True
        self.stop_reason = self.stop_reason or INTERRUPTED_FAILURE
        for task, step in list(self._active.items()):
            if step.action != RESTORE and self._states.get(id(step), QUEUED) in (QUEUED, WAITING):
                task.cancel()

    def cancel(self) -> None:
        """Cancel everything in flight (writes not yet begun are skipped)."""
        self.interrupted = True
        self.stop_reason = self.stop_reason or INTERRUPTED_FAILURE
        self._abandon.set()
        for task in list(self._active):
            task.cancel()

    @property
    def in_flight(self) -> int:
        return len(self._active)

    @property
    def paid_in_flight(self) -> int:
        """Generations whose paid request was sent and whose images are not stored yet
        (an async task only waited on is not counted: its id is in the journal)."""
        return sum(1 for step in self._active.values()
                   if step.action != RESTORE and self._states.get(id(step)) in (SUBMITTING, DOWNLOADING))

    async def run(self, steps: StepQueue) -> None:
        """Steps come in dependency order (the plan's), so a step waiting on its inputs only
        waits on steps some worker already took: no deadlock, whatever `jobs` is.

        `steps` is used up: a worker takes each step out of it, and once its outcome is handed
        to `on_outcome` nothing here refers to the step any more. A build of 50k targets then
        does not hold every finished step to its end, nor an edit's attached input images."""
        board = inputs.Board(steps)
        self._queued(steps)  # not a loop here: its variable would keep the last step alive
        workers = min(self.jobs, len(steps)) or 1

        async def worker() -> None:
            while steps:
                step = steps.popleft()
                blocked = await board.wait(step) if step.sources else None
                if blocked is not None:
                    outcome = Outcome(step, SKIPPED, failure=blocked)
                elif self.stop_reason is not None:
                    outcome = Outcome(step, SKIPPED, failure=self._not_started())
                else:
                    outcome = await self._guarded(step)
                board.finish(step, outcome.status)
                self._emit(step, FINAL_STATE[outcome.status])
                self._states.pop(id(step), None)  # nothing asks a finished step's state again
                self.on_outcome(outcome)

        await asyncio.gather(*(worker() for _ in range(workers)))

    def _queued(self, steps: StepQueue) -> None:
        for step in steps:
            self._emit(step, QUEUED)

    async def _guarded(self, step: Step) -> Outcome:
        """`_one` as its own task, so that interrupt()/cancel() can stop this target alone."""
        task = asyncio.create_task(self._one(step))
        self._active[task] = step
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # the worker itself is cancelled: take the target along
            task.cancel()
            raise
        finally:
            self._active.pop(task, None)
        if task.cancelled():
            return Outcome(step, SKIPPED, failure=INTERRUPTED_FAILURE)
        return task.result()

    def _not_started(self) -> Failure:
        reason = self.stop_reason or INTERRUPTED_FAILURE
        if reason.code == INTERRUPTED_CODE:
            return INTERRUPTED_FAILURE
        return Failure(NOT_STARTED, f"{reason.code}: {reason.message}", hint=reason.hint,
                       scope=reason.scope)

    def _hook(self, step: Step, state: str) -> None:
        """The provider's progress callback for `step` (runs in the generation's task)."""
        if self.interrupted and state in (SUBMITTING, WAITING):
            raise Stopped(state)  # no new paid request; an async task's id is in the journal
        self._emit(step, state)

    async def _one(self, step: Step) -> Outcome:
        progress.set(lambda state: self._hook(step, state))  # this task's context only
        try:
            if step.action == RESTORE:
                return await asyncio.to_thread(self._restore, step)
            # only a step with input images reads files (a thread); the rest skip the hop
            refused = (await asyncio.to_thread(inputs.attach, step, self.cache, self.root)
                       if step.sources else None)
            if refused is not None:
                if not self.keep_going:
                    self.stop_reason = Failure(refused.code, f"{step.target.name} failed (use -k to keep going)")
                return Outcome(step, FAILED, failure=refused)
            return await self._generate(step)
        except ProviderError as e:
            failure = e.failure(where=step.target.where)
            if failure.scope == "account":
                self.stop_reason = failure
            elif not self.keep_going:
                self.stop_reason = Failure(failure.code, f"{step.target.name} failed (use -k to keep going)")
            return Outcome(step, FAILED, failure=failure)
        except Stopped:
            return Outcome(step, SKIPPED, failure=INTERRUPTED_FAILURE)
        except OSError as e:
            failure = Failure(WRITE_FAILED, f"cannot write outputs: {e}", where=step.target.where)
            self.stop_reason = self.stop_reason or failure
            return Outcome(step, FAILED, failure=failure)

    def _restore(self, step: Step) -> Outcome:
        if self._abandon.is_set():
            return Outcome(step, SKIPPED, failure=INTERRUPTED_FAILURE)
        found = self.cache.get(step.key)
        if found is None:
            evicted = step.key in self.cache.evicted
            return Outcome(step, FAILED, failure=Failure(
                CACHE_DAMAGED, "the cached original " + ("was damaged and has been removed" if evicted
                                                         else "is no longer in the cache")
                + " since planning; the next build generates it again", where=step.target.where))
        images, record = found
        n = step.target.request.n
        warnings = []
        if len(images) > n:  # a surprising entry (an older build, another tool): never crash
            warnings.append(f"the cache holds {len(images)} images for n={n}: restored the first {n}")
            images = images[:n]
        expected = None if self.cache.trusted else step.locked
        try:
            entries = write_target(self.output_dir, step.target, images, step.key, step.provider, record,
                                   expected=expected)
        except NotVouched as e:
            return Outcome(step, FAILED, failure=Failure(CACHE_DAMAGED, str(e), where=step.target.where,
                                                         retryable=False))
        return Outcome(step, RESTORED, entries, warnings=tuple(warnings))

    async def _generate(self, step: Step) -> Outcome:
        if self.provider is None:  # pragma: no cover - commands never plan generation without one
            raise RuntimeError("no provider")
        self.provider_calls += 1
        request = step.target.request
        slot = self.limiter.slot(request) if self.limiter is not None else contextlib.nullcontext()
        async with slot:
            if not getattr(self.provider, "reports_progress", False):
                self._hook(step, SUBMITTING)
            generation = await self.provider.generate(request, step.key)
        if not generation.images:
            why = "; ".join(generation.failures) or "the provider returned no image"
            raise ProviderError("NoImage", why, request_id=generation.request_id)
        return await asyncio.to_thread(self._store, step, generation)

    def _store(self, step: Step, generation: Generation) -> Outcome:
        record = {
            "provider": self.provider_name,
            "request": step.target.request.pixel_fields(),
            "request_id": generation.request_id,
            "task_id": generation.task_id,
            "actual_prompt": generation.actual_prompt,
            "slots": generation.slots,
        }
        uncached = self._cache_original(step, generation, record)
        if uncached is None and self.journal is not None:
            self.journal.discard(step.key)  # the original is safe in the cache now
        if self.on_stored is not None:
            self.on_stored(step.key, generation.images, record)
        if self._abandon.is_set() and uncached is None:  # the next build restores it from the cache
            return Outcome(step, SKIPPED, failure=INTERRUPTED_FAILURE)
        if step.candidate:  # a candidate waits in the cache for `imgbuild accept`: no output yet
            return Outcome(step, BUILT, {}, images_bought=len(generation.images), resumed=generation.resumed,
                           failure=uncached)
        entries = write_target(self.output_dir, step.target, generation.images, step.key,
                               self.provider_name, record, generation.slots)
        if uncached is not None and self.journal is not None:
            self.journal.discard(step.key)  # not cached, but written and about to be locked
        bought = len(generation.images)
        n = step.target.request.n
        notes = {"warnings": tuple(generation.warnings), "possibly_paid": generation.possibly_paid}
        if bought < n:
            why = "; ".join(generation.failures) or "no reason given"
            return Outcome(step, FAILED, entries, images_bought=bought, resumed=generation.resumed,
                           failure=Failure(PARTIAL, f"{n - bought} of {n} images failed ({why}); "
                                           f"kept the {bought} that succeeded",
                                           where=step.target.where, paid=bought,
                                           possibly_paid=generation.possibly_paid),
                           warnings=notes["warnings"])
        return Outcome(step, BUILT, entries, images_bought=bought, resumed=generation.resumed,
                       failure=uncached, **notes)

    def _cache_original(self, step: Step, generation: Generation,
                        record: dict[str, Any]) -> Failure | None:
        """Store the paid original; if the cache cannot take it, stop paying for more and say
        so (returned, for the target's row), but go on: the output is written and locked."""
        try:
            self.cache.put(step.key, generation.images, record)
            return None
        except CacheWriteError as e:
            self.stop_reason = self.stop_reason or Failure(
                CACHE_FULL, f"{e}: no further image is paid for until it can store them",
                hint="free space (or fix the folder) and build again")
            return Failure(CACHE_FULL, f"written and recorded in the lock, but not cached ({e})",
                           where=step.target.where)
