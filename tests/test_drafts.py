"""Placeholder drafts: cheap to make, and the same image for the same request."""
from __future__ import annotations

import io
import random
import threading

import pytest

from imgbuild.providers.placeholder import _title_size, draw
from imgbuild.spec.types import Request


def _stepping(pen: object, title: str, unit: int, width: int) -> int:
    """The title size as drafts chose it before: every size from 2*unit down, one at a time."""
    from PIL import ImageFont

    size = unit * 2
    while size > unit and pen.textlength(title, font=ImageFont.load_default(size=size)) > width:  # type: ignore[attr-defined]
        size -= max(1, unit // 8)
    return size


@pytest.mark.parametrize("side", [256, 300, 512, 1328, 2048])
def test_the_title_size_is_the_one_the_stepping_search_finds(side: int) -> None:
    from PIL import Image, ImageDraw

    rng = random.Random(side)
    pen = ImageDraw.Draw(Image.new("RGB", (side, side)))
    unit = max(10, side // 28)
    for _ in range(40):
        title = "".join(rng.choice("abcdefghij KLMNOP·#1234WW") for _ in range(rng.randint(1, 48)))
        assert _title_size(pen, title, unit, side - 4 * unit) == _stepping(pen, title, unit, side - 4 * unit), title


def test_a_draft_is_the_same_png_whichever_thread_draws_it() -> None:
    from PIL import Image

    request = Request(model="qwen-image-2.0", prompt="A poster that reads \"Cupping night\". Warm light.",
                      negative_prompt="", size="512*512", n=1, seed=7, prompt_extend=False, watermark=False,
                      call=None)
    first = draw(request, "k" * 64, 1)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(draw(request, "k" * 64, 1))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [first] * 3
    with Image.open(io.BytesIO(first)) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (512, 512), "RGB")


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (512, 512), (300, 1000)])
def test_the_draft_png_writer_keeps_every_pixel(size: tuple[int, int]) -> None:
    from PIL import Image

    from imgbuild.providers.placeholder import _png

    rng = random.Random(size[0])
    image = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(3 * size[0] * size[1])))
    with Image.open(io.BytesIO(_png(image))) as back:
        back.load()
        assert (back.format, back.mode, back.size) == ("PNG", "RGB", size)
        assert back.tobytes() == image.tobytes()
