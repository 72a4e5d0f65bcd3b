"""The DashScope emulator over real HTTP on 127.0.0.1: shapes, errors, lifecycle, faults."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from imgbuild.emulator import Emulator, EmulatorConfig

A = "/services/aigc/multimodal-generation/generation"
B = "/services/aigc/image-generation/generation"
C = "/services/aigc/text2image/image-synthesis"
I2I = "/services/aigc/image2image/image-synthesis"  # wan2.5-i2i-preview's edit task
ASYNC = {"X-DashScope-Async": "enable"}
KEY = "sk-emulator-secret-123"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")


class Reply:
    def __init__(self, status: int, headers: Any, raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def call(
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    auth: str | None = f"Bearer {KEY}",
) -> Reply:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if auth is not None:
        hdrs["Authorization"] = auth
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.headers, err.read())


def messages_body(model: str, text: str = "a red fox in snow", **params: Any) -> dict[str, Any]:
    return {
        "model": model,
        "input": {"messages": [{"role": "user", "content": [{"text": text}]}]},
        "parameters": params,
    }


def _input_uri() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (384, 384), (10, 120, 200)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


_INPUT_URI = _input_uri()


def legacy_body(model: str, prompt: str = "a flower shop", **params: Any) -> dict[str, Any]:
    return {"model": model, "input": {"prompt": prompt}, "parameters": params}


# Most tests here send several requests a second to one model, more than the documented
# limits the emulator enforces by default (wan2.6 in Beijing: 1/s): they turn those off.
UNLIMITED: dict[str, Any] = {"documented_rate_limits": False}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(task_duration=0.2, **UNLIMITED)) as e:
        yield e


def sync(emu: Emulator, body: dict[str, Any], **kw: Any) -> Reply:
    return call(emu.base_url + A, body, **kw)


def submit(emu: Emulator, path: str, body: dict[str, Any]) -> str:
    r = call(emu.base_url + path, body, headers=ASYNC)
    assert r.status == 200, r.raw
    assert set(r.json) == {"output", "request_id"}
    assert r.json["output"]["task_status"] == "PENDING"
    assert set(r.json["output"]) == {"task_id", "task_status"}
    return r.json["output"]["task_id"]


def poll(emu: Emulator, task_id: str) -> dict[str, Any]:
    r = call(emu.base_url + f"/tasks/{task_id}")
    assert r.status == 200, r.raw
    return r.json


def wait(emu: Emulator, task_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = poll(emu, task_id)
        if body["output"]["task_status"] not in ("PENDING", "RUNNING"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish")


def image_at(url: str) -> Image.Image:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "image/png"
        img = Image.open(io.BytesIO(resp.read()))
        img.load()
        return img


def assert_error(r: Reply, status: int, code: str, message: str | None = None) -> None:
    assert r.status == status, r.raw
    body = r.json
    assert set(body) == {"request_id", "code", "message"}
    assert body["code"] == code
    if message is not None:
        assert body["message"] == message


# ---- endpoint A: sync ----------------------------------------------------------------------


def test_qwen_fixed_sync_shape_and_image(emu: Emulator) -> None:
    r = sync(
        emu, messages_body("qwen-image-plus", size="1472*1104", n=1, seed=3, prompt_extend=False)
    )
    assert r.status == 200
    body = r.json
    assert set(body) == {"output", "usage", "request_id"}
    assert set(body["output"]) == {"choices", "task_metric"}
    assert body["output"]["task_metric"] == {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0}
    (choice,) = body["output"]["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    (item,) = choice["message"]["content"]
    assert set(item) == {"image"}
    assert "Expires=" in item["image"]
    assert body["usage"] == {"width": 1472, "height": 1104, "image_count": 1}
    assert image_at(item["image"]).size == (1472, 1104)
    assert emu.billed == 1 and emu.billed_by_model == {"qwen-image-plus": 1}


def test_qwen2_sync_n2_has_no_task_metric_and_uses_consecutive_seeds(emu: Emulator) -> None:
    r = sync(emu, messages_body("qwen-image-2.0-pro", size="1024*768", n=2, seed=7))
    assert r.status == 200
    assert set(r.json["output"]) == {"choices"}
    (choice,) = r.json["output"]["choices"]
    urls = [c["image"] for c in choice["message"]["content"]]
    assert len(urls) == 2
    assert r.json["usage"] == {"width": 1024, "height": 768, "image_count": 2}
    second = image_at(urls[1])
    assert second.size == (1024, 768)
    # image #1 of seed 7 is drawn from seed 8, like image #0 of a seed-8 request
    r8 = sync(emu, messages_body("qwen-image-2.0-pro", size="1024*768", n=1, seed=8))
    alone = image_at(r8.json["output"]["choices"][0]["message"]["content"][0]["image"])
    assert second.getpixel((0, 0)) == alone.getpixel((0, 0))
    assert image_at(urls[0]).getpixel((0, 0)) != second.getpixel((0, 0))
    assert emu.billed_by_model == {"qwen-image-2.0-pro": 3}


def test_same_seed_gives_identical_pixels(emu: Emulator) -> None:
    body = messages_body("qwen-image-2.0", size="512*512", n=1, seed=42)
    urls = [
        sync(emu, body).json["output"]["choices"][0]["message"]["content"][0]["image"]
        for _ in range(2)
    ]
    a, b = (image_at(u) for u in urls)
    assert a.tobytes() == b.tobytes()


def test_wan26_sync_shape(emu: Emulator) -> None:
    r = sync(emu, messages_body("wan2.6-t2i", size="1280*1280", n=2, seed=1))
    assert r.status == 200
    body = r.json
    assert set(body["output"]) == {"choices", "finished"} and body["output"]["finished"] is True
    assert len(body["output"]["choices"]) == 2  # one choice per image
    for choice in body["output"]["choices"]:
        (item,) = choice["message"]["content"]
        assert item["type"] == "image" and set(item) == {"image", "type"}
    assert body["usage"] == {
        "image_count": 2,
        "size": "1280*1280",
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
    }
    assert image_at(body["output"]["choices"][1]["message"]["content"][0]["image"]).size == (
        1280,
        1280,
    )


def test_large_image_encodes_quickly(emu: Emulator) -> None:
    r = sync(emu, messages_body("qwen-image-2.0-pro", size="2048*2048", n=1))
    start = time.monotonic()
    img = image_at(r.json["output"]["choices"][0]["message"]["content"][0]["image"])
    assert img.size == (2048, 2048)
    assert time.monotonic() - start < 2.0


def test_wan_default_n_is_four(emu: Emulator) -> None:
    body = messages_body("wan2.6-t2i")
    r = sync(emu, body)
    assert r.json["usage"]["image_count"] == 4 and r.json["usage"]["size"] == "1280*1280"


# ---- endpoints B and C: async tasks ----------------------------------------------------------


def test_wan26_async_task_shape(emu: Emulator) -> None:
    task_id = submit(emu, B, messages_body("wan2.6-t2i", size="1536*1152", n=1, seed=5))
    body = wait(emu, task_id)
    out = body["output"]
    assert out["task_status"] == "SUCCEEDED" and out["task_id"] == task_id
    assert set(out) == {
        "task_id",
        "task_status",
        "submit_time",
        "scheduled_time",
        "end_time",
        "finished",
        "choices",
    }
    for key in ("submit_time", "scheduled_time", "end_time"):
        assert TIME_RE.match(out[key])
    assert out["choices"][0]["message"]["content"][0]["type"] == "image"
    assert body["usage"] == {
        "image_count": 1,
        "size": "1536*1152",
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
    }
    assert image_at(out["choices"][0]["message"]["content"][0]["image"]).size == (1536, 1152)


def test_legacy_task_results_with_and_without_prompt_extend(emu: Emulator) -> None:
    extended = submit(
        emu, C, legacy_body("wan2.2-t2i-flash", size="1024*1024", n=2, prompt_extend=True)
    )
    plain = submit(
        emu, C, legacy_body("wan2.2-t2i-flash", size="512*1440", n=1, prompt_extend=False)
    )
    body = wait(emu, extended)
    out = body["output"]
    assert set(out) == {
        "task_id",
        "task_status",
        "submit_time",
        "scheduled_time",
        "end_time",
        "results",
        "task_metrics",
    }
    assert out["task_metrics"] == {"TOTAL": 2, "SUCCEEDED": 2, "FAILED": 0}
    assert body["usage"] == {"image_count": 2}
    for res in out["results"]:
        assert set(res) == {"orig_prompt", "actual_prompt", "url"}
        assert res["orig_prompt"] == "a flower shop" and res["actual_prompt"] != res["orig_prompt"]
    res = wait(emu, plain)["output"]["results"][0]
    assert set(res) == {"orig_prompt", "url"}
    assert image_at(res["url"]).size == (512, 1440)
    assert emu.billed_by_model == {"wan2.2-t2i-flash": 3}


def test_qwen_plus_on_legacy_endpoint_omits_task_metrics(emu: Emulator) -> None:
    body = wait(emu, submit(emu, C, legacy_body("qwen-image-plus", size="1328*1328", n=1)))
    assert body["output"]["task_status"] == "SUCCEEDED"
    assert "task_metrics" not in body["output"]
    assert body["usage"] == {"image_count": 1}


def test_lifecycle_pending_running_succeeded() -> None:
    with Emulator(EmulatorConfig(pending_time=0.3, task_duration=0.3, **UNLIMITED)) as emu:
        task_id = submit(emu, C, legacy_body("wan2.2-t2i-plus", n=1))
        first = poll(emu, task_id)["output"]
        assert first["task_status"] == "PENDING"
        assert set(first) == {"task_id", "task_status", "submit_time"}
        time.sleep(0.4)
        running = poll(emu, task_id)["output"]
        assert running["task_status"] == "RUNNING"
        assert set(running) == {"task_id", "task_status", "submit_time", "scheduled_time"}
        assert emu.billed == 0
        time.sleep(0.35)
        assert poll(emu, task_id)["output"]["task_status"] == "SUCCEEDED"
        assert emu.billed == 1


def test_cancel_only_while_pending() -> None:
    with Emulator(EmulatorConfig(pending_time=5, task_duration=0.1, **UNLIMITED)) as emu:
        task_id = submit(emu, C, legacy_body("wan2.2-t2i-flash", n=1))
        r = call(emu.base_url + f"/tasks/{task_id}/cancel", method="POST")
        assert r.status == 200 and set(r.json) == {"request_id"}
        out = poll(emu, task_id)["output"]
        assert out["task_status"] == "CANCELED" and TIME_RE.match(out["end_time"])
        again = call(emu.base_url + f"/tasks/{task_id}/cancel", method="POST")
        assert_error(again, 400, "UnsupportedOperation")
        assert_error(call(emu.base_url + "/tasks/nope/cancel", method="POST"), 404, "NotFound")
        emu.configure(pending_time=0)
        running = submit(emu, C, legacy_body("wan2.2-t2i-flash", n=1))
        wait(emu, running)
        assert_error(
            call(emu.base_url + f"/tasks/{running}/cancel", method="POST"),
            400,
            "UnsupportedOperation",
        )
        assert emu.billed == 1  # the canceled task is never billed


def test_unknown_and_expired_tasks_are_unknown(emu: Emulator) -> None:
    body = poll(emu, "0385dc79-does-not-exist")
    assert body["output"] == {"task_id": "0385dc79-does-not-exist", "task_status": "UNKNOWN"}
    task_id = submit(emu, C, legacy_body("wan2.2-t2i-flash", n=1))
    wait(emu, task_id)
    emu.configure(task_ttl=0)
    assert poll(emu, task_id)["output"]["task_status"] == "UNKNOWN"


def test_task_query_with_async_header_is_denied(emu: Emulator) -> None:
    r = call(emu.base_url + "/tasks/abc", headers=ASYNC)
    assert_error(r, 403, "AccessDenied", "current user api does not support asynchronous calls")


def test_task_concurrency_queues_extra_tasks_pending() -> None:
    cfg = EmulatorConfig(task_duration=0.3, task_concurrency={"wan2.2-t2i-flash": 1}, **UNLIMITED)
    with Emulator(cfg) as emu:
        ids = [submit(emu, C, legacy_body("wan2.2-t2i-flash", n=1)) for _ in range(3)]
        time.sleep(0.1)
        statuses = [poll(emu, t)["output"]["task_status"] for t in ids]
        assert statuses == ["RUNNING", "PENDING", "PENDING"]
        for t in ids:
            assert wait(emu, t)["output"]["task_status"] == "SUCCEEDED"
        stats = emu.stats()
        assert stats["max_concurrent"] == {"wan2.2-t2i-flash": 1}
        assert stats["billed"] == 3


def test_documented_task_concurrency_applies_by_default(emu: Emulator) -> None:
    ids = [submit(emu, C, legacy_body("wan2.2-t2i-flash", n=1)) for _ in range(4)]  # documented: 2
    for t in ids:
        wait(emu, t)
    assert emu.stats()["max_concurrent"]["wan2.2-t2i-flash"] == 2


# ---- errors ---------------------------------------------------------------------------------


def test_auth_errors() -> None:
    with Emulator(EmulatorConfig(**UNLIMITED), api_key=KEY) as emu:
        body = messages_body("qwen-image-plus", n=1)
        assert_error(sync(emu, body, auth=None), 401, "InvalidApiKey", "No API-key provided.")
        assert_error(sync(emu, body, auth="Bearer "), 401, "InvalidApiKey", "No API-key provided.")
        assert_error(
            sync(emu, body, auth="Bearer sk-wrong"),
            401,
            "InvalidApiKey",
            "Invalid API-key provided.",
        )
        assert_error(call(emu.base_url + "/tasks/x", auth=None), 401, "InvalidApiKey")
        assert sync(emu, body).status == 200
    with Emulator() as emu:  # no key configured: any non-empty Bearer key works
        assert (
            sync(emu, messages_body("qwen-image-plus", n=1), auth="Bearer anything").status == 200
        )


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (A, messages_body("wan2.2-t2i-flash")),  # legacy-only model on the sync endpoint
        (C, legacy_body("qwen-image-2.0-pro")),  # sync-only model on the legacy endpoint
        (B, messages_body("qwen-image-plus")),  # wan2.6-only endpoint
        (C, legacy_body("wan2.6-t2i")),
    ],
)
def test_wrong_endpoint_for_model(emu: Emulator, path: str, body: dict[str, Any]) -> None:
    r = call(emu.base_url + path, body, headers=ASYNC if path != A else None)
    assert_error(r, 400, "InvalidParameter", "url error, please check url!")


def test_unknown_model_and_missing_model(emu: Emulator) -> None:
    assert_error(
        sync(emu, messages_body("qwen-image-9")), 400, "InvalidParameter", "Model not exist."
    )
    assert_error(sync(emu, {"input": {}}), 400, "BadRequest.EmptyModel")
    assert_error(sync(emu, b"{not json"), 400, "InvalidParameter")


def test_async_header_rules(emu: Emulator) -> None:
    r = call(emu.base_url + A, messages_body("qwen-image-2.0"), headers=ASYNC)
    assert_error(r, 403, "AccessDenied", "current user api does not support asynchronous calls")
    for path, body in (
        (B, messages_body("wan2.6-t2i", n=1)),
        (C, legacy_body("wan2.5-t2i-preview", n=1)),  # wan2.2 takes it: the SDK's sync_call
    ):
        r = call(emu.base_url + path, body)
        assert_error(r, 403, "AccessDenied", "current user api does not support synchronous calls")
    assert emu.billed == 0


def _with_messages(messages: Any) -> dict[str, Any]:
    return {"model": "qwen-image-2.0", "input": {"messages": messages}, "parameters": {"n": 1}}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (_with_messages([]), "exactly one message"),
        (_with_messages([{"role": "user", "content": [{"text": "a"}]}] * 2), "exactly one message"),
        (_with_messages([{"role": "assistant", "content": [{"text": "a"}]}]), "role"),
        (
            _with_messages([{"role": "user", "content": [{"text": "a"}, {"text": "b"}]}]),
            "exactly one text",
        ),
        (_with_messages([{"role": "user", "content": []}]), "exactly one text"),
        (
            _with_messages(
                [{"role": "user", "content": [{"text": "a"}, {"image": "http://x/y.png"}]}]
            ),
            "exactly one text",
        ),
        (_with_messages([{"role": "user", "content": "a cat"}]), "content"),
        (messages_body("qwen-image-plus", size="1024*1024"), "1664*928"),
        (messages_body("qwen-image-plus", size="1328x1328"), "width*height"),
        (messages_body("qwen-image-2.0-pro", size="4096*4096"), "4,194,304"),
        (messages_body("qwen-image-2.0-pro", size="256*256"), "262,144"),
        (messages_body("wan2.6-t2i", size="1024*1024", n=1), "1,625,088"),
        (messages_body("wan2.6-t2i", size="2900*680", n=1), "aspect ratio"),
        (messages_body("qwen-image-plus", n=2), "n must be 1"),
        (messages_body("qwen-image-max", n=4), "n must be 1"),
        (messages_body("qwen-image-2.0-pro", n=7), "between 1 and 6"),
        (messages_body("qwen-image-2.0-pro", n=0), "between 1 and 6"),
        (messages_body("wan2.6-t2i", n=5), "between 1 and 4"),
        (messages_body("qwen-image-2.0", n="2"), "n must be an integer"),
        (messages_body("qwen-image-2.0", seed=-1), "seed"),
        (messages_body("qwen-image-2.0", seed=2147483648), "seed"),
        (messages_body("qwen-image-2.0", prompt_extend="yes"), "prompt_extend"),
    ],
)
def test_sync_validation(emu: Emulator, body: dict[str, Any], fragment: str) -> None:
    r = sync(emu, body)
    assert_error(r, 400, "InvalidParameter")
    assert fragment in r.json["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (legacy_body("wan2.2-t2i-flash", size="1600*900"), "between 512 and 1440"),
        (legacy_body("wan2.2-t2i-flash", n=5), "between 1 and 4"),
        (legacy_body("qwen-image-plus", n=2), "n must be 1"),
        ({"model": "wan2.2-t2i-flash", "input": {"prompt": ""}}, "prompt"),
        ({"model": "wan2.2-t2i-flash", "input": {"messages": []}}, "prompt"),
    ],
)
def test_legacy_validation(emu: Emulator, body: dict[str, Any], fragment: str) -> None:
    r = call(emu.base_url + C, body, headers=ASYNC)
    assert_error(r, 400, "InvalidParameter")
    assert fragment in r.json["message"]


def test_long_prompts_are_truncated_not_rejected(emu: Emulator) -> None:
    long = "x" * 3000
    task_id = submit(
        emu,
        C,
        {
            "model": "wan2.2-t2i-flash",
            "input": {"prompt": long, "negative_prompt": "n" * 900},
            "parameters": {"n": 1, "prompt_extend": False},
        },
    )
    assert len(wait(emu, task_id)["output"]["results"][0]["orig_prompt"]) == 500
    assert (
        sync(emu, messages_body("qwen-image-2.0", text=long, n=1, negative_prompt="n" * 900)).status
        == 200
    )


def test_moderation_trigger_words(emu: Emulator) -> None:
    emu.configure(moderation_words=["forbidden"])
    r = sync(emu, messages_body("qwen-image-2.0", text="a FORBIDDEN thing", n=1))
    assert_error(r, 400, "DataInspectionFailed", "Input data may contain inappropriate content.")
    r = sync(emu, messages_body("qwen-image-2.0", n=1, negative_prompt="forbidden"))
    assert_error(r, 400, "DataInspectionFailed")
    r = call(
        emu.base_url + C, legacy_body("wan2.2-t2i-flash", prompt="forbidden", n=1), headers=ASYNC
    )
    assert_error(r, 400, "DataInspectionFailed")
    assert emu.billed == 0


# ---- URLs ----------------------------------------------------------------------------------


def test_result_urls_expire_with_oss_like_error() -> None:
    with Emulator(EmulatorConfig(url_ttl=0.3, **UNLIMITED)) as emu:
        url = sync(emu, messages_body("qwen-image-2.0", size="512*512", n=1)).json["output"][
            "choices"
        ][0]["message"]["content"][0]["image"]
        assert image_at(url).size == (512, 512)
        tampered = re.sub(r"Expires=\d+", "Expires=9999999999", url)
        r = call(tampered, auth=None)
        assert r.status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in r.raw
        time.sleep(0.4)
        r = call(url, auth=None)
        assert r.status == 403
        assert r.headers["Content-Type"].startswith("application/xml")
        assert b"<Code>AccessDenied</Code>" in r.raw and b"Request has expired." in r.raw
        assert call(emu.origin + "/results/unknown.png", auth=None).status == 404


# ---- rate and concurrency limits ------------------------------------------------------------


def test_rate_limit_429_with_retry_after() -> None:
    with Emulator(EmulatorConfig(task_duration=0.1, rate_limits={"wan2.2-t2i-flash": 2})) as emu:
        body = legacy_body("wan2.2-t2i-flash", n=1)
        replies = [call(emu.base_url + C, body, headers=ASYNC) for _ in range(3)]
        assert [r.status for r in replies] == [200, 200, 429]
        assert_error(
            replies[2],
            429,
            "Throttling.RateQuota",
            "Requests rate limit exceeded, please try again later.",
        )
        assert int(replies[2].headers["Retry-After"]) >= 1
        # other models are not affected
        assert sync(emu, messages_body("qwen-image-2.0", n=1)).status == 200
        time.sleep(1.05)
        assert call(emu.base_url + C, body, headers=ASYNC).status == 200
        stats = emu.stats()
        assert stats["throttled"] == 1
        assert [s["status"] for s in stats["submissions"]] == [200, 200, 429, 200, 200]


def test_documented_rate_limits_and_fixed_retry_after() -> None:
    cfg = EmulatorConfig(retry_after=0.5)  # documented limits are on by default
    with Emulator(cfg) as emu:
        body = messages_body("qwen-image-max", n=1)  # documented: 2 requests per minute
        statuses = [sync(emu, body).status for _ in range(3)]
        assert statuses == [200, 429, 429]  # a 30 s window with room for one request
        r = sync(emu, body)
        assert r.headers["Retry-After"] == "0.5"


def test_sync_concurrency_limit_answers_429() -> None:
    cfg = EmulatorConfig(sync_latency=0.4, sync_concurrency={"qwen-image-2.0": 1}, **UNLIMITED)
    with Emulator(cfg) as emu:
        results: list[int] = []
        body = messages_body("qwen-image-2.0", size="512*512", n=1)
        threads = [
            threading.Thread(target=lambda: results.append(sync(emu, body).status))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
            time.sleep(0.1)
        for t in threads:
            t.join()
        assert sorted(results) == [200, 429]
        stats = emu.stats()
        assert stats["throttled"] == 1 and stats["billed"] == 1
        assert stats["max_concurrent"] == {"qwen-image-2.0": 1}


def test_sync_calls_count_toward_max_concurrency() -> None:
    with Emulator(EmulatorConfig(sync_latency=0.3, **UNLIMITED)) as emu:
        body = messages_body("qwen-image-2.0", size="512*512", n=1)
        threads = [threading.Thread(target=sync, args=(emu, body)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert emu.stats()["max_concurrent"]["qwen-image-2.0"] == 3


# ---- faults ---------------------------------------------------------------------------------


def test_partial_failure_bills_successes_only(emu: Emulator) -> None:
    emu.configure(fail_slots=[1])
    body = wait(emu, submit(emu, C, legacy_body("wan2.2-t2i-flash", n=3)))
    out = body["output"]
    assert out["task_status"] == "SUCCEEDED"
    assert out["results"][1] == {
        "code": "InternalError.Timeout",
        "message": "An internal timeout error has occured during execution, please try again later or contact service support.",
    }
    assert "url" in out["results"][0] and "url" in out["results"][2]
    assert out["task_metrics"] == {"TOTAL": 3, "SUCCEEDED": 2, "FAILED": 1}
    assert body["usage"] == {"image_count": 2}
    r = sync(emu, messages_body("qwen-image-2.0", size="512*512", n=2))
    assert len(r.json["output"]["choices"][0]["message"]["content"]) == 1
    assert r.json["usage"]["image_count"] == 1
    r = sync(emu, messages_body("qwen-image-2.0", size="512*512", n=1))  # n=1: slots never fail
    assert r.json["usage"]["image_count"] == 1
    assert emu.billed_by_model == {"wan2.2-t2i-flash": 2, "qwen-image-2.0": 2}


def test_all_slots_failing_fails_the_task_unbilled(emu: Emulator) -> None:
    emu.configure(fail_slots=[0, 1])
    out = wait(emu, submit(emu, C, legacy_body("wan2.2-t2i-flash", n=2)))
    assert out["output"]["task_status"] == "FAILED" and "usage" not in out
    assert_error(
        sync(emu, messages_body("qwen-image-2.0", size="512*512", n=2)),
        500,
        "InternalError.Timeout",
    )
    assert emu.billed == 0


def test_task_failure_injection(emu: Emulator) -> None:
    emu.configure(fail_tasks_next=["InternalError.Algo"])
    body = wait(emu, submit(emu, B, messages_body("wan2.6-t2i", n=2)))
    out = body["output"]
    assert out["task_status"] == "FAILED" and out["code"] == "InternalError.Algo" and out["message"]
    assert out["task_metrics"] == {"TOTAL": 2, "SUCCEEDED": 0, "FAILED": 2}
    assert "usage" not in body
    assert (
        wait(emu, submit(emu, B, messages_body("wan2.6-t2i", n=1)))["output"]["task_status"]
        == "SUCCEEDED"
    )
    assert emu.billed == 1


def test_error_bursts_and_codes_on_demand(emu: Emulator) -> None:
    emu.configure(
        fail_next=[
            "InternalError",
            "ModelUnavailable",
            "504",
            "Arrearage",
            "InvalidApiKey",
            "Throttling.AllocationQuota",
            "IPInfringementSuspect",
            {"status": 500, "code": "SystemError", "message": "boom"},
        ]
    )
    body = messages_body("qwen-image-2.0", size="512*512", n=1)
    assert_error(sync(emu, body), 500, "InternalError")
    assert_error(
        sync(emu, body), 503, "ModelUnavailable", "Model is unavailable, please try again later."
    )
    r = sync(emu, body)
    assert r.status == 504 and r.headers["Content-Type"].startswith("text/html")
    assert_error(sync(emu, body), 400, "Arrearage")
    assert_error(sync(emu, body), 401, "InvalidApiKey")
    assert_error(sync(emu, body), 429, "Throttling.AllocationQuota")
    assert_error(sync(emu, body), 400, "IPInfringementSuspect")
    assert_error(sync(emu, body), 500, "SystemError", "boom")
    assert sync(emu, body).status == 200
    stats = emu.stats()
    assert stats["billed"] == 1 and stats["throttled"] == 1
    assert [s["code"] for s in stats["submissions"]][:3] == [
        "InternalError",
        "ModelUnavailable",
        "504",
    ]


def test_poll_faults(emu: Emulator) -> None:
    task_id = submit(emu, C, legacy_body("wan2.2-t2i-flash", n=1))
    emu.configure(fail_next_polls=["ModelUnavailable"])
    assert_error(call(emu.base_url + f"/tasks/{task_id}"), 503, "ModelUnavailable")
    assert wait(emu, task_id)["output"]["task_status"] == "SUCCEEDED"


def test_connection_reset_mid_response(emu: Emulator) -> None:
    emu.configure(reset_next=1)
    body = messages_body("qwen-image-2.0", size="512*512", n=1)
    with pytest.raises((http.client.HTTPException, ConnectionError, urllib.error.URLError)):
        sync(emu, body)
    assert sync(emu, body).status == 200
    assert emu.billed == 1


def _one_url(emu: Emulator) -> str:
    r = sync(emu, messages_body("qwen-image-2.0", size="1024*1024", n=1))
    return r.json["output"]["choices"][0]["message"]["content"][0]["image"]


def test_download_faults(emu: Emulator) -> None:
    url = _one_url(emu)
    full = urllib.request.urlopen(url, timeout=10).read()
    emu.configure(download_truncate_next=1)
    with pytest.raises(http.client.IncompleteRead):
        urllib.request.urlopen(url, timeout=10).read()
    emu.configure(download_corrupt_next=1)
    corrupt = urllib.request.urlopen(url, timeout=10).read()
    assert len(corrupt) == len(full) and corrupt != full
    with pytest.raises((OSError, SyntaxError, ValueError)):
        Image.open(io.BytesIO(corrupt)).load()
    emu.configure(download_reset_next=1)
    with pytest.raises((http.client.HTTPException, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(url, timeout=10).read()
    assert urllib.request.urlopen(url, timeout=10).read() == full


def test_slow_downloads(emu: Emulator) -> None:
    url = _one_url(emu)
    size = len(urllib.request.urlopen(url, timeout=10).read())
    emu.configure(download_bytes_per_sec=size / 0.5)
    start = time.monotonic()
    assert len(urllib.request.urlopen(url, timeout=10).read()) == size
    assert time.monotonic() - start >= 0.4


# ---- observability and control --------------------------------------------------------------


def test_request_log_redacts_the_api_key(emu: Emulator) -> None:
    sync(emu, messages_body("qwen-image-2.0", size="512*512", n=1, seed=9))
    (entry,) = [r for r in emu.requests if r["method"] == "POST"]
    assert entry["path"] == "/api/v1" + A
    assert entry["headers"]["Authorization"] == "Bearer ***"
    assert entry["json"]["parameters"]["seed"] == 9
    assert entry["status"] == 200
    over_http = call(emu.origin + "/__emulator__/stats", auth=None)
    assert (
        over_http.status == 200
        and over_http.json["requests"][0]["headers"]["Authorization"] == "Bearer ***"
    )
    assert KEY not in json.dumps(emu.stats()) and KEY.encode() not in over_http.raw


def test_stats_reset_and_config_over_http(emu: Emulator) -> None:
    sync(emu, messages_body("qwen-image-2.0", size="512*512", n=2))
    stats = call(emu.origin + "/__emulator__/stats", auth=None).json
    assert stats["billed"] == 2 and stats["billed_by_model"] == {"qwen-image-2.0": 2}
    assert stats["requests_by_endpoint"] == {"multimodal-generation": 1}
    assert set(stats) >= {
        "billed",
        "billed_by_model",
        "requests_by_endpoint",
        "throttled",
        "max_concurrent",
        "submissions",
        "requests",
    }
    (sub,) = stats["submissions"]
    assert sub["model"] == "qwen-image-2.0" and sub["n"] == 2 and TIME_RE.match(sub["time_str"])
    r = call(emu.origin + "/__emulator__/config", {"fail_next": ["ModelUnavailable"]}, auth=None)
    assert r.status == 200 and r.json["fail_next"] == ["ModelUnavailable"]
    assert call(emu.origin + "/__emulator__/config", {"no_such_knob": 1}, auth=None).status == 400
    assert_error(sync(emu, messages_body("qwen-image-2.0", n=1)), 503, "ModelUnavailable")
    assert call(emu.origin + "/__emulator__/reset", {}, auth=None).status == 200
    assert emu.billed == 0 and emu.requests == [] and emu.stats()["submissions"] == []
    with pytest.raises(ValueError):
        emu.configure(no_such_knob=1)
    with pytest.raises(ValueError):
        emu.configure(reset_next="two")
    assert call(emu.origin + "/__emulator__/config", ["not", "a", "dict"], auth=None).status == 400


def test_unknown_api_path(emu: Emulator) -> None:
    assert_error(call(emu.base_url + "/services/aigc/nope", {}), 404, "InvalidURL")


def test_serve_cli_prints_listening_line_and_stops_on_sigterm(tmp_path: Any) -> None:
    cfg = tmp_path / "faults.yaml"
    cfg.write_text("fail_next: [ModelUnavailable]\ntask_duration: 0.1\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgbuild.emulator",
            "--port",
            "0",
            "--api-key",
            KEY,
            "--config",
            str(cfg),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        m = re.fullmatch(r"imgbuild emulator listening on (http://127\.0\.0\.1:\d+/api/v1)", line)
        assert m, line
        base = m.group(1)
        assert_error(call(base + A, messages_body("qwen-image-2.0", n=1)), 503, "ModelUnavailable")
        assert call(base + A, messages_body("qwen-image-2.0", size="512*512", n=1)).status == 200
        assert_error(
            call(base + A, messages_body("qwen-image-2.0", n=1), auth="Bearer x"),
            401,
            "InvalidApiKey",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# ---- strict where the docs are explicit (issue 13) ------------------------------------------


@pytest.mark.parametrize(
    ("region", "offered", "refused"),
    [
        ("beijing", "wanx2.1-t2i-plus", "wan2.1-t2i-plus"),
        ("singapore", "wan2.1-t2i-plus", "wanx2.1-t2i-plus"),
        ("virginia", "wan2.6-t2i", "qwen-image-plus"),
    ],
)
def test_a_model_the_region_does_not_offer_does_not_exist(
    region: str, offered: str, refused: str
) -> None:
    with Emulator(EmulatorConfig(region=region)) as emu:
        path, body = (B, messages_body(offered, n=1)) if offered == "wan2.6-t2i" else (
            C, legacy_body(offered, n=1))
        assert call(emu.base_url + path, body, headers=ASYNC).status == 200
        path, body = (A, messages_body(refused, n=1)) if refused.startswith("qwen") else (
            C, legacy_body(refused, n=1))
        r = call(emu.base_url + path, body, headers=None if path == A else ASYNC)
        assert_error(r, 400, "InvalidParameter", "Model not exist.")
    with pytest.raises(ValueError, match="emulator region 'mars'"):
        EmulatorConfig(region="mars")


def test_documented_rate_limits_are_on_by_default_per_region() -> None:
    body = messages_body("wan2.6-t2i", n=1)
    with Emulator() as emu:  # Beijing: wan2.6-t2i takes 1 submission per second
        assert [call(emu.base_url + B, body, headers=ASYNC).status for _ in range(2)] == [200, 429]
    with Emulator(EmulatorConfig(region="singapore")) as emu:  # Singapore: 5 per second
        statuses = [call(emu.base_url + B, body, headers=ASYNC).status for _ in range(6)]
        assert statuses == [200] * 5 + [429]


def test_wan22_sync_call_without_the_async_header(emu: Emulator) -> None:
    r = call(emu.base_url + C, legacy_body("wan2.2-t2i-flash", size="768*512", n=2, seed=4))
    assert r.status == 200, r.raw
    out = r.json["output"]
    assert out["task_status"] == "SUCCEEDED" and TIME_RE.match(out["end_time"])
    assert [image_at(item["url"]).size for item in out["results"]] == [(768, 512)] * 2
    assert r.json["usage"] == {"image_count": 2}
    assert emu.billed_by_model == {"wan2.2-t2i-flash": 2}
    # only wan2.2-t2i-flash/plus take it (the SDK's sync_call); other legacy models refuse
    r = call(emu.base_url + C, legacy_body("wan2.5-t2i-preview", n=1))
    assert_error(r, 403, "AccessDenied", "current user api does not support synchronous calls")


def test_expired_urls_are_resigned_only_when_asked(emu: Emulator) -> None:
    emu.configure(url_ttl=0.05)
    task_id = submit(emu, C, legacy_body("wan2.2-t2i-flash", n=1))
    first = wait(emu, task_id)["output"]["results"][0]["url"]
    time.sleep(0.1)
    assert poll(emu, task_id)["output"]["results"][0]["url"] == first  # the docs promise no more
    assert call(first, auth=None).status == 403
    emu.configure(resign_expired_urls=True, url_ttl=60)
    fresh = poll(emu, task_id)["output"]["results"][0]["url"]
    assert fresh != first and image_at(fresh).size == (1024, 1024)


def test_result_size_offset_fault(emu: Emulator) -> None:
    emu.configure(result_size_offset=[0, -8])
    url = sync(emu, messages_body("qwen-image-2.0", size="512*512", n=1)).json["output"][
        "choices"][0]["message"]["content"][0]["image"]
    assert image_at(url).size == (512, 504)


def test_seed_plus_n_beyond_the_documented_range_is_refused(emu: Emulator) -> None:
    r = sync(emu, messages_body("qwen-image-2.0", size="512*512", n=2, seed=2147483647))
    assert_error(r, 400, "InvalidParameter")
    assert "seed + n - 1" in r.json["message"]
    assert sync(emu, messages_body("qwen-image-2.0", size="512*512", n=2, seed=2147483646)).status == 200


def test_the_clients_model_table_agrees_with_the_emulators() -> None:
    """imgbuild's catalogue, checked against the emulator's own tables over HTTP: each model
    answers in exactly the regions the catalogue lists, on each endpoint the catalogue uses,
    at its default size and largest n; one more n is refused."""
    from imgbuild.spec import catalogue

    paths = {catalogue.SYNC: A, catalogue.ASYNC: B, catalogue.LEGACY: C, catalogue.LEGACY_SYNC: C,
             catalogue.I2I: I2I}
    for region in catalogue.REGIONS:
        with Emulator(EmulatorConfig(region=region, **UNLIMITED)) as emu:
            for model in catalogue.MODELS.values():
                for endpoint in model.endpoints:
                    path = paths[endpoint]
                    params = {"size": model.default_size, "n": model.n_max, "seed": 1}
                    body = (legacy_body(model.name, **params) if path in (C, I2I)
                            else messages_body(model.name, **params))
                    if path == I2I:  # the image2image task: its most images, as input.images
                        body["input"]["images"] = [_INPUT_URI] * model.max_inputs
                    elif model.max_inputs:  # an edit model: its most images, beside the text
                        body["input"]["messages"][0]["content"][:0] = [
                            {"image": _INPUT_URI}] * model.max_inputs
                    headers = None if catalogue.is_sync_endpoint(endpoint) else ASYNC
                    r = call(emu.base_url + path, body, headers=headers)
                    if region in model.regions:
                        assert r.status == 200, (region, model.name, endpoint, r.raw)
                        too_many = {**body, "parameters": {**params, "n": model.n_max + 1}}
                        r = call(emu.base_url + path, too_many, headers=headers)
                        assert_error(r, 400, "InvalidParameter")
                    else:
                        assert_error(r, 400, "InvalidParameter", "Model not exist.")
