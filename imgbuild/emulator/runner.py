"""Running the emulator: `Emulator` (background thread, for tests) and `serve` (blocking, CLI)."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import Any

from aiohttp import web

from .faults import EmulatorConfig
from .server import API_PREFIX, create_app
from .state import State


async def _start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    # access_log=None: tests and CLI users read the structured request log instead.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only through the server sockets
    actual = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    return runner, actual


class Emulator:
    """A DashScope emulator on its own event loop in a daemon thread.

    >>> with Emulator(EmulatorConfig(task_duration=0.2)) as emu:
    ...     emu.base_url   # 'http://127.0.0.1:PORT/api/v1'
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.host = host
        self.port = port
        self.api_key = api_key
        self.state = State(self.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> Emulator:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                app = create_app(self.state, self.api_key)
                self._runner, self.port = self._loop.run_until_complete(
                    _start_site(app, self.host, self.port)
                )
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller of start()
                failure.append(err)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="imgbuild-emulator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            self._loop.close()
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread = None
        self._loop = None
        self._runner = None

    def __enter__(self) -> Emulator:  # noqa: PYI034 - Self needs Python 3.11
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- observation and control -------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + API_PREFIX

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.state.stats()["requests"]

    @property
    def billed(self) -> int:
        return int(self.state.stats()["billed"])

    @property
    def billed_by_model(self) -> dict[str, int]:
        return dict(self.state.stats()["billed_by_model"])

    def configure(self, **changes: Any) -> None:
        with self.state.lock:
            self.config.update(**changes)

    def reset(self) -> None:
        """Zero billing, counters and logs (configuration and tasks stay)."""
        self.state.reset_counters()


def serve(host: str, port: int, api_key: str | None, config_path: str | None) -> int:
    """Run until SIGINT/SIGTERM; print one 'listening' line once the socket is bound."""
    config = EmulatorConfig.from_yaml(config_path) if config_path else EmulatorConfig()
    return asyncio.run(_serve(host, port, api_key, config))


async def _serve(host: str, port: int, api_key: str | None, config: EmulatorConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # non-main thread or Windows
            pass
    runner, actual = await _start_site(create_app(State(config), api_key), host, port)
    print(f"imgbuild emulator listening on http://{host}:{actual}{API_PREFIX}", flush=True)
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0
