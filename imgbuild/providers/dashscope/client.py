"""The real provider: Alibaba Cloud Model Studio (DashScope) text-to-image over HTTP.

Request/response shapes live in `wire`, what each error means in `policy`, waiting in
`timing`, result downloads in `download`; this module does the HTTP conversation: submit (sync
or as an async task), poll, journal, retry, download.

What a timeout costs: a generation POST that fails after it was sent (no answer within
`request_timeout`, or the connection lost mid-answer) may have been billed, and nobody can
know: the API has no idempotency key. Such a POST is retried once at most, on the model's
async endpoint when it has one and the spec does not pin `call:` (a task id is journaled at
once, so a second failure there cannot pay again); every such attempt is counted in
`possibly_paid` and reported.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from imgbuild._version import __version__
from imgbuild.spec import catalogue as models
from imgbuild.providers.base import MODEL, Generation, ProviderError, Request, report_progress
from imgbuild.providers.dashscope import policy, wire
from imgbuild.providers.dashscope.download import DownloadError, Downloader, Fetched
from imgbuild.providers.dashscope.hosts import provider_name, resolve_base_url
from imgbuild.providers.dashscope.journal import Journal
from imgbuild.providers.dashscope.timing import (
    Backoff, PollSchedule, TaskDurations, parse_retry_after)

log = logging.getLogger("imgbuild.dashscope")

# task ids and result URLs live 24 h (§2); an older journal entry can only answer UNKNOWN.
TASK_TTL = 24 * 3600.0
# One HTTP request, a sync generation included: the service can take minutes for an image,
# and the official SDK waits 300 s too (§10).
REQUEST_TIMEOUT = 300.0
# API answers are a few KB (n <= 6 URLs); anything past this is not read (a hostile server).
MAX_ANSWER_BYTES = 2**20
# Connection failures that happen before a request leaves (nothing can have been billed).
_NOT_SENT: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError, getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ClientConnectorError))

class RateLimiter(Protocol):
    """What the scheduler plugs in to pace paid submissions per model."""

    async def submit(self, model: str) -> None:
        """Awaited before every POST submission (each retry too)."""
        ...

    def throttled(self, model: str, retry_after: float | None) -> None:
        """Called on each 429 answered to a submission."""
        ...


class _TaskGone(Exception):
    """A journaled task answered UNKNOWN (expired or never existed): submit anew."""


class DashScopeProvider:
    """Generates images through DashScope, billing each generation key at most once.

    Async tasks (wan2.6 async, legacy text2image) are written to the `journal` right after
    submission, before waiting. A later `generate` with the same key polls that task instead
    of paying again. The provider discards the entry itself only when the task can give no
    images (FAILED, CANCELED, UNKNOWN, all slots failed). After a success the entry is left in
    place on purpose: the CALLER must `journal.discard(key)` once the images are safely in the
    cache, so a crash between here and the cache write still finds the paid task.
    """

    draft = False
    reports_progress = True  # calls base.report_progress: submitting, waiting, downloading

    def __init__(self, api_key: str, base_url: str, *, journal: Journal | None = None,
                 workspace: str | None = None, poll_timeout: float = 600.0,
                 max_retries: int = 6, max_download_bytes: int = 64 * 2**20,
                 request_timeout: float = REQUEST_TIMEOUT, limiter: RateLimiter | None = None,
                 poll_schedule: PollSchedule | None = None, backoff: Backoff | None = None,
                 download_retries: int = 3, key_env: str = "DASHSCOPE_API_KEY",
                 region: str = "beijing") -> None:
        if not api_key:
            raise ValueError("a DashScope API key is required")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self._api_key = api_key
        self._key_pattern = _escaped_forms(api_key)
        self._key_env = key_env  # for the hint after an account error
        self._region = region
        self.base_url = base_url.rstrip("/")
        self.host = parts.netloc  # journal entries are only valid against the same server
        self.name = provider_name(parts.hostname)
        self.workspace = workspace
        self.poll_timeout = poll_timeout
        self.max_retries = max_retries
        self.max_download_bytes = max_download_bytes
        self.request_timeout = request_timeout
        self.download_retries = download_retries
        self._journal = journal
        self._limiter = limiter
        self._poll = poll_schedule or PollSchedule()
        self._backoff = backoff or Backoff()
        self._session: aiohttp.ClientSession | None = None
        self._refused: dict[str, ProviderError] = {}  # model -> why it refuses this account
        self._slow_sync: set[str] = set()  # models whose sync call timed out in this build
        self._durations = TaskDurations()  # learnt per model, to poll near the expected finish

    def __repr__(self) -> str:
        return f"DashScopeProvider(name={self.name!r}, base_url={self.base_url!r})"

    # --- the Provider protocol ----------------------------------------------------------

    async def generate(self, request: Request, key: str) -> Generation:
        refused = self._refused.get(request.model)
        if refused is not None:  # no request goes to a model that refused this account
            raise ProviderError(refused.code, f"not sent: {request.model} refused an earlier "
                                f"request of this build ({refused.message})", scope=MODEL,
                                hint=refused.hint, status=refused.status)
        endpoint = self._endpoint(request)
        try:
            return await self._generate_on(endpoint, request, key)
        except ProviderError as error:
            if error.scope == MODEL:
                self._refused.setdefault(request.model, error)
            if not (error.possibly_paid and error.retryable):
                raise
            first = error
        # The POST may have been billed: one more try, and on the async endpoint when the model
        # has one (its task id is journaled the moment it exists: no second blind payment).
        if models.is_sync_endpoint(endpoint):
            self._slow_sync.add(request.model)
        retry = self._endpoint(request)
        log.warning("%s: %s; trying once more (%s)", request.model, first.message,
                    "as an async task" if retry != endpoint else "same endpoint")
        # Not at once: whatever cut the first answer short (a slow service, a flaky link) gets
        # a moment, as any retry does.
        await asyncio.sleep(max(1.0, self._backoff.delay(1)))
        try:
            generation = await self._generate_on(retry, request, key)
        except ProviderError as error:
            if error.scope == MODEL:
                self._refused.setdefault(request.model, error)
            raise _possibly_paid(error, first.possibly_paid) from None
        generation.possibly_paid += first.possibly_paid
        generation.warnings.append(_paid_note(first.possibly_paid, first.code)
                                   + "; the image arrived on the next try")
        return generation

    async def _generate_on(self, endpoint: str, request: Request, key: str) -> Generation:
        if not wire.is_async(endpoint):
            return await self._generate_sync(request, endpoint)
        task_id = self._journaled_task(key, request.model)
        if task_id is not None:
            report_progress("waiting")
            try:
                return await self._finish_task(task_id, request, key, resumed=True)
            except _TaskGone:
                log.info("journaled task %s is gone; submitting anew", task_id)
        task_id = await self._submit_task(request, endpoint, key)
        return await self._finish_task(task_id, request, key, resumed=False)

    def _endpoint(self, request: Request) -> str:
        model = models.get(request.model)
        if model is None:
            raise ProviderError("ModelNotFound", f"unknown model {request.model!r}")
        endpoint = model.endpoint_for(request.call)
        if endpoint is None:
            raise ProviderError("InvalidParameter", f"{request.model} has no {request.call} API "
                                f"(it supports: {', '.join(model.calls())})")
        if request.call is None and request.model in self._slow_sync:
            # A spec that pins `call: sync` keeps it; the model's default goes async once its
            # sync calls have timed out, where the model offers that.
            endpoint = model.endpoint_for("async") or endpoint
        return endpoint

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- sync ---------------------------------------------------------------------------

    async def _generate_sync(self, request: Request, endpoint: str) -> Generation:
        body = await self._submit(request.model, endpoint, wire.build_body(request, endpoint))
        try:
            return await self._collect(None, request, body)
        except DownloadError as error:
            if error.expired or not error.retryable:
                # A sync answer has no task to ask again: the paid image is lost with its URL.
                raise _lost(error, "it cannot be fetched again") from None
            raise _paid(error, "a sync answer cannot be fetched again: the next build "
                        "generates this image again (billed again)") from None

    # --- async tasks --------------------------------------------------------------------

    def _journaled_task(self, key: str, model: str) -> str | None:
        """The task id of a journal entry this provider may resume, if any."""
        entry = self._journal.get(key) if self._journal else None
        if not entry or entry.get("base_host") != self.host or entry.get("model") != model:
            return None
        age = time.time() - float(entry.get("submitted_at") or 0)  # type: ignore[arg-type]
        if not 0 <= age < TASK_TTL:
            return None
        task_id = entry.get("task_id")
        if not wire.task_id_ok(task_id):  # it would go into a request path: not as it is
            log.warning("ignoring a journal entry with an unusable task id")
            return None
        log.info("resuming task %s from the journal (%.0fs old)", task_id, age)
        return str(task_id)

    async def _submit_task(self, request: Request, endpoint: str, key: str) -> str:
        body = await self._submit(request.model, endpoint, wire.build_body(request, endpoint))
        _, output = wire.task_state(body)
        task_id = output.get("task_id")
        if not wire.task_id_ok(task_id):
            # The task may exist and be billed, but this id cannot be asked about safely.
            what = f"an unusable task_id {wire.clean(task_id, 80)!r}" if task_id else "no task_id"
            raise ProviderError("BadResponse", f"async submit answered {what}", possibly_paid=1,
                                retryable=False, request_id=wire.clean_id(body.get("request_id")))
        assert isinstance(task_id, str)
        if self._journal is not None:
            # Written before we wait: from here on the task is paid for and must not be lost.
            try:
                self._journal.record(key, task_id=task_id, endpoint=endpoint,
                                     model=request.model, base_host=self.host)
            except OSError as exc:
                # The images can still arrive in this run; only crash-resume is lost.
                log.warning("could not journal task %s: %s", task_id, exc)
        log.debug("submitted task %s for %s", task_id, request.model)
        report_progress("waiting")  # after the journal: may stop here, the task is kept
        return task_id

    async def _finish_task(self, task_id: str, request: Request, key: str, *,
                           resumed: bool) -> Generation:
        status, body = await self._wait(task_id, request.model)
        if status in (wire.FAILED, wire.CANCELED, wire.UNKNOWN):
            self._forget(key)  # this task will never give images
            if status == wire.UNKNOWN and resumed:
                raise _TaskGone(task_id)
        if status != wire.SUCCEEDED:
            raise _task_error(task_id, status, body)
        try:
            generation = await self._collect(task_id, request, body)
            generation.resumed = resumed
            return generation
        except DownloadError as error:
            if not error.expired:
                if error.retryable:  # the journal keeps the task: fetched again, free
                    raise _paid(error, f"the journal keeps task {task_id}: the next build "
                                "downloads it again without paying") from None
                self._forget(key)  # refused as it is: asking again would only repeat this
                raise _lost(error, f"task {task_id} would give the same image again") from None
        except ProviderError:
            self._forget(key)  # succeeded without a single image: nothing left to resume
            raise
        # The docs never promise fresh URLs from a task asked again; it costs one query to try.
        log.info("result URLs of task %s expired; asking the task again", task_id)
        body = await self._query(task_id)
        status, _ = wire.task_state(body)
        try:
            if status != wire.SUCCEEDED:
                raise _task_error(task_id, status, body)
            generation = await self._collect(task_id, request, body)
            generation.resumed = resumed
            return generation
        except ProviderError as error:
            if isinstance(error, DownloadError) and not error.expired and error.retryable:
                raise _paid(error, f"the journal keeps task {task_id}") from None
            # Once its URLs are gone the task almost surely is too (both live 24 h).
            self._forget(key)
            raise _lost(error, f"task {task_id} was asked again and gave no fresh result "
                        "URLs") from None

    async def _collect(self, task_id: str | None, request: Request,
                       body: dict[str, Any]) -> Generation:
        """Download the images a successful response (sync call or task query) points to."""
        _, output = wire.task_state(body)
        results = wire.parse_results(output, request)
        request_id = wire.clean_id(body.get("request_id"))
        _require_images(results, request_id)
        report_progress("downloading")
        model = models.get(request.model)
        fetched = await self._downloader().fetch_all(
            results.urls, request.width, request.height, model.max_pixels if model else None)
        warnings = _size_warnings(fetched, request)
        if results.answered:
            warnings.insert(0, f"the service answered {results.answered} images for "
                               f"n={request.n}: kept the first {len(results.urls)}")
        return Generation(images=[f.data for f in fetched], request_id=request_id,
                          task_id=task_id, actual_prompt=results.actual_prompt,
                          failures=results.messages(), slots=results.slots, warnings=warnings)

    async def _wait(self, task_id: str, model: str) -> tuple[str, dict[str, Any]]:
        """Poll until the task leaves PENDING/RUNNING/SUSPENDED; (final status, body)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        polls = 0
        status = "PENDING"
        expected = self._durations.expected(model)
        while True:
            elapsed = loop.time() - start
            delay = self._poll.delay(polls, elapsed, expected)
            if elapsed + delay > self.poll_timeout:
                kept = "; the journal keeps it for the next run" if self._journal else ""
                raise ProviderError("WaitTaskTimeout",
                                    f"task {task_id} still {status} after {elapsed:.0f}s{kept}")
            await asyncio.sleep(delay)
            body = await self._query(task_id)
            polls += 1
            status, output = wire.task_state(body)
            if status not in wire.WAITING:
                if status == wire.SUCCEEDED:
                    self._durations.observe(model, output)
                log.debug("task %s %s after %d poll(s), %.1fs", task_id, status, polls,
                          loop.time() - start)
                return status, body

    def _forget(self, key: str) -> None:
        if self._journal is not None:
            self._journal.discard(key)

    # --- HTTP ---------------------------------------------------------------------------

    async def _submit(self, model: str, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """The single door for generation POSTs (each one may be billed): the rate limiter
        sees every attempt and every 429 here."""
        url = self.base_url + models.ENDPOINT_PATHS[endpoint]
        return await self._call("POST", url, wire.encode(body), async_task=wire.is_async(endpoint),
                                model=model)

    async def _query(self, task_id: str) -> dict[str, Any]:
        # Never with the async header: the service answers 403 to that (§2).
        return await self._call("GET", f"{self.base_url}/tasks/{task_id}")

    async def _call(self, method: str, url: str, data: bytes | None = None, *,
                    async_task: bool = False, model: str | None = None) -> dict[str, Any]:
        """One API call with retries of transient failures; the decoded 200 body. `model` is
        given for generation POSTs, each of which may be billed."""
        attempt = 0
        while True:
            if model is not None and self._limiter is not None:
                await self._limiter.submit(model)
            if model is not None:
                report_progress("submitting")  # right before a POST that may be billed
            retry_after = None
            try:
                status, raw, retry_after = await self._send(method, url, data, async_task)
            except _Oversize as big:
                # Not retried: a server that sends this once will again. A 200 to a generation
                # POST may be a paid image we cannot read.
                error = wire.ApiError(big.status, "ResponseTooLarge", f"the answer to {method} "
                                      f"{_no_query(url)} is larger than {MAX_ANSWER_BYTES:,} bytes; "
                                      "not read", None)
                paid = int(model is not None and big.status == 200)
                raise self._error(error, model, possibly_paid=paid, retryable=False) from None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                error = self._transport_error(exc)
                if model is not None and not isinstance(exc, _NOT_SENT):
                    # Sent, and then no answer: the service may have billed it. generate()
                    # decides about the one retry such a POST gets.
                    raise self._error(error, model, possibly_paid=1) from None
            else:
                if status == 200:
                    return self._decode(raw, paid=model is not None)
                error = wire.parse_error(status, raw)
                if status == 429 and model is not None and self._limiter is not None:
                    self._limiter.throttled(model, retry_after)
                failure = self._error(error, model)
                if not failure.retryable:
                    raise failure
            if attempt >= self.max_retries:
                raise self._error(error, model, suffix=f" (gave up after {attempt + 1} attempts)")
            delay = self._backoff.delay(attempt, retry_after)
            log.info("%s %s: %s %s; retry %d/%d in %.2fs", method, _no_query(url),
                     error.status or "-", error.code, attempt + 1, self.max_retries, delay)
            await asyncio.sleep(delay)
            attempt += 1

    def _transport_error(self, exc: BaseException) -> wire.ApiError:
        if isinstance(exc, asyncio.TimeoutError) and not isinstance(exc, _NOT_SENT):
            return wire.ApiError(0, "Timeout", f"no answer within {self.request_timeout:g}s "
                                 "(timeouts.request)", None)
        code = "Timeout" if isinstance(exc, asyncio.TimeoutError) else "ConnectionError"
        return wire.ApiError(0, code, f"{type(exc).__name__}: {exc}", None)

    async def _send(self, method: str, url: str, data: bytes | None,
                    async_task: bool) -> tuple[int, bytes, float | None]:
        headers = self._headers(post=data is not None, async_task=async_task)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s headers=%s body=%s", method, url, _redacted(headers),
                      self._scrub((data or b"").decode("utf-8", "replace")))
        session = self._get_session()
        # No redirects: following one could carry the Authorization header to another host.
        # The connect timeout is separate, so a timeout tells whether the request was sent.
        timeout = aiohttp.ClientTimeout(total=self.request_timeout,
                                        sock_connect=min(30.0, self.request_timeout / 2))
        async with session.request(method, url, data=data, headers=headers, timeout=timeout,
                                   allow_redirects=False) as resp:
            raw = await _read_capped(resp)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s -> %d %s", method, url, resp.status, self._loggable(raw))
            return resp.status, raw, parse_retry_after(resp.headers.get("Retry-After"))

    def _headers(self, *, post: bool, async_task: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": f"imgbuild/{__version__}",
        }
        if post:
            headers["Content-Type"] = "application/json"
        if post and async_task:
            headers[wire.ASYNC_HEADER] = "enable"
        if self.workspace:
            headers[wire.WORKSPACE_HEADER] = self.workspace
        return headers

    def _decode(self, raw: bytes, *, paid: bool) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # Not retried: a 200 to a generation call may already be billed.
            text = wire.clean(self._scrub(raw[:200].decode("utf-8", "replace")), 200)
            raise ProviderError("BadResponse", f"HTTP 200 with a body that is not a JSON object: "
                                f"{text}", possibly_paid=int(paid), retryable=False)
        return body

    def _error(self, error: wire.ApiError, model: str | None, *, suffix: str = "",
               possibly_paid: int = 0, retryable: bool | None = None) -> ProviderError:
        verdict = policy.classify(error.status, error.code, error.message, model=model,
                                  key_env=self._key_env, region=self._region)
        return ProviderError(error.code, self._scrub(error.message) + suffix,
                             request_id=error.request_id, status=error.status or None,
                             scope=verdict.scope, hint=verdict.hint,
                             retryable=verdict.retryable if retryable is None else retryable,
                             possibly_paid=possibly_paid)

    def _scrub(self, text: str) -> str:
        # Defence in depth: nothing we log or raise may echo the key, even if a server does,
        # in whatever escaping (JSON \u, percent, HTML entities, or a mix of them).
        return self._key_pattern.sub("***", text)

    def _loggable(self, raw: bytes) -> str:
        """An answer as -vv may show it: JSON escapes resolved (so the key is found whatever
        its escaping), signed URLs without their query, the key scrubbed, 500 characters."""
        text = raw[:4096].decode("utf-8", "replace")
        try:
            text = json.dumps(json.loads(raw), ensure_ascii=False)
        except ValueError:
            pass
        return self._scrub(_SIGNED_QUERY.sub(r"\1?…", text))[:500]

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so it belongs to the running loop. No default Authorization header:
        # the same session downloads result images from third-party (OSS) hosts.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.request_timeout))
        return self._session

    def _downloader(self) -> Downloader:
        return Downloader(self._get_session(), self.max_download_bytes, self.request_timeout,
                          self.download_retries, self._backoff)




