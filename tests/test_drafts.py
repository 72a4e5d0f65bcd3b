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
        assert (image.format, image.size, image.mode) == ("PNG", (512, 512), "P")


@pytest.mark.parametrize("size", ["512*512", "1024*576", "300*900"])
def test_an_indexed_draft_has_the_pixels_of_drawing_it_in_rgb(size: str) -> None:
    """Drafts are indexed PNGs (the text's coverage over the background or the band); converted
    to RGB they match drawing the same layout in RGB to within the coverage's half step."""
    import hashlib

    from PIL import Image, ImageChops, ImageDraw

    from imgbuild.providers.placeholder import _lettering

    request = Request(model="qwen-image-2.0", prompt="A poster that reads \"Cupping night\". Warm light, "
                      "long shadows, a dark wooden counter.", negative_prompt="", size=size, n=1, seed=7,
                      prompt_extend=False, watermark=False, call=None)
    key = "k" * 64
    with Image.open(io.BytesIO(draw(request, key, 1))) as image:
        got = image.convert("RGB")
    w, h = request.width, request.height
    seed = hashlib.sha256(f"{key}:1".encode()).digest()
    bg = tuple(40 + b % 150 for b in seed[:3])
    fg = (255, 255, 255) if sum(bg) < 400 else (20, 20, 20)
    expected = Image.new("RGB", (w, h), bg)
    pen = ImageDraw.Draw(expected)
    pen.polygon([(0, h * 0.55), (w * 0.55, 0), (w * 0.8, 0), (0, h * 0.8)], fill=tuple(min(255, c + 40) for c in bg))
    _lettering(pen, request, 1, fg)
    difference = ImageChops.difference(got, expected)
    assert max(high for _, high in difference.getextrema()) <= 2
    assert got.getcolors(1 << 16) is not None and len(got.getcolors(1 << 16)) > 3  # text was drawn


def test_the_indexed_png_writer_keeps_every_index_and_the_palette() -> None:
    from PIL import Image

    from imgbuild.providers.placeholder import _png_indexed

    rng = random.Random(3)
    for size in [(1, 1), (7, 3), (300, 100)]:
        image = Image.frombytes("L", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1])))
        palette = bytes(rng.randrange(256) for _ in range(768))
        with Image.open(io.BytesIO(_png_indexed(image, palette))) as back:
            back.load()
            assert (back.format, back.mode, back.size) == ("PNG", "P", size)
            assert back.tobytes() == image.tobytes() and bytes(back.getpalette()) == palette


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
