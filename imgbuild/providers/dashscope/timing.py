"""How long the DashScope provider waits: retry backoff and the task polling schedule.

Both are plain values passed to the provider, so tests can use millisecond schedules instead
of patching sleeps.
"""
from __future__ import annotations

import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: sleep uniform(0, min(cap, base * 2**attempt)).

    Full jitter spreads retries of many concurrent requests apart, which matters here because
    DashScope rate limits are per account, shared by every worker. A server's Retry-After is a
    floor: retrying sooner would only earn another 429.
    """

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        jitter = self.rng.uniform(0.0, min(self.cap, self.base * 2 ** attempt))
        return jitter if retry_after is None else max(jitter, retry_after)


@dataclass(frozen=True)
class PollSchedule:
    """When to query a task.

    Until a model's task duration is known: soon at first, every few seconds while the task
    is likely to finish, then slower, as the docs ask ("every 3 seconds for the first 30
    seconds, then increasing intervals", §5.4; the task query limit is 20 QPS per account, §8,
    shared by every running build). That schedule adds up to `early` (or `late`) seconds after
    a task finishes, which dominates short tasks.

    Once the build has seen tasks of the model finish (`expected`, from their submit_time and
    end_time): one poll right after the expected finish, and when the task is not done yet,
    follow-ups `catch_up` of the expected duration apart (within [min_gap, early]). Fewer
    polls than the fixed schedule, and a short wait after the finish.
    """

    first: float = 1.0
    early: float = 3.0
    early_for: float = 30.0
    late: float = 8.0
    learn: bool = True  # False: the fixed schedule only (the benchmark's "before")
    slack: float = 0.05  # the first poll comes this fraction of `expected` after it...
    settle: float = 0.1  # ... plus this: the result is written a moment after end_time
    catch_up: float = 0.1  # follow-up gap as a fraction of `expected`
    min_gap: float = 0.5

    def delay(self, polls_done: int, elapsed: float, expected: float | None = None) -> float:
        """Seconds to sleep before the next poll, given polls so far, seconds waited since
        the task was submitted, and the model's expected task duration if known."""
        if expected is not None and self.learn:
            if polls_done == 0:
                return max(0.0, expected * (1 + self.slack) + self.settle - elapsed)
            gap = min(self.early, max(self.min_gap, expected * self.catch_up))
            return gap if elapsed < expected + self.early_for else self.late
        if polls_done == 0:
            return self.first
        return self.early if elapsed < self.early_for else self.late


class TaskDurations:
    """How long each model's tasks take in this build, from the service's own clock
    (submit_time to end_time of tasks that succeeded): the median of the last few."""

    def __init__(self, keep: int = 8) -> None:
        self._seen: dict[str, deque[float]] = {}
        self._keep = keep

    def observe(self, model: str, output: dict[str, object]) -> None:
        seconds = _span(output.get("submit_time"), output.get("end_time"))
        if seconds is not None:
            self._seen.setdefault(model, deque(maxlen=self._keep)).append(seconds)

    def expected(self, model: str) -> float | None:
        seen = self._seen.get(model)
        return statistics.median(seen) if seen else None


def _span(start: object, end: object) -> float | None:
    """Seconds between two task times ("YYYY-MM-DD HH:MM:SS.mmm", one clock); None if not
    both readable or the span is not plausible."""
    try:
        first = datetime.strptime(str(start), _TASK_TIME)
        last = datetime.strptime(str(end), _TASK_TIME)
    except ValueError:
        return None
    seconds = (last - first).total_seconds()
    return seconds if 0 <= seconds <= 24 * 3600 else None


_TASK_TIME = "%Y-%m-%d %H:%M:%S.%f"


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


__all__ = ["Backoff", "PollSchedule", "TaskDurations", "parse_retry_after"]
