"""Pacing paid submissions so a build runs as fast as the account's limits allow, and no faster.

DashScope limits are per account and per model (../shared/dashscope-api.md §8): R generation
submissions per second, and C concurrent tasks (an async task counts from submission until it
finishes; qwen sync calls are unlimited). A build that ignores them earns 429s, retries and
backoff sleeps; one that is too careful leaves paid-for throughput unused. `Scheduler` is the
provider's `RateLimiter` (submit/throttled) plus the concurrency slot the Executor holds around
each generation.

Rate (per model). Two rules, both must allow a submission:

* Hard cap, a sliding window: never more than L = max(1, floor(R * W)) submissions in any
  W = max(1 s, 1/R) (so 10/s means 10 per second, 2/minute means 1 per 30 s) -- the same window
  the service (and the emulator) counts in. The window is measured `margin` longer than W
  because the server stamps arrivals, not our sends: without it network jitter turns the
  (L+1)-th submission, sent exactly W after the first, into a 429.
  At full rate bursts of L are allowed, which is what lets a build start at full speed.
* AIMD on 429: each 429 (at most one cut per window: one overload, one cut) multiplies the
  model's rate by `decrease` (floor `min_factor` * R); below R, submissions are also spaced at
  1/rate. After a run of about one window's worth of submissions without a 429 the rate grows
  by `increase` * R, back up to R. So a project limit set too high (another build sharing the
  account, an account with lower quotas) converges on what the service really allows.
  The throttled request itself waits the server's Retry-After (the provider does that).

Concurrency (per model): `slot(request)` is held for the whole generation -- waiting for a rate
token, the task running on the service, polling, downloading. It is taken before the rate
token, so a generation waiting for a free slot never holds a submission token, and a task
waiting on the service never holds anything but its slot. Qwen sync calls are documented as
unlimited and take no slot unless the project sets `concurrency` for the model; Wan sync calls
(wan2.6) count like tasks.

Limits come from the model table (`Model.rps`, `Model.concurrency`) and may be overridden in
imgbuild.yaml:

    limits:
      qwen-image-plus: {rps: 2, concurrency: 2}
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from imgbuild.spec import catalogue as models
from imgbuild.spec.types import Request

# `-j` default when the DashScope provider runs (see default_jobs).
MIN_JOBS = 4
MAX_DEFAULT_JOBS = 64
# A Qwen sync call holds its connection for the whole generation (typically 5-20 s), so
# reaching R calls per second needs about R * this many calls in flight.
TYPICAL_SYNC_SECONDS = 20.0


@dataclass(frozen=True)
class Limit:
    rps: float  # submissions per second (documented or configured)
    concurrency: int  # tasks in flight; 0 = unlimited
    sync_limited: bool  # whether sync calls count toward `concurrency`


def limit_for(model: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Limit:
    """The model table's limits for `model`, with the project's `limits:` entry on top."""
    entry = models.get(model)
    rps = entry.rps if entry else 1.0
    concurrency = entry.concurrency if entry else 1
    # Qwen documents "sync unlimited, async concurrency C"; the Wan limit counts every call.
    sync_limited = entry is None or entry.family != "qwen-image"
    override = (overrides or {}).get(model) or {}
    if "rps" in override:
        rps = float(override["rps"])
    if "concurrency" in override:
        concurrency = int(override["concurrency"])
        sync_limited = True  # the user's number counts every call
    if rps <= 0:
        raise ValueError(f"{model}: rps must be > 0")
    return Limit(rps=rps, concurrency=max(0, concurrency), sync_limited=sync_limited)


def is_sync(request: Request) -> bool:
    entry = models.get(request.model)
    return entry is not None and models.is_sync_endpoint(entry.endpoint_for(request.call) or "")


def default_jobs(requests: Iterable[Request], overrides: Mapping[str, Mapping[str, Any]] | None = None) -> int:
    """`-j` when the user gives none, for a DashScope build.

    The per-model limits in the Scheduler are what should bind, never `-j`; so the default is
    the sum over the models in the build of the calls each can usefully have in flight: its
    concurrency C, or for unlimited (sync) calls about R * TYPICAL_SYNC_SECONDS. Extra workers
    cost nothing but a coroutine waiting in the scheduler. Floor MIN_JOBS, cap MAX_DEFAULT_JOBS
    (memory for images in flight, the HTTP connection pool).
    """
    total = 0
    seen: set[tuple[str, bool]] = set()
    for request in requests:
        sync = is_sync(request)
        if (request.model, sync) in seen:
            continue
        seen.add((request.model, sync))
        limit = limit_for(request.model, overrides)
        if limit.concurrency and (limit.sync_limited or not sync):
            total += limit.concurrency
        else:
            total += max(1, math.ceil(limit.rps * TYPICAL_SYNC_SECONDS))
    return max(MIN_JOBS, min(MAX_DEFAULT_JOBS, total))


class _ModelState:
    def __init__(self, name: str, limit: Limit, margin: float) -> None:
        self.name = name
        self.limit = limit
        span = max(1.0, 1.0 / limit.rps)
        self.cap = max(1, math.floor(limit.rps * span + 1e-9))
        self.window = span + margin
        self.grants: deque[float] = deque()
        self.factor = 1.0
        self.last_grant = -math.inf
        self.last_cut = -math.inf
        self.run = 0
        self.lock = asyncio.Lock()  # FIFO: submissions are granted in arrival order
        self.slots = asyncio.Semaphore(limit.concurrency) if limit.concurrency else None
        # stats
        self.submissions = 0
        self.throttled = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.min_factor_seen = 1.0

    @property
    def rate(self) -> float:
        return self.limit.rps * self.factor

    def wait_time(self, now: float) -> float:
        while self.grants and self.grants[0] <= now - self.window:
            self.grants.popleft()
        wait = 0.0
        if len(self.grants) >= self.cap:
            wait = self.grants[0] + self.window - now
        if self.factor < 1.0:
            wait = max(wait, self.last_grant + 1.0 / self.rate - now)
        return wait


class Scheduler:
    """Per-model rate and concurrency limits; implements the DashScope provider's RateLimiter."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]] | None = None, *,
                 margin: float = 0.03, decrease: float = 0.5, increase: float = 0.1,
                 min_factor: float = 0.05, clock: Callable[[], float] = time.monotonic) -> None:
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self.margin = margin
        self.decrease = decrease
        self.increase = increase
        self.min_factor = min_factor
        self._clock = clock
        self._models: dict[str, _ModelState] = {}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **kwargs: Any) -> Scheduler:
        limits = settings.get("limits") or {}
        return cls({str(k): dict(v) for k, v in limits.items()}, **kwargs)

    def _state(self, model: str) -> _ModelState:
        state = self._models.get(model)
        if state is None:
            state = self._models[model] = _ModelState(model, limit_for(model, self.overrides),
                                                      self.margin)
        return state

    def limit(self, model: str) -> Limit:
        return self._state(model).limit

    # --- RateLimiter -----------------------------------------------------------------------

    async def submit(self, model: str) -> None:
        """Wait until `model` may take one more submission, then count it."""
        state = self._state(model)
        async with state.lock:
            while True:
                now = self._clock()
                wait = state.wait_time(now)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            state.grants.append(now)
            state.last_grant = now
            state.submissions += 1
            state.run += 1
            if state.factor < 1.0 and state.run >= max(1, math.ceil(state.rate * state.window)):
                state.factor = min(1.0, state.factor + self.increase)  # additive increase
                state.run = 0

    def throttled(self, model: str, retry_after: float | None) -> None:
        """A 429 to a submission: the service allows less than we thought; slow down."""
        state = self._state(model)
        state.throttled += 1
        state.run = 0
        now = self._clock()
        if now - state.last_cut >= state.window:  # one overload, one cut
            state.factor = max(self.min_factor, state.factor * self.decrease)
            state.min_factor_seen = min(state.min_factor_seen, state.factor)
            state.last_cut = now
            state.last_grant = now  # pace from here, not from a grant before the 429

    # --- concurrency ------------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, request: Request) -> AsyncIterator[None]:
        """Held around one whole generation (submit, wait, download), success or failure."""
        state = self._state(request.model)
        sem = state.slots if (state.limit.sync_limited or not is_sync(request)) else None
        if sem is not None:
            await sem.acquire()
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            yield
        finally:
            state.in_flight -= 1
            if sem is not None:
                sem.release()

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: {"rps": s.limit.rps, "concurrency": s.limit.concurrency,
                       "rate_now": round(s.rate, 4), "lowest_factor": s.min_factor_seen,
                       "submissions": s.submissions, "throttled": s.throttled,
                       "max_in_flight": s.max_in_flight}
                for name, s in self._models.items()}


__all__ = ["Limit", "Scheduler", "default_jobs", "is_sync", "limit_for"]
