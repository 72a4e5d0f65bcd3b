"""The DashScope wire protocol: request validation and the exact response shapes (§4, §5).

Pure functions over dicts; no I/O. Model facts (endpoints, size rules, n, prompt limits,
regions) come from the emulator's own `tables`, never from the client's model table: the
tests hold one against the other.
"""

from __future__ import annotations

import base64
import io
import math
import random
import uuid
from dataclasses import dataclass
from typing import Any

from . import tables
from .faults import ERRORS, Fault
from .tables import ASYNC, I2I, LEGACY, NEGATIVE_PROMPT_MAX, SEED_MAX, SYNC, ImageRule, Model

URL_ERROR = "url error, please check url!"
ASYNC_UNSUPPORTED = "current user api does not support asynchronous calls"
SYNC_UNSUPPORTED = "current user api does not support synchronous calls"
PROMPT_EXTENSION = ", highly detailed, sharp focus, professional lighting"
SLOT_TIMEOUT = Fault(500, "InternalError.Timeout", ERRORS["InternalError.Timeout"][1])


class ApiError(Exception):
    """An error answer: HTTP status + DashScope {request_id, code, message} envelope."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    @classmethod
    def from_fault(cls, fault: Fault) -> ApiError:
        return cls(fault.status, fault.code, fault.message)


def bad(message: str) -> ApiError:
    return ApiError(400, "InvalidParameter", message)


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass
class GenRequest:
    """A validated generation request, normalised across the three endpoints."""

    model: Model
    endpoint: str
    prompt: str  # after truncation to the model's limit
    actual_prompt: str | None  # the "rewritten" prompt when prompt_extend is on
    negative_prompt: str
    width: int
    height: int
    n: int
    seed: int
    prompt_extend: bool
    watermark: bool
    images: tuple[bytes, ...] = ()  # an edit model's input images, decoded

    @property
    def image_prompt(self) -> str:
        return self.actual_prompt or self.prompt

    @property
    def size(self) -> str:
        return f"{self.width}*{self.height}"


@dataclass
class Slot:
    """One requested image: a URL, or the error that replaced it (partial failure)."""

    index: int
    url: str | None = None
    fault: Fault | None = None


# ---- validation ---------------------------------------------------------------------


def resolve_model(endpoint: str, body: Any, region: str) -> Model:
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.")
    name = body.get("model")
    if not name:
        raise ApiError(
            400, "BadRequest.EmptyModel", 'Required parameter "model" missing from request.'
        )
    model = tables.model_in(name, region) if isinstance(name, str) else None
    if model is None:
        # Chosen over 404 ModelNotFound: the live service answers unknown image models, and
        # models its region does not offer, this way [API §1, §5.6].
        raise bad("Model not exist.")
    if endpoint not in model.endpoints:
        raise bad(URL_ERROR)
    return model


def parse_generation(endpoint: str, model: Model, body: dict[str, Any]) -> GenRequest:
    inp = body.get("input")
    if not isinstance(inp, dict) or not inp:
        raise ApiError(
            400, "BadRequest.EmptyInput", 'Required parameter "input" missing from request.'
        )
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise bad("parameters must be a JSON object.")
    images: tuple[bytes, ...] = ()
    if endpoint in (LEGACY, I2I):
        prompt = _legacy_prompt(inp)
        negative = inp.get("negative_prompt", "")
        if endpoint == I2I:
            images = _listed_images(inp, model)
    else:
        prompt, images = _message_content(inp, model)
        negative = params.get("negative_prompt", "")
        if model.size_tiers and _bool_param(params, "enable_interleave", False):
            # the interleaved text-and-image mode is streaming-only with 0..1 images [EDIT]
            raise bad("enable_interleave=true (interleaved text-and-image output) needs "
                      "streaming output; the emulator serves image editing only.")
    if negative is None:
        negative = ""
    if not isinstance(negative, str):
        raise bad("negative_prompt must be a string.")
    width, height = _size(model, params.get("size"), images)
    n = _int_param(params, "n", model.n_default)
    if model.n_max == 1 and n != 1:
        raise bad(f"n must be 1 for model {model.name}.")
    if not 1 <= n <= model.n_max:
        raise bad(f"n must be between 1 and {model.n_max} for model {model.name}.")
    seed = _int_param(params, "seed", None)
    if seed is None:
        seed = random.randint(0, SEED_MAX - model.n_max)
    elif not 0 <= seed <= SEED_MAX:
        raise bad(f"seed must be an integer in [0, {SEED_MAX}].")
    elif seed + n - 1 > SEED_MAX:
        # Image i is drawn from seed + i [API §4.3]; a seed outside the documented range is
        # refused rather than wrapped, which the docs never describe.
        raise bad(f"seed + n - 1 must not exceed {SEED_MAX} (image i uses seed + i).")
    prompt_extend = _bool_param(params, "prompt_extend", True)
    watermark = _bool_param(params, "watermark", False)
    prompt = prompt[: model.prompt_max]  # documented: excess is truncated, not an error
    return GenRequest(
        model=model,
        endpoint=endpoint,
        prompt=prompt,
        actual_prompt=prompt + PROMPT_EXTENSION if prompt_extend else None,
        negative_prompt=negative[:NEGATIVE_PROMPT_MAX],
        width=width,
        height=height,
        n=n,
        seed=seed,
        prompt_extend=prompt_extend,
        watermark=watermark,
        images=images,
    )


def _legacy_prompt(inp: dict[str, Any]) -> str:
    prompt = inp.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad("input.prompt must be a non-empty string.")
    return prompt


def _listed_images(inp: dict[str, Any], model: Model) -> tuple[bytes, ...]:
    """wan2.5-i2i-preview's `input.images`: a list of 1..max_images images."""
    listed = inp.get("images")
    if not isinstance(listed, list) or not listed:
        raise bad("input.images must be a non-empty array of images.")
    if len(listed) > model.max_images:
        raise bad(f"{model.name} accepts 1 to {model.max_images} input image(s); got {len(listed)}.")
    return tuple(_input_image(item, model.image_rule) for item in listed)


