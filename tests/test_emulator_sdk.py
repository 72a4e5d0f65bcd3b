"""The official `dashscope` SDK, unchanged, against the emulator: proof of wire compatibility.

The SDK reads `dashscope.base_http_api_url` at request time, so pointing it at the emulator
is one assignment (restored afterwards). `wait()` sleeps >= 1 s between polls by design, so
the async tests cost about a second each.
"""

from __future__ import annotations

import io
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

dashscope = pytest.importorskip("dashscope")
from dashscope import ImageSynthesis, MultiModalConversation
from dashscope.aigc.image_generation import ImageGeneration

from imgbuild.emulator import Emulator, EmulatorConfig

KEY = "sk-sdk-secret-456"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    saved = dashscope.base_http_api_url
    # The SDK never retries a 429, and these calls come faster than Beijing's documented
    # limits (wan2.6-t2i: one submission per second): this emulator enforces none.
    with Emulator(EmulatorConfig(task_duration=0.2, documented_rate_limits=False)) as e:
        dashscope.base_http_api_url = e.base_url
        try:
            yield e
        finally:
            dashscope.base_http_api_url = saved


def messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def assert_png(url: str, size: tuple[int, int]) -> None:
    with urllib.request.urlopen(url, timeout=10) as resp:
        img = Image.open(io.BytesIO(resp.read()))
        img.load()
    assert img.size == size


def test_multimodal_conversation_qwen_image_plus(emu: Emulator) -> None:
    rsp = MultiModalConversation.call(
        model="qwen-image-plus",
        messages=messages("a lighthouse"),
        api_key=KEY,
        size="1664*928",
        n=1,
        seed=11,
        prompt_extend=True,
        watermark=False,
        negative_prompt="blur",
    )
    assert rsp.status_code == 200, rsp
    content = rsp.output.choices[0].message.content
    assert len(content) == 1
    assert_png(content[0]["image"], (1664, 928))
    assert rsp.output["task_metric"] == {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0}
    assert rsp.usage["image_count"] == 1 and rsp.usage["width"] == 1664


def test_multimodal_conversation_qwen2_pro_n2(emu: Emulator) -> None:
    rsp = MultiModalConversation.call(
        model="qwen-image-2.0-pro",
        messages=messages("two cats"),
        api_key=KEY,
        size="1024*1024",
        n=2,
        seed=5,
    )
    assert rsp.status_code == 200, rsp
    content = rsp.output.choices[0].message.content
    assert len(content) == 2
    for item in content:
        assert_png(item["image"], (1024, 1024))
    sent = [
        r
        for r in emu.requests
        if r["method"] == "POST" and r["json"]["model"] == "qwen-image-2.0-pro"
    ][-1]
    assert sent["headers"]["Authorization"] == "Bearer ***"
    assert sent["json"]["parameters"]["n"] == 2


def test_multimodal_conversation_error_is_parsed(emu: Emulator) -> None:
    rsp = MultiModalConversation.call(
        model="qwen-image-plus", messages=messages("x"), api_key=KEY, n=3
    )
    assert rsp.status_code == 400
    assert rsp.code == "InvalidParameter" and "n must be 1" in rsp.message


@pytest.mark.parametrize(
    ("model", "size"), [("wan2.2-t2i-flash", "1024*768"), ("qwen-image-plus", "1328*1328")]
)
def test_image_synthesis_call_submits_and_waits(emu: Emulator, model: str, size: str) -> None:
    rsp = ImageSynthesis.call(
        model=model, prompt="a flower shop", api_key=KEY, size=size, n=1, seed=3, prompt_extend=True
    )
    assert rsp.status_code == 200, rsp
    assert rsp.output.task_status == "SUCCEEDED"
    (result,) = rsp.output.results
    assert result.actual_prompt != result.orig_prompt == "a flower shop"
    assert_png(result.url, tuple(int(v) for v in size.split("*")))  # type: ignore[arg-type]
    assert rsp.usage.image_count == 1


