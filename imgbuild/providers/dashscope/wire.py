"""DashScope wire formats: request bodies, response shapes and error codes (pure functions).

Everything here follows ../shared/dashscope-api.md (§3 envelopes, §4 parameters, §5 response
shapes, §7 errors). No I/O, so each shape can be tested and read on its own.
"""
from __future__ import annotations

import json
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
    """The JSON body for `req` on `endpoint` (models.SYNC / ASYNC / LEGACY).

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
    if endpoint in (models.LEGACY, models.LEGACY_SYNC):
        # Legacy text2image keeps negative_prompt in `input`, not `parameters` (§4.3).
        inp: dict[str, Any] = {"prompt": req.prompt}
        if req.negative_prompt:
            inp["negative_prompt"] = req.negative_prompt
    else:
        inp = {"messages": [{"role": "user", "content": [{"text": req.prompt}]}]}
        if req.negative_prompt:
            params["negative_prompt"] = req.negative_prompt
    return {"model": req.model, "input": inp, "parameters": params}


def encode(body: dict[str, Any]) -> bytes:
    # Same as the SDK: UTF-8 JSON without \u escapes, so CJK prompts stay readable in logs.
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def is_async(endpoint: str) -> bool:
    return endpoint in (models.ASYNC, models.LEGACY)


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
        text = raw[:200].decode("utf-8", "replace").strip()
        return ApiError(status, "Unknown", text or f"HTTP {status}", None)
    code = str(data.get("code") or "Unknown")
    message = str(data.get("message") or data.get("msg") or f"HTTP {status}")
    request_id = data.get("request_id")
    return ApiError(status, code, message, str(request_id) if request_id else None)


# --- responses ----------------------------------------------------------------------------

@dataclass
class Results:
    """What a successful response says about the images: where they are and what failed."""

    urls: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (code, message) per slot
    slots: list[int] = field(default_factory=list)  # 1-based request position of each url
    actual_prompt: str | None = None

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
                found.actual_prompt = actual
        else:
            found.failures.append((str(slot.get("code") or "Unknown"),
                                   str(slot.get("message") or "image failed")))
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
