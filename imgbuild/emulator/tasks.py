"""Async tasks: PENDING -> RUNNING -> SUCCEEDED/FAILED (or CANCELED while PENDING).

Each submitted task gets one asyncio coroutine on the emulator loop. A per-model FIFO slot
pool enforces the concurrent-task limit: like the real service, tasks beyond it simply stay
PENDING until a running task of the same model finishes (§8).
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import tables
from .faults import Fault
from .images import ImageSpec
from .protocol import SLOT_TIMEOUT, GenRequest, Slot, succeeded_output
from .state import State, now_str

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")


def produce_slots(req: GenRequest, state: State, origin: str, *, task: bool = False) -> list[Slot]:
    """Create the requested images (URLs; pixels are rendered lazily on download)."""
    failing = set(state.config.fail_slots) if req.n > 1 else set()
    dx, dy = (list(state.config.result_size_offset) + [0, 0])[:2]
    slots = []
    for i in range(req.n):
        if i in failing:
            slots.append(Slot(i, fault=SLOT_TIMEOUT))
            continue
        spec = ImageSpec(req.model.name, req.image_prompt, req.seed + i, i,
                         max(1, req.width + int(dx)), max(1, req.height + int(dy)), req.watermark,
                         state.config.image_salt, req.images[0] if req.images else None)
        slots.append(Slot(i, url=state.store_image(spec, origin, task=task)))
    return slots


@dataclass
class Task:
    task_id: str
    req: GenRequest
    origin: str
    submit_time: float = field(default_factory=time.time)
    status: str = "PENDING"
    scheduled_time: float | None = None
    end_time: float | None = None
    slots: list[Slot] = field(default_factory=list)
    fault: Fault | None = None
    runner: asyncio.Task[None] | None = None
    reported: bool = False  # a query has shown it SUCCEEDED (later queries re-sign URLs)

    def output(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(output, usage) as GET /tasks/{id} shows them right now."""
        out: dict[str, Any] = {
            "task_id": self.task_id,
            "task_status": self.status,
            "submit_time": now_str(self.submit_time),
        }
        if self.scheduled_time is not None:
            out["scheduled_time"] = now_str(self.scheduled_time)
        if self.end_time is not None:
            out["end_time"] = now_str(self.end_time)
        if self.status == "SUCCEEDED":
            extra, usage = succeeded_output(self.req, self.slots)
            out.update(extra)
            return out, usage
        if self.status == "FAILED" and self.fault is not None:
            out["code"] = self.fault.code
            out["message"] = self.fault.message
            ok = sum(1 for s in self.slots if s.url)
            out["task_metrics"] = {"TOTAL": self.req.n, "SUCCEEDED": ok, "FAILED": self.req.n - ok}
        return out, None


class TaskManager:
    def __init__(self, state: State) -> None:
        self.state = state
        self.tasks: dict[str, Task] = {}
        self._running: collections.Counter[str] = collections.Counter()
        self._waiting: dict[str, collections.deque[str]] = collections.defaultdict(
            collections.deque
        )
        self._cond: asyncio.Condition | None = None

    def submit(self, req: GenRequest, origin: str) -> Task:
        task = Task(str(uuid.uuid4()), req, origin)
        self.tasks[task.task_id] = task
        self.state.log_task(task.task_id, model=req.model.name, submit=task.submit_time)
        task.runner = asyncio.get_running_loop().create_task(self._run(task))
        return task

    def get(self, task_id: str) -> Task | None:
        task = self.tasks.get(task_id)
        if task is not None and time.time() - task.submit_time > self.state.config.task_ttl:
            return None  # expired tasks read as UNKNOWN, like after 24 h on the real service
        return task

    def cancel(self, task_id: str) -> str:
        """'ok', 'unknown' or the current (non-PENDING) status."""
        task = self.get(task_id)
        if task is None:
            return "unknown"
        if task.status != "PENDING":
            return task.status
        task.status = "CANCELED"
        task.end_time = time.time()
        if task.runner is not None:
            task.runner.cancel()
        return "ok"

    async def shutdown(self) -> None:
        runners = [t.runner for t in self.tasks.values() if t.runner and not t.runner.done()]
        for r in runners:
            r.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    # ---- lifecycle ---------------------------------------------------------------------

    async def _run(self, task: Task) -> None:
        model = task.req.model
        try:
            if self.state.config.pending_time > 0:
                await asyncio.sleep(self.state.config.pending_time)
            await self._acquire(task)
        except asyncio.CancelledError:
            return  # canceled while PENDING (or emulator shutting down)
        self.state.start_work(model.name)
        try:
            task.status = "RUNNING"
            task.scheduled_time = time.time()
            await self._run_for_task_duration(task)
            self._finish(task)
        finally:
            self.state.end_work(model.name)
            await self._release(model.name)

    async def _run_for_task_duration(self, task: Task) -> None:
        # Re-read in short steps, so emu.configure(task_duration=...) also speeds up (or
        # slows down) tasks that are already RUNNING, like the limit check in _acquire.
        assert task.scheduled_time is not None
        while True:
            left = task.scheduled_time + self.state.config.task_duration - time.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.1))

    def _finish(self, task: Task) -> None:
        fault = self.state.pop_fault("fail_tasks_next")
        if fault is None:
            task.slots = produce_slots(task.req, self.state, task.origin, task=True)
            ok = sum(1 for s in task.slots if s.url)
            if ok == 0:
                fault = SLOT_TIMEOUT
            else:
                self.state.bill(task.req.model.name, ok)  # failed slots are not billed
        task.fault = fault
        task.status = "FAILED" if fault else "SUCCEEDED"
        task.end_time = time.time()
        self.state.log_task(task.task_id, end=task.end_time, status=task.status)

    def _limit(self, model_name: str) -> int | None:
        model = tables.MODELS.get(model_name)
        documented = tables.documented_limit(model, self.state.config.region).tasks if model else 0
        return self.state.config.task_limit_for(model_name, documented)

    async def _acquire(self, task: Task) -> None:
        name = task.req.model.name
        cond = self._condition()
        waiting = self._waiting[name]
        waiting.append(task.task_id)
        try:
            async with cond:
                while True:
                    limit = self._limit(name)
                    if waiting[0] == task.task_id and (
                        limit is None or self._running[name] < limit
                    ):
                        break
                    try:
                        # The timeout re-checks the limit, which emu.configure() may raise.
                        await asyncio.wait_for(cond.wait(), timeout=0.1)
                    except asyncio.TimeoutError:
                        pass
            self._running[name] += 1
        finally:
            waiting.remove(task.task_id)
            async with cond:
                cond.notify_all()

    async def _release(self, model_name: str) -> None:
        self._running[model_name] -= 1
        cond = self._condition()
        async with cond:
            cond.notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond
