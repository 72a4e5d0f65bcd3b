"""The emulator's image-editing models over HTTP: wan2.6-image (messages with text + image
items, sync A and async B), wan2.5-i2i-preview (the image2image task with `input.images`) and
Qwen-Image-Edit, each with the documented response shape and its own input-image limits.

Sources of the rules tested here (as in the emulator's tables): the Model Studio guide
"图像编辑 - 万相2.7/2.6/2.5" and docs.qwencloud.com's wan2.6-image / wan2.5 edit pages."""
from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from imgbuild.emulator import Emulator, EmulatorConfig
from test_emulator import A, ASYNC, B, UNLIMITED, assert_error, call, image_at, wait

I2I = "/services/aigc/image2image/image-synthesis"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(task_duration=0.05, **UNLIMITED)) as e:
        yield e


def uri(size: tuple[int, int], colour: tuple[int, int, int] = (200, 20, 20), fmt: str = "PNG",
        mime: str = "image/png") -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def wan26(images: list[str], text: str = "the poster in winter", **params: Any) -> dict[str, Any]:
    # the reference's examples put the text item first, then the images [wan2.6-image ref]
    content = [{"text": text}] + [{"image": i} for i in images]
    return {"model": "wan2.6-image", "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": params}


def wan25(images: Any, prompt: str = "the poster in winter", **params: Any) -> dict[str, Any]:
    return {"model": "wan2.5-i2i-preview", "input": {"prompt": prompt, "images": images},
            "parameters": params}


RED = uri((400, 400))


def test_wan26_image_sync_answers_the_wan_shape_and_derives_from_the_first_image(
        emu: Emulator) -> None:
    r = call(emu.base_url + A, wan26([RED, uri((400, 400), (20, 20, 200))], size="1024*1024",
                                     n=2, seed=5, enable_interleave=False))
    assert r.status == 200, r.raw
    out = r.json["output"]
    assert out["finished"] is True and len(out["choices"]) == 2  # one choice per image
    item = out["choices"][0]["message"]["content"][0]
    assert item["type"] == "image"
    assert r.json["usage"] == {"image_count": 2, "size": "1024*1024", "input_tokens": 0,
                               "output_tokens": 0, "total_tokens": 0}
    img = image_at(item["image"]).convert("RGB")
    assert img.size == (1024, 1024)
    red, green, blue = img.getpixel((900, 900))  # the red first input, tinted: still reddish
    assert red > green and red > blue


def test_wan26_image_size_tiers_follow_the_last_inputs_aspect(emu: Emulator) -> None:
    wide = uri((480, 240))  # 2:1, the last image
    one_k = call(emu.base_url + A, wan26([RED, wide], n=1))  # size omitted: the "1K" tier
    assert one_k.status == 200, one_k.raw
    assert one_k.json["usage"]["size"] == "1808*912"  # about 1280*1280 px at 2:1, sides /16
    two_k = call(emu.base_url + A, wan26([RED, wide], n=1, size="2K"))
    assert two_k.json["usage"]["size"] == "2896*1456"  # about 2048*2048 px at 2:1


def test_wan26_image_async_task(emu: Emulator) -> None:
    r = call(emu.base_url + B, wan26([RED], size="1280*1280", n=1), headers=ASYNC)
    assert r.status == 200, r.raw
    done = wait(emu, r.json["output"]["task_id"])["output"]
    assert done["task_status"] == "SUCCEEDED" and done["finished"] is True
    assert image_at(done["choices"][0]["message"]["content"][0]["image"]).size == (1280, 1280)
    # B without the async header is refused, as on every async-only endpoint
    assert_error(call(emu.base_url + B, wan26([RED], n=1)), 403, "AccessDenied")


