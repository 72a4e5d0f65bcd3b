"""The offline default: a deterministic stand-in image of exactly the requested size, showing
the start of the prompt, model, size and seed on a background derived from the generation key.
The target name is not drawn: two targets with identical requests share one key and so one
cache entry, and the image must be a function of the key alone.

Byte-identical for the same request (same Pillow version): drafts are reproducible, and a
fresh clone builds the same lockfile. Marked as drafts so `check` can insist on real images.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import re
import struct
import textwrap
import threading
import zlib
from typing import Any

from imgbuild.images.metadata import png_chunk
from imgbuild.providers.base import Generation, Request


class PlaceholderProvider:
    name = "placeholder"
    draft = True

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, request: Request, key: str) -> Generation:
        self.calls += 1
        images = await asyncio.to_thread(draw_all, request, key)
        return Generation(images=images, request_id=None)

    async def close(self) -> None:
        return None


def draw_all(request: Request, key: str) -> list[bytes]:
    return [draw(request, key, index) for index in range(1, request.n + 1)]


def draw(request: Request, key: str, index: int) -> bytes:
    """The draft: a background and a lighter diagonal band (so drafts are told apart at a glance
    in a file browser), with the text drawn in white or near-black over them."""
    from PIL import Image, ImageChops, ImageDraw

    w, h = request.width, request.height
    seed = hashlib.sha256(f"{key}:{index}".encode()).digest()
    bg = tuple(40 + b % 150 for b in seed[:3])
    fg = (255, 255, 255) if sum(bg) < 400 else (20, 20, 20)
    band = tuple(min(255, c + 40) for c in bg)
    corners = [(0, h * 0.55), (w * 0.55, 0), (w * 0.8, 0), (0, h * 0.8)]
    if request.images:  # an edit shows its inputs in colour: a full RGB image
        image = Image.new("RGB", (w, h), bg)
        pen = ImageDraw.Draw(image)
        pen.polygon(corners, fill=band)
        _lettering(pen, request, index, fg)
        _thumbnails(image, request.images, max(10, min(w, h) // 28) * 2)
        return _png(image)
    # Otherwise three colours and the text's anti-aliased edges: an indexed PNG of one byte a
    # pixel, whose index is the coverage of the text over the background (0-127) or over the
    # band (128-255). A third of the bytes to compress; the pixels are those of drawing in RGB
    # but for the text's edges, blended in 128 steps instead of 256.
    region = Image.new("L", (w, h), 0)
    ImageDraw.Draw(region).polygon(corners, fill=128)
    ink = Image.new("L", (w, h), 0)
    _lettering(ImageDraw.Draw(ink), request, index, 255)
    indices = ImageChops.add(region, ink.point([v >> 1 for v in range(256)]))
    return _png_indexed(indices, _ramp(bg, fg) + _ramp(band, fg))


def _ramp(base: tuple[int, ...], top: tuple[int, ...]) -> bytes:
    """128 RGB colours from `base` to `top`: the palette of one region's anti-aliased text."""
    return bytes((b * (127 - i) + t * i + 63) // 127 for i in range(128) for b, t in zip(base, top))


def _lettering(pen: Any, request: Request, index: int, fill: Any) -> None:
    """The title (the text the image should show), model, size and seed, the prompt's start
    and the DRAFT mark, laid out for the image's size."""
    w, h = pen.im.size
    unit = max(10, min(w, h) // 28)
    small = _font(unit)
    margin = unit * 2
    y = margin
    title = request_title(request, index)
    big = _font(_title_size(pen, title, unit, w - 2 * margin))
    pen.text((margin, y), title, font=big, fill=fill)
    y += unit * 3
    pen.text((margin, y), f"{request.model}  ·  {w}x{h}  ·  seed {request.seed}", font=small, fill=fill)
    y += unit * 2
    chars = max(16, int((w - 2 * margin) / (unit * 0.55)))
    for line in textwrap.wrap(request.prompt, width=chars)[: max(1, (h - y - margin * 2) // (unit + unit // 2))]:
        pen.text((margin, y), line, font=small, fill=fill)
        y += unit + unit // 2
    pen.text((margin, h - margin - unit), "DRAFT · imgbuild placeholder", font=small, fill=fill)


def _png(image: Any) -> bytes:
    """An RGB PNG without Pillow's encoder: no per-row filter search (filter 0 on every row) and
    the fastest zlib level. A draft is thrown away, and at Pillow's level 6 encoding was most
    of drawing one; this is about half of that, the file about as large."""
    width, height = image.size
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return _png_file(header, b"", _rows(image.tobytes(), 3 * width, height))


def _png_indexed(image: Any, palette: bytes) -> bytes:
    """An 8-bit indexed PNG of an "L" image whose values index `palette` (RGB triples)."""
    from PIL import Image

    width, height = image.size
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)  # 8-bit palette, no interlace
    framed = Image.new("L", (width + 1, height), 0)  # one byte a pixel: column 0 is each row's filter byte
    framed.paste(image, (1, 0))
    return _png_file(header, png_chunk(b"PLTE", palette), framed.tobytes())


def _rows(raw: bytes, stride: int, height: int) -> bytes:
    rows = bytearray(height * (stride + 1))  # each row: filter byte 0, then its pixels
    for y in range(height):
        start = y * (stride + 1) + 1
        rows[start:start + stride] = raw[y * stride:(y + 1) * stride]
    return bytes(rows)


def _png_file(header: bytes, palette: bytes, rows: bytes) -> bytes:
    return b"".join((b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", header), palette,
                     png_chunk(b"IDAT", zlib.compress(rows, 1)), png_chunk(b"IEND", b"")))


_FONTS = threading.local()  # a FreeType face is not shared between threads


def _font(size: int) -> Any:
    """Pillow's default font at `size`, loaded once per thread (loading decodes it again)."""
    fonts = _FONTS.__dict__.setdefault("by_size", {})
    font = fonts.get(size)
    if font is None:
        from PIL import ImageFont

        font = fonts[size] = ImageFont.load_default(size=size)
    return font


def _title_size(pen: Any, title: str, unit: int, width: float) -> int:
    """The largest of 2*unit, 2*unit - step, ... down to unit whose title fits `width`. Text
    width grows about linearly with the size: start one step above that estimate rather than
    measuring every size from the top."""
    step = max(1, unit // 8)
    size = unit * 2
    length = pen.textlength(title, font=_font(size))
    if length > width and size > unit:
        estimate = size * width / length
        skip = max(0, int((size - estimate) // step) - 1)
        size -= min(skip, -(-unit // step)) * step  # never past the first size <= unit, where it stops
        while size > unit and pen.textlength(title, font=_font(size)) > width:
            size -= step
    return size


def _thumbnails(image: Any, uris: tuple[str, ...], margin: int) -> None:
    """An edit's draft shows what it reads: each input image as a thumbnail, bottom right."""
    from PIL import Image

    side = max(32, min(image.width, image.height) // 4)
    x = image.width - margin
    for uri in uris:
        try:
            data = base64.b64decode(uri.split(";base64,", 1)[1])
            with Image.open(io.BytesIO(data)) as source:
                thumb = source.convert("RGB")
                thumb.thumbnail((side, side))
        except (IndexError, ValueError, OSError):
            continue  # a draft never fails on its inputs: the real request would say why
        x -= thumb.width
        image.paste(thumb, (x, image.height - margin - thumb.height))
        x -= margin // 2


def request_title(request: Request, index: int) -> str:
    """The text the image should show, if the prompt quotes any (what Qwen-Image would render),
    else the prompt's first sentence: shared style partials make first sentences look alike."""
    # Pillow cannot measure or draw a title with a line break in it, and a YAML block prompt
    # (`prompt: |`) has them anywhere, even first: collapse every run of whitespace first.
    flat = " ".join(request.prompt.split())
    quoted = re.findall(r'["“]([^"”]{2,60})["”]', flat)
    title = " · ".join(quoted[:2]) if quoted else flat.split(".")[0]
    return title[:48] + (f"  #{index}" if request.n > 1 else "")
