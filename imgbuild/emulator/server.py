"""aiohttp routes: the DashScope API under /api/v1, result downloads, and /__emulator__.

Order of checks on a generation POST (mirrors a gateway in front of a model service):
auth (401) -> injected fail_next fault -> body/model/endpoint (400) -> async header (403)
-> rate limit (429) -> parameter validation (400) -> moderation (400) -> sync concurrency (429)
-> generate. Every /api/v1 and /results request is logged with the API key redacted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import protocol, tables
from .faults import EmulatorConfig
from .protocol import ApiError, new_request_id
from .state import State, now_str, redact_headers
from .tables import API_PREFIX, ASYNC, I2I, LEGACY, ROUTES, SYNC
from .tasks import TERMINAL, TaskManager, produce_slots

STATE_KEY = web.AppKey("state", State)
TASKS_KEY = web.AppKey("tasks", TaskManager)
API_KEY_KEY = web.AppKey("api_key", str)


@dataclass
class RequestContext:
    """What the middleware and handlers share about one request (body, outcome)."""

    json: Any = None
    bad_json: bool = False
    task_id: str | None = None
    error_code: str | None = None


# aiohttp >= 3.14 warns on plain string keys for request storage; older versions lack RequestKey.
_CTX: Any = (
    web.RequestKey("emulator_ctx", RequestContext) if hasattr(web, "RequestKey") else "emulator_ctx"
)


def ctx(request: web.Request) -> RequestContext:
    return request[_CTX]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ENDPOINT_BY_PATH = {API_PREFIX + path: ep for ep, path in ROUTES.items()}
_CHUNK = 64 * 1024


def create_app(state: State, api_key: str | None = None) -> web.Application:
    app = web.Application(middlewares=[_log_and_errors], client_max_size=8 * 1024 * 1024)
    app[STATE_KEY] = state
    app[TASKS_KEY] = TaskManager(state)
    app[API_KEY_KEY] = api_key or ""
    for endpoint, path in ROUTES.items():
        app.router.add_post(API_PREFIX + path, _generation_handler(endpoint))
    app.router.add_get(API_PREFIX + "/tasks/{task_id}", _get_task)
    app.router.add_post(API_PREFIX + "/tasks/{task_id}/cancel", _cancel_task)
    app.router.add_route("*", API_PREFIX + "/{tail:.*}", _unknown_api_path)
    app.router.add_get("/results/{name}", _download)
    app.router.add_get("/__emulator__/stats", _stats)
    app.router.add_post("/__emulator__/reset", _reset)
    app.router.add_get("/__emulator__/config", _get_config)
    app.router.add_post("/__emulator__/config", _set_config)
    app.on_shutdown.append(_shutdown)
    return app


async def _shutdown(app: web.Application) -> None:
    await app[TASKS_KEY].shutdown()


# ---- middleware: logging, auth, error envelopes --------------------------------------------


def _endpoint_name(request: web.Request) -> str:
    path = request.path
    if path in _ENDPOINT_BY_PATH:
        return _ENDPOINT_BY_PATH[path]
    if path.startswith(API_PREFIX + "/tasks/"):
        return "tasks.cancel" if path.endswith("/cancel") else "tasks.get"
    if path.startswith("/results/"):
        return "results"
    return "other"


@web.middleware
async def _log_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/__emulator__"):
        return await handler(request)
    state = request.app[STATE_KEY]
    context = RequestContext()
    request[_CTX] = context
    if request.can_read_body:
        raw = await request.read()
        try:
            context.json = json.loads(raw) if raw else None
        except ValueError:
            context.bad_json = True
    body = context.json
    endpoint = _endpoint_name(request)
    state.count_endpoint(endpoint)
    entry: dict[str, Any] = {
        "time": time.time(),
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "headers": redact_headers(request.headers),
        "json": body,
        "endpoint": endpoint,
        "status": None,
    }
    # Logged on arrival, so resets and hangs are visible too ("status" stays None for them).
    state.log_request(entry)
    try:
        if request.path.startswith(API_PREFIX + "/"):
            _check_auth(request)
            if state.take_count("reset_next"):
                return await _reset_connection(request)
        response = await handler(request)
    except ApiError as err:
        response = _error_response(err)
    entry["status"] = response.status
    if response.status == 429:
        state.count_throttled()
    if endpoint in ROUTES:
        _log_submission(state, request, endpoint, body, response)
    return response


def _check_auth(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if not header or (scheme.lower() == "bearer" and not key.strip()):
        raise ApiError(401, "InvalidApiKey", "No API-key provided.")
    expected = request.app[API_KEY_KEY]
    if scheme.lower() != "bearer" or (expected and key.strip() != expected):
        raise ApiError(401, "InvalidApiKey", "Invalid API-key provided.")


def _error_response(err: ApiError) -> web.Response:
    if err.status == 504:  # gateway timeouts come from the proxy: HTML, not the JSON envelope
        return web.Response(
            status=504,
            text="<html><body><h1>504 Gateway Time-out</h1></body></html>",
            content_type="text/html",
            headers=err.headers,
        )
    body = {"request_id": new_request_id(), "code": err.code, "message": err.message}
    return web.json_response(body, status=err.status, headers=err.headers)


def _log_submission(
    state: State, request: web.Request, endpoint: str, body: Any, response: web.StreamResponse
) -> None:
    params = body.get("parameters") if isinstance(body, dict) else None
    params = params if isinstance(params, dict) else {}
    now = time.time()
    state.log_submission(
        {
            "time": now,
            "time_str": now_str(now),
            "endpoint": endpoint,
            "model": body.get("model") if isinstance(body, dict) else None,
            "n": params.get("n"),
            "size": params.get("size"),
            "status": response.status,
            "code": ctx(request).error_code,
            "task_id": ctx(request).task_id,
            "content": _content_kinds(body),
            "image_sha256": _image_digests(body),
        }
    )


def _image_digests(body: Any) -> list[str]:
    """sha256 of each input image sent as a data URI, in order: which bytes an edit read."""
    import base64
    import binascii
    import hashlib

    inp = body.get("input") if isinstance(body, dict) else None
    if not isinstance(inp, dict):
        return []
    if "messages" in inp:
        try:
            items = [i.get("image") for i in inp["messages"][0]["content"] if isinstance(i, dict)]
        except (KeyError, IndexError, TypeError, AttributeError):
            return []
    else:
        items = inp.get("images") if isinstance(inp.get("images"), list) else []
    digests = []
    for item in items:
        if isinstance(item, str) and item.startswith("data:") and ";base64," in item:
            try:
                data = base64.b64decode(item.split(";base64,", 1)[1], validate=True)
            except (binascii.Error, ValueError):
                continue
            digests.append(hashlib.sha256(data).hexdigest())
    return digests


def _content_kinds(body: Any) -> list[str]:
    """The message's items as "text" / "image" (in order): where the input images went. For
    the image2image task: "prompt", then one "images[]" per item of `input.images`."""
    inp = body.get("input") if isinstance(body, dict) else None
    if isinstance(inp, dict) and "messages" not in inp:
        listed = inp.get("images")
        return (["prompt"] if "prompt" in inp else []) + ["images[]"] * (
            len(listed) if isinstance(listed, list) else 0)
    try:
        content = body["input"]["messages"][0]["content"]
        return [("image" if "image" in item else "text" if "text" in item else "?")
                for item in content if isinstance(item, dict)]
    except (KeyError, IndexError, TypeError):
        return []


async def _reset_connection(request: web.Request) -> web.StreamResponse:
    """Send the start of a response, then drop the connection (a mid-response reset)."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.content_length = 4096
    await resp.prepare(request)
    await resp.write(b'{"output": {"choi')
    _abort(request)
    return resp


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


