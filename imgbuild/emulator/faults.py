"""Emulator configuration: timings, limits and fault injection.

Everything the emulator does differently from "a fast, healthy DashScope" is a field of
`EmulatorConfig`. Set it in-process (`Emulator(EmulatorConfig(...))`, `emu.configure(...)`),
from a YAML mapping (`imgbuild emulator --config faults.yaml`), or at runtime with
`POST /__emulator__/config` and a JSON object of changes.

Service
    region             which region the emulator plays (beijing, singapore, virginia): the
                       models it offers (others answer "Model not exist") and their
                       documented limits come from `tables` (default beijing)

Timings (seconds)
    task_duration      time an async task spends RUNNING before it finishes (default 0.5)
    pending_time       minimum time an async task stays PENDING, even with free capacity (0)
    sync_latency       extra delay before a sync (endpoint A) call answers (0)
    url_ttl            lifetime of result image URLs; expired -> 403 OSS-like XML (86400)
    task_url_ttl       lifetime of the result URLs an async task hands out when it finishes
                       (None: url_ttl); URLs re-signed later (resign_expired_urls) get url_ttl
    task_ttl           after this, GET /tasks/{id} answers UNKNOWN (86400)

Limits
    rate_limits        {model: requests per second}, checked over a sliding window of
                       max(1, 1/rps) seconds (so 2/60 means 1 request per 30 s). "*" applies
                       to every model without its own entry. Excess -> 429
                       Throttling.RateQuota with a Retry-After header.
    documented_rate_limits  models without an entry in rate_limits get the documented rate
                       of the emulated region (tables; §8); on by default, like the service.
                       Tests that need unlimited throughput set it false and say why.
    retry_after        value (seconds) of the Retry-After header on 429 answers; None (default)
                       = time until the rate window has room, rounded up, at least 1
    sync_concurrency   {model or "*": max in-flight sync calls}; excess -> 429 Throttling
    task_concurrency   {model or "*": max RUNNING async tasks}; overrides the documented
                       per-model value of the region (tables); excess tasks wait PENDING
    documented_concurrency  when false, async tasks are not limited unless task_concurrency
                       says so (default true)

Faults (one-shot lists are consumed front first, one item per matching request)
    fail_next          error codes answered by the next generation POSTs (A/B/C), e.g.
                       ["InternalError", "ModelUnavailable", "504", "Arrearage",
                       "InvalidApiKey", "Throttling.AllocationQuota", "IPInfringementSuspect"].
                       An item may also be {"status": 500, "code": "...", "message": "..."}.
                       Known codes and their HTTP status are in ERRORS below.
    fail_next_polls    the same, for the next GET /tasks/{id} requests
    reset_next         the next N /api/v1 requests get their connection closed mid-response
    moderation_words   prompts (or negative prompts) containing any of these words
                       (case-insensitive) -> 400 DataInspectionFailed
    fail_tasks_next    error codes: the next async tasks end FAILED with that code
                       (HTTP 200 task body with output.code/message; not billed)
    fail_slots         0-based image indexes that fail in every request with n>1 (the slot
                       becomes {code: InternalError.Timeout, message}; status stays
                       SUCCEEDED if any image succeeded; only successes are billed)
    download_bytes_per_sec   throttle result downloads to this rate (None = full speed)
    download_truncate_next   the next N downloads send half the bytes of their
                       Content-Length and then close the connection
    download_corrupt_next    the next N downloads have bytes flipped in the middle (same length)
    download_reset_next      the next N downloads are closed before any byte is sent
    denied_models      generation POSTs for these models answer 403 Model.AccessDenied, as
                       for a model not activated for the account (not billed)
    resign_expired_urls      a task queried again after it was seen SUCCEEDED hands out
                       freshly signed URLs for results whose URL expired (default false: the
                       docs never promise it, and a task lives no longer than its URLs)
    result_size_offset       [dx, dy] added to the requested width and height of every
                       result image ([0, 0]): a service that returns a few pixels off, or a
                       wrong aspect ratio
    image_salt         mixed into every image's pixels: a new value makes the same request
                       give other bytes, as hosted models do not promise one image per seed
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .tables import REGIONS

# code -> (HTTP status, message). Messages follow the Model Studio error-code table (§7).
ERRORS: dict[str, tuple[int, str]] = {
    "InvalidParameter": (
        400,
        "Required parameter(s) missing or invalid, please check the request parameters.",
    ),
    "DataInspectionFailed": (400, "Input data may contain inappropriate content."),
    "IPInfringementSuspect": (400, "Input data is suspected of being involved in IP infringement."),
    "Arrearage": (400, "Access denied, please make sure your account is in good standing."),
    "InvalidApiKey": (401, "Invalid API-key provided."),
    "AccessDenied": (403, "Access denied."),
    "Model.AccessDenied": (403, "Model access denied."),
    "ModelNotFound": (404, "Model can not be found."),
    "RequestTimeOut": (408, "Request timed out, please try again later."),
    "Throttling": (429, "Requests throttling triggered."),
    "Throttling.RateQuota": (429, "Requests rate limit exceeded, please try again later."),
    "Throttling.AllocationQuota": (
        429,
        "Allocated quota exceeded, please increase your quota limit.",
    ),
    "InternalError": (
        500,
        "An internal error has occured, please try again later or contact service support.",
    ),
    "InternalError.Algo": (
        500,
        "An internal error has occured during execution, please try again later or contact service support.",
    ),
    "InternalError.Timeout": (
        500,
        "An internal timeout error has occured during execution, please try again later or contact service support.",
    ),
    "SystemError": (500, "An system error has occured, please try again later."),
    "ModelServiceFailed": (500, "Failed to request model service."),
    "ModelUnavailable": (503, "Model is unavailable, please try again later."),
    # A real 504 comes from the gateway, not the service: the body is not DashScope JSON.
    "504": (504, "Gateway Timeout"),
}


@dataclass
class Fault:
    """One injected error answer."""

    status: int
    code: str
    message: str

    @classmethod
    def parse(cls, item: str | int | dict[str, Any]) -> Fault:
        if isinstance(item, dict):
            code = str(item.get("code", "InternalError"))
            status, message = ERRORS.get(code, (500, "Injected fault."))
            return cls(int(item.get("status", status)), code, str(item.get("message", message)))
        code = str(item)
        if code in ERRORS:
            status, message = ERRORS[code]
            return cls(status, code, message)
        if code.isdigit():  # a bare status such as "502"
            return cls(int(code), "InternalError", f"Injected HTTP {code}.")
        return cls(500, code, "Injected fault.")


@dataclass
class EmulatorConfig:
    """See the module docstring for what each field does."""

    region: str = "beijing"

    task_duration: float = 0.5
    pending_time: float = 0.0
    sync_latency: float = 0.0
    url_ttl: float = 86400.0
    task_url_ttl: float | None = None
    task_ttl: float = 86400.0

    rate_limits: dict[str, float] = field(default_factory=dict)
    documented_rate_limits: bool = True
    retry_after: float | None = None
    sync_concurrency: dict[str, int] = field(default_factory=dict)
    task_concurrency: dict[str, int] = field(default_factory=dict)
    documented_concurrency: bool = True

    fail_next: list[Any] = field(default_factory=list)
    fail_next_polls: list[Any] = field(default_factory=list)
    reset_next: int = 0
    moderation_words: list[str] = field(default_factory=lambda: ["__moderation__"])
    fail_tasks_next: list[Any] = field(default_factory=list)
    fail_slots: list[int] = field(default_factory=list)

    download_bytes_per_sec: float | None = None
    download_truncate_next: int = 0
    download_corrupt_next: int = 0
    download_reset_next: int = 0
    denied_models: list[str] = field(default_factory=list)
    resign_expired_urls: bool = False
    result_size_offset: list[int] = field(default_factory=lambda: [0, 0])
    image_salt: str = ""

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise ValueError(f"emulator region {self.region!r}: choose from {', '.join(REGIONS)}")

    def update(self, **changes: Any) -> None:
        """Apply runtime changes; unknown names are an error so typos do not pass silently."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown emulator config field(s): {', '.join(unknown)}")
        for name, value in changes.items():
            _check_type(name, value)
            if name == "region" and value not in REGIONS:
                raise ValueError(f"emulator region {value!r}: choose from {', '.join(REGIONS)}")
        for name, value in changes.items():
            setattr(self, name, _copy(value))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EmulatorConfig:
        cfg = cls()
        cfg.update(**(data or {}))
        return cfg

    @classmethod
    def from_yaml(cls, path: str) -> EmulatorConfig:
        import yaml  # only the CLI path needs it

        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"{path}: emulator config must be a mapping of field: value")
        return cls.from_dict(data)

    # Look-ups with the "*" wildcard and documented fallbacks.

    def rate_limit_for(self, model: str, documented: float) -> float | None:
        if model in self.rate_limits:
            return float(self.rate_limits[model])
        if "*" in self.rate_limits:
            return float(self.rate_limits["*"])
        return documented if self.documented_rate_limits and documented > 0 else None

    def sync_limit_for(self, model: str) -> int | None:
        value = self.sync_concurrency.get(model, self.sync_concurrency.get("*"))
        return int(value) if value else None

    def task_limit_for(self, model: str, documented: int) -> int | None:
        value = self.task_concurrency.get(model, self.task_concurrency.get("*"))
        if value:
            return int(value)
        return documented if self.documented_concurrency and documented > 0 else None


def _check_type(name: str, value: Any) -> None:
    """Reject a wrongly typed value now, not as a 500 in the middle of a later request."""
    default = getattr(EmulatorConfig(), name)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)) or default is None:
        ok = number or (default is None and value is None)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"emulator config field {name}: {value!r} has the wrong type")


def _copy(value: Any) -> Any:
    # Callers keep their own lists/dicts; the emulator consumes its copies.
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value