@pytest.mark.parametrize(("body", "why"), [
    (wan26([RED] * 5, n=1), "1 to 4 input image(s)"),
    (wan26([], n=1), "1 to 4 input image(s)"),
    (wan26([uri((8001, 240))], n=1), "between 240 and 8000"),
    (wan26([uri((239, 400))], n=1), "between 240 and 8000"),
    (wan26([uri((400, 400), fmt="TIFF", mime="image/tiff")], n=1), "Unsupported image format"),
    (wan26([RED], n=5), "n must be between 1 and 4"),
    (wan26([RED], size="700*700", n=1), "589,824 and 4,194,304"),
    (wan26([RED], size="3000*700", n=1), "aspect ratio"),
    (wan26([RED], n=1, enable_interleave=True), "enable_interleave"),
], ids=["5-images", "no-image", "side-8001", "side-239", "tiff", "n-5", "too-small", "5:1",
        "interleave"])
def test_wan26_image_refuses_what_the_docs_refuse(emu: Emulator, body: dict[str, Any],
                                                  why: str) -> None:
    r = call(emu.base_url + A, body)
    assert_error(r, 400, "InvalidParameter")
    assert why in r.json["message"]


def test_wan25_i2i_is_a_task_with_legacy_results(emu: Emulator) -> None:
    body = wan25([RED, uri((600, 400))], n=2, seed=3)
    assert_error(call(emu.base_url + I2I, body), 403, "AccessDenied",
                 "current user api does not support synchronous calls")
    r = call(emu.base_url + I2I, body, headers=ASYNC)
    assert r.status == 200, r.raw
    done = wait(emu, r.json["output"]["task_id"])
    out = done["output"]
    assert out["task_status"] == "SUCCEEDED"
    assert out["task_metrics"] == {"TOTAL": 2, "SUCCEEDED": 2, "FAILED": 0}
    assert done["usage"] == {"image_count": 2}
    first = out["results"][0]
    assert first["orig_prompt"] == "the poster in winter" and "actual_prompt" in first
    # size omitted: 1280*1280 px in total at the last input's aspect (3:2), sides /16
    assert image_at(first["url"]).size == (1568, 1040)


@pytest.mark.parametrize(("body", "why"), [
    (wan25([RED] * 4, n=1), "1 to 3 input image(s)"),
    (wan25([], n=1), "input.images"),
    (wan25([uri((5001, 2000))], n=1), "between 384 and 5000"),
    (wan25([uri((2000, 384))], n=1), "aspect ratio"),  # 5.2:1, over 4:1
    (wan25([RED], n=1, size="1440*1440"), "589,824 and 1,638,400"),
    (wan25([RED], n=5), "n must be between 1 and 4"),
], ids=["4-images", "no-image", "side-5001", "input-aspect", "size-over", "n-5"])
def test_wan25_i2i_refuses_what_the_docs_refuse(emu: Emulator, body: dict[str, Any],
                                                why: str) -> None:
    r = call(emu.base_url + I2I, body, headers=ASYNC)
    assert_error(r, 400, "InvalidParameter")
    assert why in r.json["message"]


def test_each_edit_model_answers_only_on_its_own_endpoints(emu: Emulator) -> None:
    assert_error(call(emu.base_url + A, wan25([RED], n=1)), 400, "InvalidParameter",
                 "url error, please check url!")
    assert_error(call(emu.base_url + I2I, wan26([RED], n=1), headers=ASYNC), 400,
                 "InvalidParameter", "url error, please check url!")
    qwen = {**wan26([RED], n=1), "model": "qwen-image-edit"}
    assert call(emu.base_url + A, {**qwen, "parameters": {"n": 1, "size": "1024*1024"}}).status == 200
    assert_error(call(emu.base_url + B, qwen, headers=ASYNC), 400, "InvalidParameter",
                 "url error, please check url!")


def test_qwen_edit_takes_tiff_and_refuses_a_side_over_3072(emu: Emulator) -> None:
    def qwen(image: str) -> dict[str, Any]:
        return {"model": "qwen-image-edit", "parameters": {"n": 1, "size": "1024*1024"},
                "input": {"messages": [{"role": "user", "content": [
                    {"image": image}, {"text": "the poster in winter"}]}]}}

    assert call(emu.base_url + A, qwen(uri((400, 400), fmt="TIFF", mime="image/tiff"))).status == 200
    r = call(emu.base_url + A, qwen(uri((3073, 400))))
    assert_error(r, 400, "InvalidParameter")
    assert "between 384 and 3072" in r.json["message"]
