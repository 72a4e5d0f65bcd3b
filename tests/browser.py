"""Headless Chromium for the site tests, driven over the DevTools protocol (CDP).

The driver is aiohttp's websocket client, already an imgbuild dependency, talking to the
browser's own endpoint: a page is opened, every <img> on it is scrolled into view and awaited,
and what the browser chose is read back (currentSrc, naturalWidth...). No Selenium or
Playwright: a driver binary or a browser download would be one more thing to install, and CDP
gives exactly what these checks need. The built site is served over real HTTP on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import itertools
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from e2e_support import wait_for

# The flags the issue asks for, plus a fresh profile per browser.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--mute-audio", "--remote-debugging-port=0")
VIEWPORT = (1280, 900)

# Every <img> is scrolled into view (they are loading="lazy") and awaited; then what the
# browser made of it is returned. decode() settles once the chosen file is loaded and decoded.
INSPECT_IMAGES = """
(async () => {
  const found = [];
  for (const img of document.querySelectorAll("img")) {
    img.scrollIntoView();
    let error = null;
    try { await img.decode(); } catch (e) { error = String(e); }
    // the content box: what the image is drawn into (padding and borders excluded)
    const box = img.getBoundingClientRect(), css = getComputedStyle(img);
    const px = (...names) => names.reduce((sum, n) => sum + parseFloat(css[n]), 0);
    const picture = img.closest("picture");
    found.push({
      alt: img.alt, src: img.getAttribute("src"), srcset: img.getAttribute("srcset"),
      currentSrc: img.currentSrc, complete: img.complete, error,
      naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
      width: img.getAttribute("width"), height: img.getAttribute("height"),
      box: [box.width - px("paddingLeft", "paddingRight", "borderLeftWidth", "borderRightWidth"),
            box.height - px("paddingTop", "paddingBottom", "borderTopWidth", "borderBottomWidth")],
      sources: picture ? [...picture.querySelectorAll("source")].map(
        (s) => ({type: s.type, srcset: s.srcset, sizes: s.sizes})) : [],
    });
  }
  window.scrollTo(0, 0);
  return found;
})()
"""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """One headless Chromium process with a fresh profile; `inspect(url)` opens a page."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.profile = profile
        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = profile / "DevToolsActivePort"  # written once the endpoint listens
        try:
            wait_for(lambda: self.proc.poll() is not None or _complete(port_file), 60,
                     "Chromium to open its DevTools endpoint")
        except AssertionError:
            self.close()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"Chromium exited with {self.proc.returncode}: "
                               f"{self.proc.stderr.read().decode(errors='replace')[-2000:]}")
        port, path = port_file.read_text().split()[:2]
        self.endpoint = f"ws://127.0.0.1:{port}{path}"

    def inspect(self, url: str, screenshot: Path | None = None) -> list[dict[str, Any]]:
        return asyncio.run(asyncio.wait_for(self._inspect(url, screenshot), 60))

    async def _inspect(self, url: str, screenshot: Path | None) -> list[dict[str, Any]]:
        import aiohttp

        async with aiohttp.ClientSession() as http, http.ws_connect(self.endpoint, max_msg_size=0) as ws:
            cdp = _Session(ws)
            target = (await cdp.send("Target.createTarget", url="about:blank"))["targetId"]
            session = (await cdp.send("Target.attachToTarget", targetId=target, flatten=True))["sessionId"]
            try:
                page = functools.partial(cdp.send, session=session)
                width, height = VIEWPORT
                await page("Emulation.setDeviceMetricsOverride", width=width, height=height,
                           deviceScaleFactor=1, mobile=False)
                await page("Page.enable")
                loaded = cdp.expect("Page.loadEventFired", session)
                navigation = await page("Page.navigate", url=url)
                if navigation.get("errorText"):
                    raise AssertionError(f"{url}: {navigation['errorText']}")
                await loaded
                result = await page("Runtime.evaluate", expression=INSPECT_IMAGES, awaitPromise=True,
                                    returnByValue=True)
                if "exceptionDetails" in result:
                    raise AssertionError(f"{url}: {result['exceptionDetails']}")
                if screenshot is not None:
                    shot = await page("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                    screenshot.write_bytes(base64.b64decode(shot["data"]))
                return list(result["result"]["value"])
            finally:
                await cdp.send("Target.closeTarget", targetId=target)

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


def _complete(port_file: Path) -> bool:
    try:
        return len(port_file.read_text().split()) >= 2
    except OSError:
        return False


class _Session:
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
        message = {"id": message_id, "method": method, "params": params}
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


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".avif": "image/avif", ".webp": "image/webp"}

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve a built site from 127.0.0.1 on a free port; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
