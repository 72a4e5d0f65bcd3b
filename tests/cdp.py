"""Interactive pages in headless Chromium, for tests that do more than load a page: evaluate
script, press keys, click with the real mouse, read timings, take screenshots. The browser
process and the DevTools connection are `browser.py`'s (aiohttp's websocket client, the Debian
`chromium` package); this adds a page that stays open while a test works with it.

A test that needs the browser fails when CI is set and the browser is missing (`.ci/run`
installs it), and skips elsewhere.
"""
from __future__ import annotations

import base64
import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from browser import VIEWPORT, Browser, _Session, chromium_path

# key -> (code, virtual key code): what a real keyboard sends for the keys the pages use
_KEYS = {**{c: (f"Key{c.upper()}", ord(c.upper())) for c in "jk"},
         **{d: (f"Digit{d}", ord(d)) for d in "123"}}


def require_chromium() -> str:
    found = chromium_path()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing, but .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


class Chromium(Browser):
    """One browser process with a fresh profile, whose pages a test can drive."""

    @asynccontextmanager
    async def page(self, url: str) -> AsyncIterator[Page]:
        """A new tab at `url`, once its load event fired."""
        import aiohttp

        async with aiohttp.ClientSession() as http, http.ws_connect(self.endpoint, max_msg_size=0) as ws:
            cdp = _Session(ws)
            target = (await cdp.send("Target.createTarget", url="about:blank"))["targetId"]
            session = (await cdp.send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
            page = Page(functools.partial(cdp.send, session=session))
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


class Page:
    def __init__(self, send: Any) -> None:
        self.send = send  # a CDP command on this page's session

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
