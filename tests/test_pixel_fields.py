"""Each pixel-affecting field is listed once (spec.types.PIXEL_FIELDS); the generation key, the
lock entry, the image metadata and the wire body all follow that one list."""
from __future__ import annotations

import dataclasses

import pytest

from imgbuild.plan.states import generation_key
from imgbuild.spec.types import PIXEL_FIELDS, Request

BASE = Request(model="wan2.6-t2i", prompt="a red bicycle", negative_prompt="blur", size="1280*1280",
               n=2, seed=7, prompt_extend=False, watermark=False)
CHANGED = {"model": "qwen-image-2.0", "prompt": "a blue bicycle", "negative_prompt": "noise",
           "size": "1024*1024", "n": 1, "seed": 8, "prompt_extend": True, "watermark": True}


def test_every_field_of_a_request_but_the_call_mode_changes_pixels() -> None:
    names = {f.name for f in dataclasses.fields(Request)}
    # inputs are keyed only when present (so keys without inputs never moved: see
    # test_inputs_change_the_key_only_when_present); images are the bytes, sent and never keyed
    assert set(PIXEL_FIELDS) == names - {"call", "inputs", "images"}
    assert set(CHANGED) == set(PIXEL_FIELDS)


def test_inputs_change_the_key_only_when_present() -> None:
    with_input = dataclasses.replace(BASE, inputs=("hero@key:" + "a" * 64,))
    assert generation_key("p", with_input) != generation_key("p", BASE)
    assert generation_key("p", dataclasses.replace(with_input, inputs=("hero@key:" + "b" * 64,))) \
        != generation_key("p", with_input)
    assert generation_key("p", dataclasses.replace(BASE, images=("data:x",))) == generation_key("p", BASE)
    assert "inputs" not in BASE.pixel_fields() and with_input.pixel_fields()["inputs"] == list(with_input.inputs)


@pytest.mark.parametrize("field", PIXEL_FIELDS)
def test_the_key_changes_with_every_pixel_field(field: str) -> None:
    assert generation_key("p", dataclasses.replace(BASE, **{field: CHANGED[field]})) != generation_key("p", BASE)


def test_the_call_mode_never_changes_the_key() -> None:
    assert generation_key("p", dataclasses.replace(BASE, call="sync")) == generation_key("p", BASE)


def test_a_request_round_trips_by_field_name() -> None:
    assert Request.from_dict(BASE.to_dict()) == BASE
    with pytest.raises(KeyError):
        Request.from_dict({**BASE.to_dict(), "unknown": 1})


def test_the_lock_entry_records_every_pixel_field() -> None:
    from imgbuild.spec.types import Target
    from imgbuild.store.outputs import lock_entry

    target = Target("t", BASE, ("a.png", "b.png"), "imgbuild.yaml", 3, False)
    entry = lock_entry(target, "k", "p", False, "d" * 64, {}, 1)
    assert entry["request"] == {f: getattr(BASE, f) for f in PIXEL_FIELDS}


@pytest.mark.parametrize("endpoint", ["multimodal-generation", "image-generation", "text2image"])
def test_the_wire_body_carries_every_pixel_field(endpoint: str) -> None:
    import json

    from imgbuild.providers.dashscope import wire

    body = wire.build_body(BASE, endpoint)
    text = json.dumps(body)
    assert body["model"] == BASE.model
    for field in ("size", "n", "seed", "prompt_extend", "watermark"):
        assert body["parameters"][field] == getattr(BASE, field), field
    assert BASE.prompt in text and BASE.negative_prompt in text
