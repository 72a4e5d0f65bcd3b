"""The DashScope client against servers that are slow, broken or hostile (issue 12, items 3, 14,
15): a server of our own on 127.0.0.1 that answers what each test tells it to, plus the
emulator where billing has to be counted. Real HTTP throughout; nothing is mocked."""
from __future__ import annotations

import asyncio
import io
import logging
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from helpers import run
from imgbuild.emulator import Emulator, EmulatorConfig
from imgbuild.providers.base import Generation, ProviderError, Request
from imgbuild.providers.dashscope.client import DashScopeProvider
from imgbuild.providers.dashscope.journal import Journal
from imgbuild.providers.dashscope.timing import Backoff, PollSchedule

KEY = "sk-hostile-KEY-0123456789abcdef"
FAST = {"poll_schedule": PollSchedule(first=0.01, early=0.02, late=0.05),
        "backoff": Backoff(base=0.01, cap=0.02)}
SYNC_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
LEGACY_PATH = "/api/v1/services/aigc/text2image/image-synthesis"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Hostile:
    """An aiohttp server in a thread. Tests set `routes[(method, path)]` to a handler; every
    request is counted in `hits`. Images registered with `image()` are served from /img/."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler] = {}
        self.images: dict[str, bytes] = {}
        self.hits: list[tuple[str, str]] = []
        self.sent_bytes = 0
        self.loop = asyncio.new_event_loop()
        self.released = asyncio.Event()  # set on close: handlers that hang stop hanging
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        self.loop.run_forever()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.hits.append((request.method, request.path_qs))
        if request.path.startswith("/img/"):
            return web.Response(body=self.images[request.path[5:]], content_type="image/png")
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.json_response({"code": "NotFound", "message": "no route"}, status=404)
        return await handler(request)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + "/api/v1"

    def image(self, name: str, data: bytes) -> str:
        self.images[name] = data
        return f"{self.origin}/img/{name}?Expires=1999999999&OSSAccessKeyId=LTAI&Signature=SECRETSIG"

    async def hang(self, request: web.Request) -> web.Response:
        """A handler that never answers (until the server closes)."""
        await self.released.wait()
        return web.Response(status=503)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.released.set)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    server = Hostile()
    yield server
    server.close()


def request(model: str = "qwen-image-plus", size: str = "1328*1328", n: int = 1,
            call: str | None = None) -> Request:
    return Request(model=model, prompt="a hostile test", negative_prompt="", size=size, n=n,
                   seed=1, prompt_extend=False, watermark=False, call=call)


def generate(base_url: str, req: Request, key: str = "k", **kwargs: Any) -> Generation:
    async def go() -> Generation:
        provider = DashScopeProvider(KEY, base_url, **{**FAST, **kwargs})
        try:
            return await provider.generate(req, key)
        finally:
            await provider.close()

    return asyncio.run(go())


def failure(base_url: str, req: Request, **kwargs: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        generate(base_url, req, **kwargs)
    return info.value


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(out, "PNG")
    return out.getvalue()


def qwen_answer(urls: list[str]) -> dict[str, Any]:
    return {"request_id": "req-1", "output": {"choices": [{"finish_reason": "stop", "message": {
        "role": "assistant", "content": [{"image": u} for u in urls]}}]},
        "usage": {"image_count": len(urls)}}


def answer(body: Any, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(body, status=status)
    return handler


# --- item 3: a slow sync call is paid at most twice, and said to be ------------------------

def test_a_sync_post_that_never_answers_is_sent_twice_at_most(hostile: Hostile) -> None:
    hostile.routes[("POST", SYNC_PATH)] = hostile.hang
    error = failure(hostile.base_url, request("qwen-image-2.0", "512*512"), request_timeout=0.2)
    assert hostile.hits.count(("POST", SYNC_PATH)) == 2  # was 7: one try + 6 blind retries
    assert error.code == "Timeout" and error.possibly_paid == 2
    assert "no answer within 0.2s" in error.message


def _idle(emu: Emulator) -> None:
    """Let the calls a client gave up on finish on the emulator (and bill)."""
    deadline = time.monotonic() + 10
    while emu.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)


def test_timeouts_on_the_emulator_are_billed_as_the_message_says(tmp_path: Path) -> None:
    with Emulator(EmulatorConfig(sync_latency=1.0)) as emu:
        error = failure(emu.base_url, request("qwen-image-2.0", "512*512"), request_timeout=0.3)
        assert error.possibly_paid == 2
        _idle(emu)
        assert emu.billed == 2  # both possibly paid requests were paid: no image came back
        # qwen-image-plus has an async endpoint: the one retry is a journaled task
        emu.reset()
        gen = generate(emu.base_url, request(), key="k2", request_timeout=0.3,
                       journal=Journal(tmp_path))
        _idle(emu)
        assert gen.task_id and gen.possibly_paid == 1 and len(gen.images) == 1
        assert emu.billed == 2  # the timed-out sync call was billed too, as reported


def test_the_cli_reports_possibly_paid_requests(hostile: Hostile, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    hostile.routes[("POST", SYNC_PATH)] = hostile.hang
    (tmp_path / "imgbuild.yaml").write_text(
        # limits: the documented ~2 requests per minute would make this test a minute long
        "version: 1\ntimeouts: {request: 0.2}\nlimits: {qwen-image-2.0: {rps: 100}}\n"
        "images:\n  - name: slow\n    model: qwen-image-2.0\n"
        "    size: '512*512'\n    prompt: a slow card\n", encoding="utf-8")
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", hostile.base_url)
    r = run(capsys, "build", "--provider", "dashscope", "-C", str(tmp_path))
    assert r.code == 1
    assert "Timeout: no answer within 0.2s (timeouts.request); possibly paid: 2 request(s)" in r.out
    assert "imgbuild: possibly paid: 2 request(s) timed out after sending" in r.out
    r = run(capsys, "build", "--provider", "dashscope", "-C", str(tmp_path), "--json")
    assert r.json["possibly_paid"] == 2


# --- item 14: more image URLs than n ---------------------------------------------------------

def test_more_urls_than_n_keeps_the_first_n_and_warns(hostile: Hostile) -> None:
    urls = [hostile.image(f"{i}.png", png(1328, 1328)) for i in range(3)]
    hostile.routes[("POST", SYNC_PATH)] = answer(qwen_answer(urls))
    gen = generate(hostile.base_url, request())
    assert len(gen.images) == 1 and gen.slots == [1]
    assert gen.warnings == ["the service answered 3 images for n=1: kept the first 1"]
    assert [h for h in hostile.hits if h[1].startswith("/img/")] == [("GET", "/img/0.png?"
                                                                     + urls[0].split("?")[1])]


def test_more_legacy_results_than_n_keeps_the_first_n(hostile: Hostile) -> None:
    urls = [hostile.image(f"{i}.png", png(512, 512)) for i in range(4)]
    hostile.routes[("POST", LEGACY_PATH)] = answer({"request_id": "r", "output": {
        "task_id": "task-1", "task_status": "PENDING"}})
    hostile.routes[("GET", "/api/v1/tasks/task-1")] = answer({"request_id": "r2", "output": {
        "task_id": "task-1", "task_status": "SUCCEEDED",
        "results": [{"url": u} for u in urls]}})
    gen = generate(hostile.base_url, request("wan2.2-t2i-flash", "512*512", n=2))
    assert len(gen.images) == 2 and gen.slots == [1, 2]
    assert gen.warnings == ["the service answered 4 images for n=2: kept the first 2"]


def test_a_cache_entry_with_more_images_than_n_is_restored_without_a_crash(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from imgbuild.store.originals import Cache, default_dir

    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: one\n    prompt: a single image\n", encoding="utf-8")
    assert run(capsys, "build", "-C", str(tmp_path)).code == 0  # placeholder drafts
    with Cache(default_dir()) as cache:
        (key,) = cache.keys()
        images, record = cache.get(key)  # type: ignore[misc]
        cache.put(key, images + [png(64, 64), png(32, 32)], record)  # a surprising entry
    (tmp_path / "generated" / "one.png").unlink()
    r = run(capsys, "build", "-C", str(tmp_path), "--json")
    assert r.code == 0, r
    assert r.json["restored"] == 1
    assert "the cache holds 3 images for n=1: restored the first 1" in r.err
    assert sorted(p.name for p in (tmp_path / "generated").iterdir()) == ["one.png"]


# --- item 15: hostile servers ------------------------------------------------------------------

def huge_png(side: int) -> bytes:
    """A valid side*side RGB PNG of a few hundred KB: every row is zeros, compressed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * side)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_a_huge_image_is_refused_from_its_header_without_decoding(hostile: Hostile) -> None:
    data = huge_png(12000)
    assert len(data) < 1_000_000  # 144 million pixels in well under a megabyte
    urls = [hostile.image(f"{i}.png", data) for i in range(4)]
    hostile.routes[("POST", SYNC_PATH)] = answer(qwen_answer(urls))
    error = failure(hostile.base_url, request("qwen-image-2.0", "2048*2048", n=4))
    assert error.code == "ImageTooLarge" and "refused without decoding it" in error.message
    assert "12000*12000" in error.message
    assert len([h for h in hostile.hits if h[1].startswith("/img/")]) <= 4  # none twice


