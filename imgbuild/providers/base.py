"""What every provider speaks: a rendered `Request` in, a `Generation` (image bytes) out.

Providers are the only code that knows wire formats. The executor calls `generate` for each
target; everything else (cache, outputs, lock) happens after, in the caller.
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from imgbuild.errors import Failure
from imgbuild.spec.types import Request


@dataclass
class Generation:
    """What a provider returns. `images` may hold fewer than `n` items (partial success)."""

    images: list[bytes]
    request_id: str | None = None
    task_id: str | None = None
    actual_prompt: str | None = None  # set when prompt_extend rewrote the prompt
    failures: list[str] = field(default_factory=list)  # one message per image that failed
    # 1-based position in the request of each image (seed, seed+1, ...); None = 1..len(images).
    # With a partial result, image k must still land in output k.
    slots: list[int] | None = None
    resumed: bool = False  # an async task submitted (and paid) by an earlier run
    # Things the user should hear about although the images arrived (one line each), e.g. an
    # image a few pixels off the requested size, or answers that were cut to n images.
    warnings: list[str] = field(default_factory=list)
    # Requests that may have been billed without an image (see ProviderError.possibly_paid).
    possibly_paid: int = 0


ACCOUNT = "account"  # ProviderError.scope: no request with this key can succeed; stop all
MODEL = "model"  # ProviderError.scope: this model refuses this account; stop only that model


class ProviderError(Exception):
    """A generation failed. Carries data only; `failure()` turns it into the `Failure` the
    build reports. The provider decides what it means (its own policy), never the caller:

    `scope`: ACCOUNT (bad key, arrears: stop submitting anything), MODEL (the model is not
    activated for this account: stop submitting to it, other models go on) or None (this
    target only). `hint`: what the user can do about it, when there is something.
    `retryable`: trying again (now, or in a later build) may succeed as is.
    `possibly_paid`: requests of this generation that may have been billed although no image
    came back (e.g. a sync call that timed out after it was sent).
    """

    def __init__(self, code: str, message: str, *, request_id: str | None = None,
                 fatal: bool = False, status: int | None = None, scope: str | None = None,
                 hint: str | None = None, possibly_paid: int = 0, retryable: bool = True) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.scope = scope or (ACCOUNT if fatal else None)
        self.status = status
        self.hint = hint
        self.possibly_paid = possibly_paid
        self.retryable = retryable

    @property
    def fatal(self) -> bool:
        """No further request of this build can succeed: stop submitting."""
        return self.scope == ACCOUNT

    def failure(self, where: str | None = None) -> Failure:
        return Failure(self.code, self.message, request_id=self.request_id, where=where,
                       possibly_paid=self.possibly_paid, retryable=self.retryable,
                       scope=self.scope, hint=self.hint)


class Provider(Protocol):
    #: identity that goes into the generation key ("placeholder", "dashscope", ...)
    name: str
    #: True for providers whose images are stand-ins, marked as drafts in the lock
    draft: bool

    async def generate(self, request: Request, key: str) -> Generation:
        """Generate the images of `request`; `key` is its generation key (for journals)."""
        ...

    async def close(self) -> None:
        ...


# --- progress ---------------------------------------------------------------------------------
# A provider may say where a generation stands ("submitting" right before each paid POST,
# "waiting" on an async task, "downloading" the results) by calling report_progress(state).
# The executor sets the callable per generation (a contextvar: each asyncio task has its own),
# so the Provider protocol stays `generate(request, key)`. The callable may raise to stop the
# generation at that point (an interrupted build: no new submission, stop waiting on a task).

progress: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "imgbuild_progress", default=None)


def report_progress(state: str) -> None:
    hook = progress.get()
    if hook is not None:
        hook(state)