def _message_content(inp: dict[str, Any], model: Model) -> tuple[str, tuple[bytes, ...]]:
    """The one text item, and an edit model's `{"image": ...}` items beside it."""
    if not model.max_images:
        return _message_prompt(inp), ()
    content = _content(inp)
    images = [item for item in content if isinstance(item, dict) and "image" in item]
    texts = [item for item in content if isinstance(item, dict) and "text" in item]
    if len(texts) != 1 or len(images) + 1 != len(content):
        raise bad('message content must hold {"image": ...} items and exactly one text item.')
    if not 1 <= len(images) <= model.max_images:
        raise bad(f"{model.name} accepts 1 to {model.max_images} input image(s); got {len(images)}.")
    text = texts[0]["text"]
    if not isinstance(text, str) or not text.strip():
        raise bad("The text prompt must be a non-empty string.")
    return text, tuple(_input_image(item["image"], model.image_rule) for item in images)


def _input_image(value: Any, rule: ImageRule | None) -> bytes:
    """A data URI's bytes, within the model's documented limits (URLs are not fetched here)."""
    assert rule is not None  # every model with max_images has a rule (tables)
    if not isinstance(value, str) or not value.startswith("data:") or ";base64," not in value:
        raise bad("The emulator accepts input images as base64 data URIs only.")
    mime, _, payload = value[5:].partition(";base64,")
    if mime.lower() not in rule.types:
        raise bad(f"Unsupported image format: {mime}.")
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        raise bad("The input image is not valid base64.") from None
    if len(data) > rule.max_bytes:
        raise bad(f"The input image exceeds {rule.max_bytes // 2**20} MB.")
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - anything Pillow cannot open is not an image
        raise bad("The input image cannot be decoded.") from None
    low, high = rule.min_side, rule.max_side
    if not (low <= width <= high and low <= height <= high):
        raise bad(f"Input image sides must be between {low} and {high} pixels; got {width}*{height}.")
    if rule.max_aspect and max(width / height, height / width) > rule.max_aspect:
        raise bad(f"Input image aspect ratio must be between 1:{rule.max_aspect:g} and "
                  f"{rule.max_aspect:g}:1; got {width}*{height}.")
    return data


def _content(inp: dict[str, Any]) -> list[Any]:
    messages = inp.get("messages")
    if not isinstance(messages, list) or len(messages) != 1:
        raise bad("input.messages must contain exactly one message.")
    message = messages[0]
    if not isinstance(message, dict) or message.get("role") != "user":
        raise bad('The message role must be "user".')
    content = message.get("content")
    if not isinstance(content, list):
        raise bad('message content must be an array of {"text": ...} items.')
    return content


def _message_prompt(inp: dict[str, Any]) -> str:
    messages = inp.get("messages")
    if not isinstance(messages, list) or len(messages) != 1:
        raise bad("input.messages must contain exactly one message.")
    message = messages[0]
    if not isinstance(message, dict) or message.get("role") != "user":
        raise bad('The message role must be "user".')
    content = message.get("content")
    if not isinstance(content, list):
        raise bad('message content must be an array of {"text": ...} items.')
    texts = [item for item in content if isinstance(item, dict) and "text" in item]
    if len(texts) != 1 or len(content) != 1:
        raise bad("message content must contain exactly one text item.")
    text = texts[0]["text"]
    if not isinstance(text, str) or not text.strip():
        raise bad("The text prompt must be a non-empty string.")
    return text


def _size(model: Model, value: Any, images: tuple[bytes, ...] = ()) -> tuple[int, int]:
    if model.size_tiers and images:
        if value is None:  # default_tier "" names the pixel budget of an omitted size
            return _tier_size(model.size_tiers[model.default_tier], images[-1])
        if isinstance(value, str) and value and value in model.size_tiers:
            return _tier_size(model.size_tiers[value], images[-1])
    text = model.default_size if value is None else value
    if not isinstance(text, str):
        raise bad("size must be a string like '1024*1024'.")
    w, sep, h = text.partition("*")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) <= 0 or int(h) <= 0:
        raise bad(f"size '{text}' is invalid: write width*height, e.g. '{model.default_size}'.")
    problem = model.size.problem(int(w), int(h))
    if problem:
        raise bad(f"size {text} is not supported by model {model.name}: {problem}.")
    return int(w), int(h)


