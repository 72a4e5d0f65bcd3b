"""The one owner of the event loop: `asyncio.run`, Ctrl-C handling and progress ticks.
Verbs stay synchronous and call `run_executor`; nothing else in imgbuild starts a loop.

Ctrl-C: the first SIGINT tells the executor to start nothing new and to stop waiting on async
tasks (their ids stay in the journal). Requests already sent are paid, so they are let finish
however long they take (their own timeouts bound them); other work in flight gets `grace`
seconds. A second SIGINT abandons everything at once, and the paid requests it abandons are
counted and reported: the next build pays for them again. Without add_signal_handler (Windows, or not the main thread), Ctrl-C stays a
KeyboardInterrupt and the caller still writes the lock.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class Sink(Protocol):
    """Where a running build says what happens (report.Reporter implements it)."""

    live: bool

    def notice(self, text: str) -> None: ...
    def interrupt_notice(self, in_flight: int, grace: float, again: bool) -> None: ...
    def tick(self) -> None: ...


@dataclass
class Interruption:
    """What a Ctrl-C left behind."""

    kept: int = 0  # images finished and recorded in the lock
    waiting: int = 0  # async tasks left in the journal (the next build resumes them, unpaid)
    abandoned_paid: int = 0  # paid requests abandoned in flight: the next build pays again
    forced: bool = False  # a second Ctrl-C


INTERRUPT_GRACE = 5.0  # seconds in-flight requests, downloads and writes get after a Ctrl-C


def run_executor(executor: Any, steps: Any, sink: Sink, *,
                 on_close: Callable[[], Any] | None = None,
                 grace: float = INTERRUPT_GRACE) -> Interruption | None:
    """Run `executor.run(steps)` to the end (it uses `steps` up); None unless it was interrupted."""
    import asyncio

    seen = Interruption()

    async def main() -> None:
        remove = _install_interrupt(executor, sink, seen, grace)
        ticker = asyncio.create_task(_tick(sink)) if sink.live else None
        try:
            await executor.run(steps)
        finally:
            remove()
            if ticker is not None:
                ticker.cancel()
            if on_close is not None:
                await on_close()

    asyncio.run(main())
    return seen if executor.interrupted else None


def _install_interrupt(executor: Any, sink: Sink, seen: Interruption, grace: float) -> Callable[[], None]:
    import asyncio
    import signal

    loop = asyncio.get_running_loop()

    def hard_stop(forced: bool) -> None:
        seen.abandoned_paid = max(seen.abandoned_paid, executor.paid_in_flight)
        seen.forced = seen.forced or forced
        executor.cancel()

    def settle(shown: int) -> None:
        # Paid requests already sent are let finish (their own timeouts bound them): cutting
        # them off would pay for them again on the next build. Others get `grace` seconds.
        if seen.forced:
            return
        paid = executor.paid_in_flight
        if paid == 0:
            hard_stop(False)
            return
        if paid != shown:
            sink.interrupt_notice(paid, grace, again=False)
        loop.call_later(1.0, settle, paid)

    def on_sigint() -> None:
        if executor.interrupted:
            sink.interrupt_notice(executor.paid_in_flight, grace, again=True)
            hard_stop(True)
            return
        executor.interrupt()
        shown = executor.paid_in_flight
        sink.interrupt_notice(shown, grace, again=False)
        loop.call_later(grace, settle, shown)

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


async def _tick(sink: Sink) -> None:
    import asyncio

    while True:
        await asyncio.sleep(0.5)
        sink.tick()
