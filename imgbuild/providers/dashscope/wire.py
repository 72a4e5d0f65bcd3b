"""DashScope wire formats: request bodies, response shapes and error codes (pure functions).

Everything here follows ../shared/dashscope-api.md (§3 envelopes, §4 parameters, §5 response
shapes, §7 errors). No I/O, so each shape can be tested and read on its own.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from imgbuild.spec import catalogue as models
from imgbuild.providers.base import Request

ASYNC_HEADER = "X-DashScope-Async"
WORKSPACE_HEADER = "X-DashScope-WorkSpace"

# Task states (§5.4). SUSPENDED is an SDK constant we treat as "still waiting".
WAITING = frozenset({"PENDING", "RUNNING", "SUSPENDED"})
SUCCEEDED, FAILED, CANCELED, UNKNOWN = "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"

# --- requests -----------------------------------------------------------------------------

def build_body(req: Request, endpoint: str) -> dict[str, Any]:
    """The JSON body for `req` on `endpoint` (models.SYNC / ASYNC / LEGACY / I2I).

    n and seed are always sent: wan's server default n is 4 (billed per image) and an omitted
    seed is random, which would make the cache key lie about the pixels.
    """
    params: dict[str, Any] = {
        "size": req.size,
        "n": req.n,
        "seed": req.seed,
        "prompt_extend": req.prompt_extend,
        "watermark": req.watermark,
    }
    model = models.get(req.model)
    if endpoint == models.I2I:
        # wan2.5-i2i-preview: the prompt and the images as a list in `input`, negative_prompt
        # beside them (as on the legacy text2image task) [Wan 2.5 image edit reference].
        inp: dict[str, Any] = {"prompt": req.prompt, "images": list(req.images)}
        if req.negative_prompt:
            inp["negative_prompt"] = req.negative_prompt
    elif endpoint in (models.LEGACY, models.LEGACY_SYNC):
        # Legacy text2image keeps negative_prompt in `input`, not `parameters` (§4.3).
        inp = {"prompt": req.prompt}
        if req.negative_prompt:
            inp["negative_prompt"] = req.negative_prompt
    else:
        inp = {"messages": [{"role": "user", "content": _content(req, model)}]}
        if req.negative_prompt:
            params["negative_prompt"] = req.negative_prompt
        if req.images and model is not None and model.family == "wan":
            # wan2.6-image: editing mode, sent explicitly (interleaved text-and-image output
            # is another, streaming-only mode with other image counts)
            params["enable_interleave"] = False
    return {"model": req.model, "input": inp, "parameters": params}


def _content(req: Request, model: models.Model | None) -> list[dict[str, str]]:
    """The message's items: an edit model's `{"image": data URI}` items beside the one text
    item (§3), in the order its reference shows them: Qwen-Image-Edit images first, wan2.6-image
    the text first [wan2.6-image API reference, request examples]."""
    images = [{"image": uri} for uri in req.images]
    text = [{"text": req.prompt}]
    return text + images if model is not None and model.family == "wan" else images + text


def encode(body: dict[str, Any]) -> bytes:
    # Same as the SDK: UTF-8 JSON without \u escapes, so CJK prompts stay readable in logs.
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def is_async(endpoint: str) -> bool:
    return endpoint in (models.ASYNC, models.LEGACY, models.I2I)


# --- text from the server ---------------------------------------------------------------
# Whatever a server says may end up on a terminal: terminal escape sequences (CSI, OSC, the
# two-byte ones), other C0/C1 control characters and bidi overrides are removed first, and the
# length is bounded.

_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, clearing the screen
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07\x1b\x9c]*(?:\x07|\x9c)?"  # the same, 8-bit
    r"|\x1b[@-Z\\-_]?"  # other escapes, or a lone ESC
    r"|[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def clean(value: object, limit: int = 500) -> str:
    """`value` as one printable line of at most `limit` characters (+ an ellipsis)."""
    text = " ".join(_CONTROL.sub(" ", str(value)).split())
    return text if len(text) <= limit else text[:limit] + "…"


def clean_id(value: object) -> str | None:
    """A request id fit to print, or None."""
    return (clean(value, 100) or None) if value else None


def task_id_ok(value: object) -> bool:
    """A task id goes into the next request's path: letters, digits, '-', '_', '.', no '..'."""
    return isinstance(value, str) and bool(_TASK_ID.fullmatch(value)) and ".." not in value


