"""Shared emulator state: billing, counters, the request log, rate windows, result images.

The aiohttp handlers run on the emulator's event loop while tests read stats from another
thread, so every mutation and snapshot goes through one `threading.Lock`. Critical sections
are tiny (counter bumps, list appends), so contention is irrelevant.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from .faults import EmulatorConfig, Fault
from .images import ImageSpec, render_png

_PNG_CACHE_SIZE = 32  # rendered PNGs kept for repeated downloads (retries, tests)
_REQUEST_LOG_MAX = 10_000


def now_str(t: float | None = None) -> str:
    """DashScope task time format: 'YYYY-MM-DD HH:mm:ss.SSS' (local time)."""
    t = time.time() if t is None else t
    base = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return f"{base}.{int((t % 1) * 1000):03d}"


def redact_headers(headers: Any) -> dict[str, str]:
    """Copy request headers, never keeping the API key: it must not be stored or logged."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() == "authorization":
            scheme = value.split(" ", 1)[0] if " " in value else ""
            value = f"{scheme} ***" if scheme else "***"
        out[name] = value
    return out


@dataclass
class StoredImage:
    spec: ImageSpec
    expires_at: float  # time.time() after which downloads answer 403


class State:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self._secret = secrets.token_bytes(16)  # signs result URLs, like OSS's Signature
        self._images: dict[str, StoredImage] = {}
        self._png_cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._windows: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._sync_in_flight: collections.Counter[str] = collections.Counter()
        self.reset_counters()

    def reset_counters(self) -> None:
        with self.lock:
            self.billed_by_model: collections.Counter[str] = collections.Counter()
            self.requests_by_endpoint: collections.Counter[str] = collections.Counter()
            self.throttled = 0
            self.in_flight: collections.Counter[str] = collections.Counter()
            self.max_concurrent: dict[str, int] = {}
            self.submissions: list[dict[str, Any]] = []
            self.request_log: list[dict[str, Any]] = []
            # per async task: model, submit/end times, polls, when a poll first saw it finished
            self.task_log: dict[str, dict[str, Any]] = {}
            self._windows.clear()

    # ---- request log and counters -------------------------------------------------

    def log_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.request_log.append(entry)
            if len(self.request_log) > _REQUEST_LOG_MAX:
                del self.request_log[: len(self.request_log) - _REQUEST_LOG_MAX]

    def count_endpoint(self, endpoint: str) -> None:
        with self.lock:
            self.requests_by_endpoint[endpoint] += 1

    def count_throttled(self) -> None:
        with self.lock:
            self.throttled += 1

    def log_submission(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.submissions.append(entry)

    def log_task(self, task_id: str, **fields: Any) -> None:
        with self.lock:
            self.task_log.setdefault(task_id, {"task_id": task_id, "polls": 0}).update(fields)

    def task_polled(self, task_id: str, finished: bool) -> None:
        """Count a query of a known task; remember when one first saw it finished."""
        with self.lock:
            entry = self.task_log.get(task_id)
            if entry is None:
                return
            entry["polls"] += 1
            if finished and entry.get("seen") is None:
                entry["seen"] = time.time()

    def bill(self, model: str, images: int) -> None:
        if images > 0:
            with self.lock:
                self.billed_by_model[model] += images

    # ---- concurrency accounting (sync calls and RUNNING tasks alike) --------------

    def start_work(self, model: str) -> None:
        with self.lock:
            self.in_flight[model] += 1
            self.max_concurrent[model] = max(
                self.max_concurrent.get(model, 0), self.in_flight[model]
            )

    def end_work(self, model: str) -> None:
        with self.lock:
            self.in_flight[model] -= 1

    def try_start_sync(self, model: str) -> bool:
        """Admit a sync call unless the model's configured sync concurrency is reached."""
        limit = self.config.sync_limit_for(model)
        with self.lock:
            if limit is not None and self._sync_in_flight[model] >= limit:
                return False
            self._sync_in_flight[model] += 1
        self.start_work(model)
        return True

    def end_sync(self, model: str) -> None:
        with self.lock:
            self._sync_in_flight[model] -= 1
        self.end_work(model)

    # ---- rate limiting -------------------------------------------------------------

    def check_rate(self, model: str, documented_rps: float) -> float | None:
        """Record a request; None if admitted, else seconds until the window has room."""
        rps = self.config.rate_limit_for(model, documented_rps)
        if rps is None or rps <= 0:
            return None
        window = max(1.0, 1.0 / rps)
        limit = max(1, round(rps * window))
        now = time.monotonic()
        with self.lock:
            q = self._windows[model]
            while q and q[0] <= now - window:
                q.popleft()
            if len(q) >= limit:
                return q[0] + window - now
            q.append(now)
        return None

    # ---- one-shot faults -------------------------------------------------------------

    def pop_fault(self, field_name: str) -> Fault | None:
        with self.lock:
            queue = getattr(self.config, field_name)
            if not queue:
                return None
            return Fault.parse(queue.pop(0))

    def take_count(self, field_name: str) -> bool:
        """Consume one unit of an integer 'next N' fault; True if it applies now."""
        with self.lock:
            remaining = int(getattr(self.config, field_name) or 0)
            if remaining <= 0:
                return False
            setattr(self.config, field_name, remaining - 1)
            return True

    # ---- result images ---------------------------------------------------------------

    def url_ttl(self, *, task: bool) -> float:
        if task and self.config.task_url_ttl is not None:
            return float(self.config.task_url_ttl)
        return float(self.config.url_ttl)

    def store_image(self, spec: ImageSpec, origin: str, *, task: bool = False) -> str:
        """Register an image and return its signed, expiring URL on this server."""
        image_id = secrets.token_hex(12)
        expires_at = time.time() + self.url_ttl(task=task)
        with self.lock:
            self._images[image_id] = StoredImage(spec, expires_at)
        expires = math.ceil(expires_at)
        return (
            f"{origin}/results/{image_id}.png?Expires={expires}"
            f"&OSSAccessKeyId=LTAI-emulator&Signature={self.sign(image_id, str(expires))}"
        )

    def refresh_url(self, url: str) -> str:
        """The same image under a freshly signed URL if `url` has expired, else `url`: a task
        query hands out live result URLs for as long as the task lives."""
        origin, sep, rest = url.partition("/results/")
        stored = self.image(rest.split(".png", 1)[0]) if sep else None
        if stored is None or time.time() <= stored.expires_at:
            return url
        return self.store_image(stored.spec, origin)  # a re-signed URL lives url_ttl

    def sign(self, image_id: str, expires: str) -> str:
        return hmac.new(self._secret, f"{image_id}:{expires}".encode(), hashlib.sha256).hexdigest()[
            :28
        ]

    def image(self, image_id: str) -> StoredImage | None:
        with self.lock:
            return self._images.get(image_id)

    def png(self, image_id: str, spec: ImageSpec) -> bytes:
        """Render (or reuse) the PNG. Called from a worker thread: rendering takes ~0.1 s."""
        with self.lock:
            cached = self._png_cache.get(image_id)
            if cached is not None:
                self._png_cache.move_to_end(image_id)
                return cached
        data = render_png(spec)
        with self.lock:
            self._png_cache[image_id] = data
            while len(self._png_cache) > _PNG_CACHE_SIZE:
                self._png_cache.popitem(last=False)
        return data

    # ---- snapshots -------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "billed": sum(self.billed_by_model.values()),
                "billed_by_model": dict(self.billed_by_model),
                "requests_by_endpoint": dict(self.requests_by_endpoint),
                "throttled": self.throttled,
                "max_concurrent": dict(self.max_concurrent),
                "in_flight": {k: v for k, v in self.in_flight.items() if v},
                "submissions": [dict(s) for s in self.submissions],
                "requests": [dict(r) for r in self.request_log],
                "tasks": [dict(t) for t in self.task_log.values()],
            }
