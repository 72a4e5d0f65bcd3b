"""Headless Chromium (the Debian `chromium` package), driven over the DevTools protocol with
aiohttp's websocket client — already an imgbuild dependency, so no driver binary or browser
download. A page is a flattened CDP session: evaluate script, press keys, click with the real
mouse, read timings, take screenshots.

A test that needs the browser fails when CI is set and the browser is missing (`.ci/run`
installs it), and skips elsewhere.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from e2e_support import wait_for

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--mute-audio", "--allow-file-access-from-files", "--remote-debugging-port=0")
VIEWPORT = (1280, 900)
# key -> (code, virtual key code): what a real keyboard sends for the keys the pages use
_KEYS = {**{c: (f"Key{c.upper()}", ord(c.upper())) for c in "jk"},
         **{d: (f"Digit{d}", ord(d)) for d in "123"}}


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def require_chromium() -> str:
    found = chromium_path()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing, but .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


class Chromium:
    """One browser process with a fresh profile."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        port_file = profile / "DevToolsActivePort"  # written once the endpoint listens
        try:
            wait_for(lambda: self.proc.poll() is not None or _complete(port_file), 60,
                     "Chromium to open its DevTools endpoint")
            if self.proc.poll() is not None:
                raise RuntimeError(f"Chromium exited with {self.proc.returncode}: "
                                   f"{self.proc.stderr.read().decode(errors='replace')[-2000:]}")  # type: ignore[union-attr]
        except BaseException:
            self.close()
            raise
        port, path = port_file.read_text().split()[:2]
        self.endpoint = f"ws://127.0.0.1:{port}{path}"

    @asynccontextmanager
    async def page(self, url: str) -> AsyncIterator[Page]:
        """A new tab at `url`, once its load event fired."""
        import aiohttp

        async with aiohttp.ClientSession() as http, http.ws_connect(self.endpoint, max_msg_size=0) as ws:
            cdp = _Connection(ws)
            target = (await cdp.send("Target.createTarget", url="about:blank"))["targetId"]
            session = (await cdp.send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
            page = Page(cdp, session)
            try:
                width, height = VIEWPORT
                await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                                deviceScaleFactor=1, mobile=False)
                await page.send("Page.enable")
                loaded = cdp.expect("Page.loadEventFired", session)
                navigation = await page.send("Page.navigate", url=url)
                if navigation.get("errorText"):
                    raise AssertionError(f"{url}: {navigation['errorText']}")
                await loaded
                yield page
            finally:
                await cdp.send("Target.closeTarget", targetId=target)
                cdp.reader.cancel()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class Page:
    def __init__(self, cdp: _Connection, session: str) -> None:
        self.cdp, self.session = cdp, session

    async def send(self, method: str, **params: Any) -> Any:
        return await self.cdp.send(method, session=self.session, **params)

    async def eval(self, expression: str) -> Any:
        """The value of `expression` (awaited when it is a promise); a script error fails the test."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def press(self, key: str) -> None:
        code, vk = _KEYS[key]
        for kind in ("keyDown", "keyUp"):
            await self.send("Input.dispatchKeyEvent", type=kind, key=key, code=code, text=key,
                            windowsVirtualKeyCode=vk, nativeVirtualKeyCode=vk)

    async def click(self, x: float, y: float) -> None:
        """A real left click at viewport coordinates."""
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def screenshot(self, clip: dict[str, float] | None = None, *, full_page: bool = False) -> bytes:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode((await self.send("Page.captureScreenshot", **params))["data"])


def _complete(port_file: Path) -> bool:
    try:
        return len(port_file.read_text().split()) >= 2
    except OSError:
        return False


class _Connection:
    """Commands and events on one CDP websocket (flattened sessions: one socket, many pages)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.events: dict[tuple[str, str | None], asyncio.Future[Any]] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def send(self, method: str, session: str | None = None, **params: Any) -> Any:
        message_id = next(self.ids)
        reply = self.waiting[message_id] = asyncio.get_running_loop().create_future()
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send_str(json.dumps(message))
        return await reply

    def expect(self, event: str, session: str | None) -> asyncio.Future[Any]:
        future = self.events[(event, session)] = asyncio.get_running_loop().create_future()
        return future

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data:
                reply = self.waiting.pop(data["id"])
                if "error" in data:
                    reply.set_exception(AssertionError(f"CDP error: {data['error']}"))
                else:
                    reply.set_result(data.get("result", {}))
            else:
                waiter = self.events.pop((data.get("method"), data.get("sessionId")), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(data.get("params", {}))