def _tier_size(pixels: int, last_image: bytes) -> tuple[int, int]:
    """About `pixels` in total at the last input image's aspect, sides multiples of 16 [EDIT]."""
    from PIL import Image

    with Image.open(io.BytesIO(last_image)) as img:
        w, h = img.size
    aspect = min(4.0, max(0.25, w / h))
    width = max(16, round(math.sqrt(pixels * aspect) / 16) * 16)
    height = max(16, round(math.sqrt(pixels / aspect) / 16) * 16)
    return width, height


def _int_param(params: dict[str, Any], name: str, default: int | None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{name} must be an integer.")
    return value


def _bool_param(params: dict[str, Any], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(f"{name} must be a boolean.")
    return value


def moderation_hit(req: GenRequest, words: list[str]) -> bool:
    text = f"{req.prompt}\n{req.negative_prompt}".lower()
    return any(word and word.lower() in text for word in words)


# ---- response shapes ----------------------------------------------------------------


def _successes(slots: list[Slot]) -> list[Slot]:
    return [s for s in slots if s.url]


def _metrics(slots: list[Slot]) -> dict[str, int]:
    ok = len(_successes(slots))
    return {"TOTAL": len(slots), "SUCCEEDED": ok, "FAILED": len(slots) - ok}


def _wan_choices(slots: list[Slot]) -> list[dict[str, Any]]:
    # wan2.6: one choice per image, content items carry "type": "image" (§5.2).
    return [
        {
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": [{"image": s.url, "type": "image"}]},
        }
        for s in _successes(slots)
    ]


def _wan_usage(req: GenRequest, slots: list[Slot]) -> dict[str, Any]:
    return {
        "image_count": len(_successes(slots)),
        "size": req.size,
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
    }


def sync_body(req: GenRequest, slots: list[Slot], request_id: str) -> dict[str, Any]:
    if req.model.family == "wan":
        return {
            "output": {"choices": _wan_choices(slots), "finished": True},
            "usage": _wan_usage(req, slots),
            "request_id": request_id,
        }
    # Qwen: one choice, all images as {"image": url} items of its content (§5.1).
    output: dict[str, Any] = {
        "choices": [
            {
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": [{"image": s.url} for s in _successes(slots)],
                },
            }
        ]
    }
    if req.model.size.kind == "fixed":  # max/plus/qwen-image carry task_metric (singular)
        output["task_metric"] = _metrics(slots)
    return {
        "output": output,
        "usage": {"width": req.width, "height": req.height, "image_count": len(_successes(slots))},
        "request_id": request_id,
    }


def legacy_sync_body(req: GenRequest, slots: list[Slot], request_id: str, submitted: str,
                     ended: str) -> dict[str, Any]:
    """Endpoint C answered without the async header (the SDK's ImageSynthesis.sync_call, for
    wan2.2 only). Its shape is not documented: the finished task in one answer, which is
    what the SDK's ImageSynthesisResponse reads (output.task_status, output.results)."""
    extra, usage = succeeded_output(req, slots)
    output: dict[str, Any] = {
        "task_id": str(uuid.uuid4()),
        "task_status": "SUCCEEDED",
        "submit_time": submitted,
        "scheduled_time": submitted,
        "end_time": ended,
        **extra,
    }
    return {"request_id": request_id, "output": output, "usage": usage}


def submit_body(task_id: str, request_id: str) -> dict[str, Any]:
    return {"output": {"task_id": task_id, "task_status": "PENDING"}, "request_id": request_id}


def legacy_results(req: GenRequest, slots: list[Slot]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for slot in slots:
        if slot.url is None:
            fault = slot.fault or SLOT_TIMEOUT
            results.append({"code": fault.code, "message": fault.message})
            continue
        item: dict[str, Any] = {"orig_prompt": req.prompt}
        if req.actual_prompt is not None:
            item["actual_prompt"] = req.actual_prompt
        item["url"] = slot.url
        results.append(item)
    return results


def succeeded_output(req: GenRequest, slots: list[Slot]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(output additions, usage) of a SUCCEEDED task, per endpoint family (§5.4)."""
    if req.endpoint == ASYNC:
        return {"finished": True, "choices": _wan_choices(slots)}, _wan_usage(req, slots)
    extra: dict[str, Any] = {"results": legacy_results(req, slots)}
    if req.model.family == "wan":  # qwen-image(-plus) task examples omit task_metrics
        extra["task_metrics"] = _metrics(slots)
    return extra, {"image_count": len(_successes(slots))}


__all__ = [
    "ASYNC",
    "ASYNC_UNSUPPORTED",
    "LEGACY",
    "SYNC",
    "SYNC_UNSUPPORTED",
    "URL_ERROR",
    "ApiError",
    "GenRequest",
    "Slot",
    "bad",
    "moderation_hit",
    "new_request_id",
    "parse_generation",
    "resolve_model",
    "legacy_sync_body",
    "submit_body",
    "succeeded_output",
    "sync_body",
]
