"""Run the plan's steps concurrently: restore from the cache, or call the provider, then store
the originals in the cache and write the outputs. Failures become data (`Outcome`), so one bad
image does not cancel the rest; nothing here prints.

Order per generated target: provider → cache (the paid original is safe) → outputs → journal
entry discarded. A crash between any two of these loses nothing that was paid for.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgbuild.cache import Cache
from imgbuild.outputs import write_target
from imgbuild.plan import RESTORE, Step
from imgbuild.providers.base import Generation, Provider, ProviderError

BUILT, RESTORED, FAILED, SKIPPED = "built", "restored", "failed", "skipped"


@dataclass
class Outcome:
    step: Step
    status: str
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    images_bought: int = 0


class Executor:
    def __init__(self, *, provider: Provider | None, provider_name: str, draft: bool, cache: Cache,
                 output_dir: Path, jobs: int, keep_going: bool,
                 on_outcome: Callable[[Outcome], None] = lambda o: None,
                 journal: Any = None, limiter: Any = None) -> None:
        self.provider = provider
        self.provider_name = provider_name
        self.draft = draft
        self.cache = cache
        self.output_dir = output_dir
        self.jobs = max(1, jobs)
        self.keep_going = keep_going
        self.on_outcome = on_outcome
        self.journal = journal
        # The scheduler (imgbuild.scheduler): a per-model concurrency slot is held around each
        # generation, released on success or failure; `jobs` still caps the total in flight.
        self.limiter = limiter
        self.stop_reason: str | None = None
        self.provider_calls = 0

    async def run(self, steps: list[Step]) -> list[Outcome]:
        queue: asyncio.Queue[Step] = asyncio.Queue()
        for step in steps:
            queue.put_nowait(step)
        outcomes: list[Outcome] = []

        async def worker() -> None:
            while not queue.empty():
                step = queue.get_nowait()
                if self.stop_reason is not None:
                    outcome = Outcome(step, SKIPPED, error=f"not started: {self.stop_reason}")
                else:
                    outcome = await self._one(step)
                outcomes.append(outcome)
                self.on_outcome(outcome)

        await asyncio.gather(*(worker() for _ in range(min(self.jobs, len(steps)) or 1)))
        return outcomes

    async def _one(self, step: Step) -> Outcome:
        try:
            if step.action == RESTORE:
                return await asyncio.to_thread(self._restore, step)
            return await self._generate(step)
        except ProviderError as e:
            if e.fatal:
                self.stop_reason = f"{e.code}: {e.message}"
            elif not self.keep_going:
                self.stop_reason = f"{step.target.name} failed (use -k to keep going)"
            rid = f" (request id {e.request_id})" if e.request_id else ""
            return Outcome(step, FAILED, error=f"{e.code}: {e.message}{rid}")
        except OSError as e:
            self.stop_reason = self.stop_reason or f"cannot write outputs: {e}"
            return Outcome(step, FAILED, error=f"cannot write: {e}")

    def _restore(self, step: Step) -> Outcome:
        found = self.cache.get(step.key)
        if found is None:
            return Outcome(step, FAILED, error="the cache entry vanished or is damaged; run the build again")
        images, record = found
        entries = write_target(self.output_dir, step.target, images, step.key, step.provider,
                               step.draft, record)
        return Outcome(step, RESTORED, entries)

    async def _generate(self, step: Step) -> Outcome:
        if self.provider is None:  # pragma: no cover - commands never plan generation without one
            raise RuntimeError("no provider")
        self.provider_calls += 1
        request = step.target.request
        slot = self.limiter.slot(request) if self.limiter is not None else contextlib.nullcontext()
        async with slot:
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
        }
        self.cache.put(step.key, generation.images, record)
        if self.journal is not None:
            self.journal.discard(step.key)  # the original is safe in the cache now
        entries = write_target(self.output_dir, step.target, generation.images, step.key,
                               self.provider_name, self.draft, record)
        bought = len(generation.images)
        n = step.target.request.n
        if bought < n:
            why = "; ".join(generation.failures) or "no reason given"
            return Outcome(step, FAILED, entries,
                           error=f"{n - bought} of {n} images failed ({why}); kept the {bought} that succeeded",
                           images_bought=bought)
        return Outcome(step, BUILT, entries, images_bought=bought)