def test_image_synthesis_sync_call_wan22(emu: Emulator) -> None:
    """`ImageSynthesis.sync_call`: endpoint C without the async header, wan2.2 only (issue 13)."""
    rsp = ImageSynthesis.sync_call(
        model="wan2.2-t2i-plus", prompt="a quiet harbour", api_key=KEY, size="768*512", n=1, seed=8
    )
    assert rsp.status_code == 200, rsp
    assert rsp.output.task_status == "SUCCEEDED"
    (result,) = rsp.output.results
    assert_png(result.url, (768, 512))
    sent = [r for r in emu.requests if r["method"] == "POST"][-1]
    assert "X-DashScope-Async" not in sent["headers"]


def test_image_synthesis_async_call_fetch_wait(emu: Emulator) -> None:
    task = ImageSynthesis.async_call(
        model="wan2.2-t2i-flash", prompt="a red bicycle", api_key=KEY, size="512*512", n=2, seed=100
    )
    assert task.status_code == 200, task
    assert task.output.task_status == "PENDING"
    status = ImageSynthesis.fetch(task, api_key=KEY)
    assert status.status_code == 200
    assert status.output.task_status in ("PENDING", "RUNNING", "SUCCEEDED")
    done = ImageSynthesis.wait(task, api_key=KEY)
    assert done.output.task_status == "SUCCEEDED"
    assert len(done.output.results) == 2
    for result in done.output.results:
        assert_png(result.url, (512, 512))


def test_image_synthesis_cancel_and_unknown(emu: Emulator) -> None:
    emu.configure(pending_time=5)
    try:
        task = ImageSynthesis.async_call(model="wan2.2-t2i-flash", prompt="later", api_key=KEY, n=1)
        assert ImageSynthesis.cancel(task, api_key=KEY).status_code == 200
        assert ImageSynthesis.fetch(task, api_key=KEY).output.task_status == "CANCELED"
    finally:
        emu.configure(pending_time=0)
    assert ImageSynthesis.fetch("no-such-task", api_key=KEY).output.task_status == "UNKNOWN"


def test_image_synthesis_wait_retries_through_poll_503(emu: Emulator) -> None:
    task = ImageSynthesis.async_call(model="wan2.2-t2i-flash", prompt="retry me", api_key=KEY, n=1)
    emu.configure(fail_next_polls=["ModelUnavailable"])
    done = ImageSynthesis.wait(task, api_key=KEY)  # the SDK retries 503 on polls
    assert done.output.task_status == "SUCCEEDED"


def test_image_synthesis_failed_task(emu: Emulator) -> None:
    emu.configure(fail_tasks_next=["InternalError.Algo"])
    rsp = ImageSynthesis.call(model="wan2.2-t2i-flash", prompt="doomed", api_key=KEY, n=1)
    assert rsp.status_code == 200
    assert rsp.output.task_status == "FAILED"
    assert rsp.output["code"] == "InternalError.Algo"


def test_image_generation_wan26_sync(emu: Emulator) -> None:
    rsp = ImageGeneration.call(
        model="wan2.6-t2i",
        messages=messages("a paper boat"),
        api_key=KEY,
        size="1280*1280",
        n=2,
        seed=9,
        prompt_extend=False,
        watermark=False,
    )
    assert rsp.status_code == 200, rsp
    assert rsp.output["finished"] is True
    assert len(rsp.output.choices) == 2
    for choice in rsp.output.choices:
        item = choice.message.content[0]
        assert item["type"] == "image"
        assert_png(item["image"], (1280, 1280))
    assert rsp.usage["size"] == "1280*1280" and rsp.usage["image_count"] == 2


def test_image_generation_wan26_async(emu: Emulator) -> None:
    task = ImageGeneration.async_call(
        model="wan2.6-t2i", messages=messages("a kite"), api_key=KEY, size="1280*1280", n=1, seed=2
    )
    assert task.status_code == 200, task
    assert task.output["task_status"] == "PENDING"
    sent = [r for r in emu.requests if r["path"].endswith("/image-generation/generation")][-1]
    assert sent["headers"]["X-DashScope-Async"] == "enable"
    done = ImageGeneration.wait(task, api_key=KEY)
    assert done.status_code == 200
    assert done.output["task_status"] == "SUCCEEDED"
    (choice,) = done.output.choices
    assert_png(choice.message.content[0]["image"], (1280, 1280))


def test_sdk_never_leaks_the_key_into_the_log(emu: Emulator) -> None:
    assert KEY not in repr(emu.stats())