# ---- generation endpoints ------------------------------------------------------------------


def _generation_handler(endpoint: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await _generate(request, endpoint)
        except ApiError as err:
            ctx(request).error_code = err.code
            raise

    return handler


async def _generate(request: web.Request, endpoint: str) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fault = state.pop_fault("fail_next")
    if fault is not None:
        raise ApiError.from_fault(fault)
    if ctx(request).bad_json:
        raise protocol.bad("The request body is not valid JSON.")
    body = ctx(request).json
    model = protocol.resolve_model(endpoint, body, state.config.region)
    if model.name in state.config.denied_models:
        raise ApiError(403, "Model.AccessDenied", "Model access denied.")
    is_async = request.headers.get("X-DashScope-Async", "").strip().lower() == "enable"
    if endpoint == SYNC and is_async:
        raise ApiError(403, "AccessDenied", protocol.ASYNC_UNSUPPORTED)
    legacy_sync = endpoint == LEGACY and not is_async and model.legacy_sync
    if endpoint in (ASYNC, LEGACY, I2I) and not is_async and not legacy_sync:
        raise ApiError(403, "AccessDenied", protocol.SYNC_UNSUPPORTED)
    wait = state.check_rate(model.name, tables.documented_limit(model, state.config.region).rps)
    if wait is not None:
        raise ApiError(
            429,
            "Throttling.RateQuota",
            "Requests rate limit exceeded, please try again later.",
            headers={"Retry-After": _retry_after(state.config, wait)},
        )
    req = protocol.parse_generation(endpoint, model, body)
    if protocol.moderation_hit(req, state.config.moderation_words):
        raise ApiError(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
    origin = f"{request.scheme}://{request.host}"
    if endpoint == SYNC or legacy_sync:
        return await _run_sync(state, req, origin)
    task = request.app[TASKS_KEY].submit(req, origin)
    ctx(request).task_id = task.task_id
    return web.json_response(protocol.submit_body(task.task_id, new_request_id()))


def _retry_after(config: EmulatorConfig, wait: float) -> str:
    if config.retry_after is not None:
        return f"{config.retry_after:g}"
    return str(max(1, int(wait + 0.999)))


async def _wait_sync_latency(state: State) -> None:
    # Re-read in short steps, like a task's duration: a test holds calls with a long latency
    # and releases those already waiting with emu.configure(sync_latency=0).
    started = time.monotonic()
    while (left := started + state.config.sync_latency - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.1))


async def _run_sync(state: State, req: protocol.GenRequest, origin: str) -> web.Response:
    """Endpoint A, or C without the async header (ImageSynthesis.sync_call, wan2.2 only)."""
    name = req.model.name
    started = time.time()
    if not state.try_start_sync(name):
        raise ApiError(
            429,
            "Throttling",
            "Too many concurrent requests for this model, please try again later.",
            headers={"Retry-After": _retry_after(state.config, 1.0)},
        )
    try:
        await _wait_sync_latency(state)
        slots = produce_slots(req, state, origin)
        ok = sum(1 for s in slots if s.url)
        if ok:  # billed while still in flight: whoever waits for no call in flight sees the bill
            state.bill(name, ok)
    finally:
        state.end_sync(name)
    if ok == 0:
        raise ApiError.from_fault(protocol.SLOT_TIMEOUT)
    if req.endpoint == LEGACY:
        body = protocol.legacy_sync_body(req, slots, new_request_id(), now_str(started), now_str())
    else:
        body = protocol.sync_body(req, slots, new_request_id())
    return web.json_response(body)


# ---- task endpoints -------------------------------------------------------------------------


async def _get_task(request: web.Request) -> web.Response:
    if request.headers.get("X-DashScope-Async"):
        raise ApiError(403, "AccessDenied", protocol.ASYNC_UNSUPPORTED)
    fault = request.app[STATE_KEY].pop_fault("fail_next_polls")
    if fault is not None:
        raise ApiError.from_fault(fault)
    task_id = request.match_info["task_id"]
    task = request.app[TASKS_KEY].get(task_id)
    request_id = new_request_id()
    if task is None:
        return web.json_response(
            {"request_id": request_id, "output": {"task_id": task_id, "task_status": "UNKNOWN"}}
        )
    if task.status == "SUCCEEDED":
        # Asked again, a finished task hands out fresh URLs for those that expired: only when
        # told to, since the docs never promise it.
        state = request.app[STATE_KEY]
        if task.reported and state.config.resign_expired_urls:
            for slot in task.slots:
                if slot.url:
                    slot.url = state.refresh_url(slot.url)
        task.reported = True
    request.app[STATE_KEY].task_polled(task_id, task.status in TERMINAL)
    output, usage = task.output()
    body: dict[str, Any] = {"request_id": request_id, "output": output}
    if usage is not None:
        body["usage"] = usage
    return web.json_response(body)


async def _cancel_task(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    result = request.app[TASKS_KEY].cancel(task_id)
    if result == "ok":
        return web.json_response({"request_id": new_request_id()})
    if result == "unknown":
        raise ApiError(404, "NotFound", f"Task {task_id} does not exist or has expired.")
    raise ApiError(
        400,
        "UnsupportedOperation",
        f"Failed to cancel the task, please confirm if the task is in PENDING status (current: {result}).",
    )


async def _unknown_api_path(request: web.Request) -> web.Response:
    raise ApiError(404, "InvalidURL", protocol.URL_ERROR)


# ---- result downloads (OSS-like) -------------------------------------------------------------


def _oss_error(status: int, code: str, message: str) -> web.Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
        f"  <Code>{code}</Code>\n  <Message>{message}</Message>\n"
        f"  <RequestId>{new_request_id().replace('-', '').upper()[:24]}</RequestId>\n"
        "  <HostId>dashscope-result-emulator.oss-cn-beijing.aliyuncs.com</HostId>\n"
        f"  <ServerTime>{time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime())}</ServerTime>\n</Error>\n"
    )
    return web.Response(status=status, text=xml, content_type="application/xml")


async def _download(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    image_id = request.match_info["name"].removesuffix(".png")
    stored = state.image(image_id)
    if stored is None:
        return _oss_error(404, "NoSuchKey", "The specified key does not exist.")
    expires = request.query.get("Expires", "")
    if request.query.get("Signature", "") != state.sign(image_id, expires):
        return _oss_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    if time.time() > stored.expires_at:
        return _oss_error(403, "AccessDenied", "Request has expired.")
    if state.take_count("download_reset_next"):
        _abort(request)
        return web.Response(status=500)
    data = await asyncio.get_running_loop().run_in_executor(None, state.png, image_id, stored.spec)
    if state.take_count("download_corrupt_next"):
        mid = len(data) // 2
        data = data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]
    truncate = state.take_count("download_truncate_next")
    resp = web.StreamResponse(headers={"Content-Type": "image/png"})
    resp.content_length = len(data)
    await resp.prepare(request)
    await _send(
        resp, data[: len(data) // 2] if truncate else data, state.config.download_bytes_per_sec
    )
    if truncate:
        _abort(request)  # fewer bytes than Content-Length, then the connection drops
        return resp
    await resp.write_eof()
    return resp


async def _send(resp: web.StreamResponse, data: bytes, rate: float | None) -> None:
    chunk = _CHUNK if not rate else max(1, min(_CHUNK, int(rate / 10)))
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        await resp.write(piece)
        if rate:
            await asyncio.sleep(len(piece) / rate)


# ---- emulator control (no auth; not part of the DashScope API) --------------------------------


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].stats())


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset_counters()
    return web.json_response({"ok": True})


async def _get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].config.to_dict())


async def _set_config(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise TypeError("config changes must be a JSON object")
        with state.lock:
            state.config.update(**changes)
    except (ValueError, TypeError) as err:
        return web.json_response({"ok": False, "error": str(err)}, status=400)
    return web.json_response(state.config.to_dict())
