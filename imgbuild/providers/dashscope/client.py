"""The real provider: Alibaba Cloud Model Studio (DashScope) text-to-image over HTTP.

Request/response shapes live in dashscope_wire, waiting policy in dashscope_timing, result
downloads in dashscope_download; this module does the HTTP conversation: submit (sync or as an
async task), poll, journal, retry, download.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from imgbuild._version import __version__
from imgbuild.spec import catalogue as models
from imgbuild.providers.dashscope.journal import Journal
from imgbuild.providers.dashscope import policy, wire
from imgbuild.providers.base import Generation, ProviderError, Request, report_progress
from imgbuild.providers.dashscope.hosts import provider_name, resolve_base_url
from imgbuild.providers.dashscope.download import DownloadError, Downloader
from imgbuild.providers.dashscope.timing import Backoff, PollSchedule, parse_retry_after

log = logging.getLogger("imgbuild.dashscope")

# task ids and result URLs live 24 h (§2); an older journal entry can only answer UNKNOWN.
TASK_TTL = 24 * 3600.0

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
                 request_timeout: float = 120.0, limiter: RateLimiter | None = None,
                 poll_schedule: PollSchedule | None = None, backoff: Backoff | None = None,
                 download_retries: int = 3, key_env: str = "DASHSCOPE_API_KEY",
                 region: str = "beijing") -> None:
        if not api_key:
            raise ValueError("a DashScope API key is required")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) base URL: {base_url!r}")
        self._api_key = api_key
        self._key_env = key_env
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

    def __repr__(self) -> str:
        return f"DashScopeProvider(name={self.name!r}, base_url={self.base_url!r})"

    # --- the Provider protocol ----------------------------------------------------------

    async def generate(self, request: Request, key: str) -> Generation:
        endpoint = _endpoint(request)
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
            if not error.expired:
                raise
            # A sync answer has no task to ask again: the paid image is lost with its URL.
            raise DownloadError(error.code, f"{error.message}; a sync result cannot be fetched "
                                "again, so the next build generates this image again (billed again)",
                                expired=True, status=error.status) from None

    # --- async tasks --------------------------------------------------------------------

    def _journaled_task(self, key: str, model: str) -> str | None:
        """The task id of a journal entry this provider may resume, if any."""
        entry = self._journal.get(key) if self._journal else None
        if not entry or entry.get("base_host") != self.host or entry.get("model") != model:
            return None
        age = time.time() - float(entry.get("submitted_at") or 0)  # type: ignore[arg-type]
        if not 0 <= age < TASK_TTL:
            return None
        log.info("resuming task %s from the journal (%.0fs old)", entry.get("task_id"), age)
        return _str_or_none(entry.get("task_id"))

    async def _submit_task(self, request: Request, endpoint: str, key: str) -> str:
        body = await self._submit(request.model, endpoint, wire.build_body(request, endpoint))
        _, output = wire.task_state(body)
        task_id = _str_or_none(output.get("task_id"))
        if not task_id:
            raise ProviderError("BadResponse", "async submit answered without a task_id",
                                request_id=_str_or_none(body.get("request_id")))
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
        status, body = await self._wait(task_id)
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
                raise  # the journal keeps the task: the next run downloads without paying
        except ProviderError:
            self._forget(key)  # succeeded without a single image: nothing left to resume
            raise
        # Signed result URLs expire; the task hands out fresh ones while it lives (24 h).
        log.info("result URLs of task %s expired; asking the task again", task_id)
        body = await self._query(task_id)
        status, _ = wire.task_state(body)
        if status != wire.SUCCEEDED:
            raise _task_error(task_id, status, body)
        try:
            return await self._collect(task_id, request, body)
        except DownloadError as error:
            if not error.expired:
                raise
            kept = ("the journal keeps it: the next build asks it again, without paying"
                    if self._journal is not None else "nothing was kept")
            raise DownloadError(error.code, f"{error.message}; task {task_id} was asked again for "
                                f"fresh URLs and they expired too; {kept}",
                                expired=True, status=error.status) from None

    async def _collect(self, task_id: str | None, request: Request,
                       body: dict[str, Any]) -> Generation:
        """Download the images a successful response (sync call or task query) points to."""
        _, output = wire.task_state(body)
        results = wire.parse_results(output, request)
        request_id = _str_or_none(body.get("request_id"))
        _require_images(results, request_id)
        report_progress("downloading")
        images = await self._downloader().fetch_all(results.urls, request.width, request.height)
        return Generation(images=images, request_id=request_id, task_id=task_id,
                          actual_prompt=results.actual_prompt, failures=results.messages(),
                          slots=results.slots)

    async def _wait(self, task_id: str) -> tuple[str, dict[str, Any]]:
        """Poll until the task leaves PENDING/RUNNING/SUSPENDED; (final status, body)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        polls = 0
        status = "PENDING"
        while True:
            elapsed = loop.time() - start
            delay = self._poll.delay(polls, elapsed)
            if elapsed + delay > self.poll_timeout:
                kept = "; the journal keeps it for the next run" if self._journal else ""
                raise ProviderError("WaitTaskTimeout",
                                    f"task {task_id} still {status} after {elapsed:.0f}s{kept}")
            await asyncio.sleep(delay)
            body = await self._query(task_id)
            polls += 1
            status, _ = wire.task_state(body)
            if status not in wire.WAITING:
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
        """One API call with retries of transient failures; the decoded 200 body."""
        attempt = 0
        while True:
            if model is not None and self._limiter is not None:
                await self._limiter.submit(model)
            if model is not None:
                report_progress("submitting")  # right before a POST that may be billed
            try:
                status, raw, retry_after = await self._send(method, url, data, async_task)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                # Resets and timeouts are retried; on a POST the service may have billed the
                # first attempt already, which no client can know (no idempotency keys).
                code = "Timeout" if isinstance(exc, asyncio.TimeoutError) else "ConnectionError"
                error = wire.ApiError(0, code, f"{type(exc).__name__}: {exc}", None)
                retry_after = None
            else:
                if status == 200:
                    return self._decode(raw)
                error = wire.parse_error(status, raw)
                if status == 429 and model is not None and self._limiter is not None:
                    self._limiter.throttled(model, retry_after)
                if not wire.is_retryable(error.status, error.code):
                    raise self._api_error(error)
            if attempt >= self.max_retries:
                raise self._api_error(error, f" (gave up after {attempt + 1} attempts)")
            delay = self._backoff.delay(attempt, retry_after)
            log.info("%s %s: %s %s; retry %d/%d in %.2fs", method, url, error.status or "-",
                     error.code, attempt + 1, self.max_retries, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def _send(self, method: str, url: str, data: bytes | None,
                    async_task: bool) -> tuple[int, bytes, float | None]:
        headers = self._headers(post=data is not None, async_task=async_task)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s headers=%s body=%s", method, url, _redacted(headers),
                      self._scrub((data or b"").decode("utf-8", "replace")))
        session = self._get_session()
        # No redirects: following one could carry the Authorization header to another host.
        async with session.request(method, url, data=data, headers=headers,
                                   allow_redirects=False) as resp:
            raw = await resp.read()
            log.debug("%s %s -> %d %s", method, url, resp.status,
                      self._scrub(raw[:500].decode("utf-8", "replace")))
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

    def _decode(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # Not retried: a 200 to a generation call may already be billed.
            raise ProviderError("BadResponse", "HTTP 200 with a body that is not a JSON object: "
                                + self._scrub(raw[:200].decode("utf-8", "replace")))
        return body

    def _api_error(self, error: wire.ApiError, suffix: str = "") -> ProviderError:
        fatal = wire.is_fatal(error.status, error.code)
        hint = (policy.account_hint(error.code, key_env=self._key_env, region=self._region)
                if fatal else None)
        return ProviderError(error.code, self._scrub(error.message) + suffix,
                             request_id=error.request_id, status=error.status or None,
                             fatal=fatal, hint=hint)

    def _scrub(self, text: str) -> str:
        # Defence in depth: nothing we log or raise may echo the key, even if a server does.
        return text.replace(self._api_key, "***")

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




def _endpoint(request: Request) -> str:
    model = models.get(request.model)
    if model is None:
        raise ProviderError("ModelNotFound", f"unknown model {request.model!r}")
    endpoint = model.endpoint_for(request.call)
    if endpoint is None:
        raise ProviderError("InvalidParameter", f"{request.model} has no {request.call} API "
                            f"(it supports: {', '.join(model.calls())})")
    return endpoint


def _task_error(task_id: str, status: str, body: dict[str, Any]) -> ProviderError:
    _, output = wire.task_state(body)
    request_id = _str_or_none(body.get("request_id"))
    if status == wire.FAILED:
        return ProviderError(str(output.get("code") or "TaskFailed"),
                             str(output.get("message") or f"task {task_id} failed"),
                             request_id=request_id)
    if status == wire.CANCELED:
        return ProviderError("TaskCanceled", f"task {task_id} was canceled", request_id=request_id)
    if status == wire.UNKNOWN:
        return ProviderError("TaskUnknown", f"task {task_id} is unknown to the service "
                             "(expired after 24 h, or never existed)", request_id=request_id)
    return ProviderError("BadResponse", f"task {task_id} answered status {status or 'none'!r}",
                         request_id=request_id)


def _require_images(results: wire.Results, request_id: str | None) -> None:
    if not results.urls:
        code, message = (results.failures or [("NoImages", "no images in the response")])[0]
        raise ProviderError(code, message, request_id=request_id)


def _redacted(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: ("Bearer ***" if k.lower() == "authorization" else v) for k, v in headers.items()}


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None


__all__ = ["TASK_TTL", "DashScopeProvider", "RateLimiter", "resolve_base_url"]