# --- errors -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ApiError:
    status: int
    code: str
    message: str
    request_id: str | None


def parse_error(status: int, raw: bytes) -> ApiError:
    """The error envelope {request_id, code, message} (§3); non-JSON bodies -> code "Unknown"."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        text = clean(raw[:200].decode("utf-8", "replace"), 200)
        return ApiError(status, "Unknown", text or f"HTTP {status}", None)
    code = clean(data.get("code") or "Unknown", 100)
    message = clean(data.get("message") or data.get("msg") or f"HTTP {status}")
    return ApiError(status, code, message, clean_id(data.get("request_id")))


# --- responses ----------------------------------------------------------------------------

@dataclass
class Results:
    """What a successful response says about the images: where they are and what failed."""

    urls: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (code, message) per slot
    slots: list[int] = field(default_factory=list)  # 1-based request position of each url
    actual_prompt: str | None = None
    answered: int = 0  # images the answer held, when more than n (only the first n are kept)

    def messages(self) -> list[str]:
        return [f"{code}: {message}" for code, message in self.failures]


def parse_results(output: dict[str, Any], req: Request) -> Results:
    """Image URLs from any success shape: choices[] (A, B) or results[] (C)."""
    if isinstance(output.get("results"), list):
        found = _legacy_results(output["results"], req.prompt)
    else:
        # sync answers list only the images that exist: their positions are not reported
        urls = _choice_urls(output.get("choices"))
        found = Results(urls=urls, slots=list(range(1, len(urls) + 1)))
    if len(found.urls) > req.n or any(slot > req.n for slot in found.slots):
        # More images than asked for: the first n, each in its place; never an index past n.
        found.answered = len(found.urls)
        kept = [(u, slot) for u, slot in zip(found.urls, found.slots) if slot <= req.n][: req.n]
        found.urls, found.slots = [u for u, _ in kept], [slot for _, slot in kept]
    missing = req.n - len(found.urls) - len(found.failures)
    if missing > 0:
        # A sync partial failure lists no per-slot reason; still say how many were lost.
        found.failures.extend(
            [("ImageMissing", f"image not returned by the service ({_metric_text(output)})")]
            * missing)
    return found


def _choice_urls(choices: object) -> list[str]:
    # Scan every choice and every content item: Qwen puts n images in one content array,
    # wan2.6 uses one choice per image (§5.1, §5.2).
    urls = []
    for choice in choices if isinstance(choices, list) else []:
        content = ((choice or {}).get("message") or {}).get("content")
        for item in content if isinstance(content, list) else []:
            if isinstance(item, dict) and isinstance(item.get("image"), str):
                urls.append(item["image"])
    return urls


def _legacy_results(results: list[Any], prompt: str) -> Results:
    found = Results()
    for position, slot in enumerate(results, start=1):
        if not isinstance(slot, dict):
            continue
        if isinstance(slot.get("url"), str):
            found.urls.append(slot["url"])
            found.slots.append(position)
            actual = slot.get("actual_prompt")
            if found.actual_prompt is None and isinstance(actual, str) and actual != prompt:
                found.actual_prompt = clean(actual, 10_000)
        else:
            found.failures.append((clean(slot.get("code") or "Unknown", 100),
                                   clean(slot.get("message") or "image failed")))
    return found


def _metric_text(output: dict[str, Any]) -> str:
    metric = output.get("task_metric") or output.get("task_metrics")
    return f"task metrics {json.dumps(metric, sort_keys=True)}" if metric else "no reason given"


def task_state(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(task_status, output) of a task query or submit response; status "" when malformed
    (never guess UNKNOWN: that would make a resumed task look expired and get paid twice)."""
    output = body.get("output")
    if not isinstance(output, dict):
        return "", {}
    return str(output.get("task_status") or ""), output