def _paid_note(count: int, code: str) -> str:
    what = "timed out" if code == "Timeout" else "lost the connection"
    return (f"possibly paid: {count} request{'s' if count != 1 else ''} {what} after sending "
            f"(each may be billed although no image came back)")


def _possibly_paid(error: ProviderError, earlier: int) -> ProviderError:
    """`error` of the retry, counting the earlier possibly-paid attempts with its own."""
    return ProviderError(error.code, error.message, request_id=error.request_id,
                         status=error.status, retryable=error.retryable, scope=error.scope,
                         hint=error.hint, possibly_paid=earlier + error.possibly_paid)


def _paid(error: DownloadError, what_next: str) -> DownloadError:
    """A download failed after its image was paid for: say so, and what happens next."""
    return DownloadError(error.code, f"{error.message}; the image was paid for; {what_next}",
                         expired=error.expired, retryable=error.retryable, status=error.status)


def _lost(error: ProviderError, why: str) -> ProviderError:
    return ProviderError(error.code, f"{error.message}; {why}: the image was paid for and is "
                         "lost, and the next build generates it again (billed again)",
                         request_id=error.request_id, status=error.status)


def _size_warnings(fetched: list[Fetched], request: Request) -> list[str]:
    """One line when images came back a few pixels off the request (kept; the lock says so)."""
    off = [f"{f.width}*{f.height}" for f in fetched if (f.width, f.height) != (request.width, request.height)]
    if not off:
        return []
    return [f"{len(off)} image(s) came back as {', '.join(sorted(set(off)))} instead of "
            f"{request.size}: kept, with the actual size in the lock"]


