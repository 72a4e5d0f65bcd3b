"""How long the DashScope provider waits: retry backoff and the task polling schedule.

Both are plain values passed to the provider, so tests can use millisecond schedules instead
of patching sleeps.
"""
from __future__ import annotations

import random
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
    """When to query a task: soon at first, every few seconds while it is likely to finish,
    then slower. The docs suggest every 3 s for the first 30 s, then 5-10 s (§5.4); the task
    query limit is 20 QPS per account (§8), shared by every running build."""

    first: float = 1.0
    early: float = 3.0
    early_for: float = 30.0
    late: float = 8.0

    def delay(self, polls_done: int, elapsed: float) -> float:
        """Seconds to sleep before the next poll, given polls so far and seconds waited."""
        if polls_done == 0:
            return self.first
        return self.early if elapsed < self.early_for else self.late


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


__all__ = ["Backoff", "PollSchedule", "parse_retry_after"]
