"""Problems and failures as data. `report` is the only module that turns them into text or
JSON; `cli` maps them to exit codes. Nothing here prints or formats for people.

- `Problem`: one located mistake in the specs (file, line, column, field path, message, hint).
- `Failure`: why a target did not finish (code, message, request id, spec location, whether it
  was or may have been paid, whether a rerun retries it, what it stops, what to do about it).
- `ImgbuildError` and subclasses: errors meant for a person, raised by any stage and shown
  without a traceback.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # failed or stale targets
EXIT_USAGE = 2  # usage or spec error
EXIT_INTERNAL = 3  # a bug: traceback in a log file
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, order=True)
class Problem:
    """One located user mistake: `file:line:col: where: message`."""

    file: str
    line: int
    col: int
    where: str
    message: str
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Failure:
    """Why one target (or the whole run) stopped short."""

    code: str  # the service's code (InvalidParameter, Throttling...) or one of imgbuild's
    message: str
    request_id: str | None = None
    where: str | None = None  # the spec's file:line
    paid: int = 0  # images billed although the target failed (a partial result)
    possibly_paid: int = 0  # requests that may have been billed with no image to show
    retryable: bool = True  # a rerun tries again
    scope: str | None = None  # what it stops: "account" (every submission), "model", or None
    hint: str | None = None  # what the user can do about it

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, 0, "")}


# imgbuild's own failure codes (the provider's codes pass through unchanged)
NOT_STARTED = "NotStarted"  # another failure or an interrupt stopped the build first
INTERRUPTED_CODE = "Interrupted"
PARTIAL = "PartialResult"  # some of n images failed; the others are kept
CACHE_DAMAGED = "CacheEntryDamaged"
CACHE_FULL = "CacheCannotStore"  # the cache refused an original (disk full, read-only)
WRITE_FAILED = "WriteFailed"


class ImgbuildError(Exception):
    """An error meant for the user, shown as its message with no traceback."""

    exit_code = EXIT_FAILED


class UsageError(ImgbuildError):
    exit_code = EXIT_USAGE


class SpecError(ImgbuildError):
    """All the problems found in the specs of one run, reported together."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__(f"{len(self.problems)} problem(s) in the image specs")


class LimitExceeded(ImgbuildError):
    """A build refused before any request: it would exceed --max-images or --budget."""

    def __init__(self, option: str, limit: float, estimate: dict[str, Any]) -> None:
        self.option = option
        self.limit = limit
        self.estimate = estimate
        if option == "--budget" and estimate.get("price_unknown"):
            text = (f"{option} cannot be checked: no {estimate['region']} price is known for "
                    f"{', '.join(estimate['price_unknown'])}")
        elif option == "--max-images":
            text = f"this build would generate {estimate['images']} image(s), more than {option} {limit}"
        else:
            text = f"this build would cost {estimate['total']:.2f} {estimate['currency']}, more than {option} {limit:g}"
        super().__init__(text + "; nothing was generated")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a build, after it stopped cleanly. `.result` is the build's result, with
    what was kept and what may have been paid; the API raises it, the CLI reports it."""

    def __init__(self, result: Any = None) -> None:
        super().__init__("interrupted")
        self.result = result