def _no_query(url: str) -> str:
    return url.split("?", 1)[0]


# The query of a URL in logged text: signed result URLs carry their OSS signature there.
_SIGNED_QUERY = re.compile(r"(https?:(?:\\?/){2}[^\s\"'?]*)\?[^\s\"']*")


def _escaped_forms(secret: str) -> re.Pattern[str]:
    """Each character of `secret` as itself, a JSON \\u escape, a %-escape or an HTML entity."""
    def forms(c: str) -> str:
        code = ord(c)
        return "(?:" + "|".join([re.escape(c), rf"\\u{code:04x}", rf"%{code:02x}",
                                 rf"&#{code};", rf"&#x{code:x};"]) + ")"
    return re.compile("".join(forms(c) for c in secret), re.IGNORECASE)


class _Oversize(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length > MAX_ANSWER_BYTES:
        raise _Oversize(resp.status)
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        buf += chunk
        if len(buf) > MAX_ANSWER_BYTES:
            raise _Oversize(resp.status)
    return bytes(buf)


def _task_error(task_id: str, status: str, body: dict[str, Any]) -> ProviderError:
    _, output = wire.task_state(body)
    request_id = wire.clean_id(body.get("request_id"))
    if status == wire.FAILED:
        return ProviderError(wire.clean(output.get("code") or "TaskFailed", 100),
                             wire.clean(output.get("message") or f"task {task_id} failed"),
                             request_id=request_id)
    if status == wire.CANCELED:
        return ProviderError("TaskCanceled", f"task {task_id} was canceled", request_id=request_id)
    if status == wire.UNKNOWN:
        return ProviderError("TaskUnknown", f"task {task_id} is unknown to the service "
                             "(expired after 24 h, or never existed)", request_id=request_id)
    return ProviderError("BadResponse", f"task {task_id} answered status "
                         f"{wire.clean(status, 40) or 'none'!r}", request_id=request_id)


def _require_images(results: wire.Results, request_id: str | None) -> None:
    if not results.urls:
        code, message = (results.failures or [("NoImages", "no images in the response")])[0]
        raise ProviderError(code, message, request_id=request_id)


def _redacted(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: ("Bearer ***" if k.lower() == "authorization" else v) for k, v in headers.items()}



__all__ = ["TASK_TTL", "DashScopeProvider", "RateLimiter", "resolve_base_url"]