_RSS_PROBE = """
import asyncio, json, resource, sys
sys.path.insert(0, {tests!r})
from test_hostile_server import KEY, request
from imgbuild.providers.dashscope.client import DashScopeProvider

async def main():
    provider = DashScopeProvider(KEY, {base!r})
    try:
        await provider.generate(request("qwen-image-2.0", "2048*2048", n=4), "k")
    except Exception as error:
        print(type(error).__name__, getattr(error, "code", ""))
    finally:
        await provider.close()

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
asyncio.run(main())
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024))
"""


def test_refusing_a_huge_image_takes_no_memory(hostile: Hostile) -> None:
    urls = [hostile.image(f"{i}.png", huge_png(12000)) for i in range(4)]
    hostile.routes[("POST", SYNC_PATH)] = answer(qwen_answer(urls))
    code = _RSS_PROBE.format(tests=str(Path(__file__).parent), base=hostile.base_url)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120).stdout.split()
    assert out[:2] == ["ProviderError", "ImageTooLarge"], out
    assert int(out[-1]) < 150, f"peak RSS grew by {out[-1]} MB"  # decoding 4 would take 1.7 GB


def test_api_answers_are_capped(hostile: Hostile) -> None:
    async def flood(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        piece = b" " * 65536
        try:
            await resp.write(b'{"output": {"choices": []}, "pad": "')
            for _ in range(300 * 16):  # 300 MB, if anyone reads it
                await resp.write(piece)
                hostile.sent_bytes += len(piece)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    hostile.routes[("POST", SYNC_PATH)] = flood
    error = failure(hostile.base_url, request())
    assert error.code == "ResponseTooLarge" and "1,048,576" in error.message
    assert hostile.hits.count(("POST", SYNC_PATH)) == 1  # not paid for again
    assert hostile.sent_bytes < 50 * 2**20  # the client hung up long before 300 MB


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_terminal_control_sequences_from_a_server_are_stripped(
        hostile: Hostile, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    evil = "\x1b[2J\x1b]0;pwned\x07\x9b31mred\x1b[0m\r\x08"
    hostile.routes[("POST", SYNC_PATH)] = answer(
        {"request_id": f"id-{evil}", "code": f"InvalidParameter{evil}",
         "message": f"bad {evil} request " + "x" * 5000}, status=400)
    error = failure(hostile.base_url, request())
    for text in (error.code, error.message, error.request_id or ""):
        assert not CONTROL.search(text), repr(text)
    assert "pwned" not in error.message or "\x1b" not in error.message
    assert len(error.message) <= 600
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: evil\n    prompt: a card\n", encoding="utf-8")
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", hostile.base_url)
    r = run(capsys, "build", "--provider", "dashscope", "-C", str(tmp_path))
    assert r.code == 1 and "InvalidParameter" in r.out
    assert not CONTROL.search(r.out.replace("\n", "")) and not CONTROL.search(r.err.replace("\n", ""))


def test_a_task_id_cannot_steer_the_next_request(hostile: Hostile) -> None:
    hostile.routes[("POST", LEGACY_PATH)] = answer(
        {"request_id": "r", "output": {"task_id": "../../admin?x=1", "task_status": "PENDING"}})
    error = failure(hostile.base_url, request("wan2.2-t2i-flash", "512*512"))
    assert error.code == "BadResponse" and "task_id" in error.message
    assert [h for h in hostile.hits if h[0] == "GET"] == []


def test_debug_logs_hold_no_signed_query_and_no_key_in_any_form(
        hostile: Hostile, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)
    url = hostile.image("ok.png", png(1328, 1328))

    async def echo_key(request: web.Request) -> web.Response:
        await request.read()
        if ("POST", SYNC_PATH) in hostile.hits[:-1]:  # the retry: a good answer
            return web.json_response(qwen_answer([url]))
        text = ('{"request_id": "r", "code": "InternalError", "message": "key ' + escaped
                + " or %" + "%".join(f"{ord(c):02X}" for c in KEY) + " or " + KEY + '"}')
        return web.Response(status=500, text=text, content_type="application/json")

    hostile.routes[("POST", SYNC_PATH)] = echo_key
    gen = generate(hostile.base_url, request())
    assert len(gen.images) == 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/img/ok.png" in logged  # the answer was logged, with its URL...
    assert "Signature" not in logged and "Expires=" not in logged  # ...but not its query
    lowered = logged.lower()
    for form in (KEY, escaped, "%".join(f"{ord(c):02x}" for c in KEY)):
        assert form.lower() not in lowered
    assert "sk-hostile" not in lowered and "\\u0073\\u006b" not in lowered
