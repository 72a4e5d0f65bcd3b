"""Deterministic placeholder PNGs: same (model, prompt, seed, index, size) -> same bytes.

Speed matters more than beauty: a 2048*2048 image must encode in well under a second on a
small CI box, so we paint a 16*16 two-colour gradient, upscale it (cheap, smooth, compresses
well) and write a few lines of text with the default bitmap font.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image, ImageDraw


@dataclass(frozen=True)
class ImageSpec:
    """Everything that determines the pixels of one generated image."""

    model: str
    prompt: str
    seed: int
    index: int
    width: int
    height: int
    watermark: bool = False
    salt: str = ""  # EmulatorConfig.image_salt: other bytes for the same request (see faults)
    # An edit model's first input image (encoded bytes): the result is that image, resized,
    # tinted and labelled, so a test can see which input an edit read.
    source: bytes | None = None


def _colours(spec: ImageSpec) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    # Not keyed on the index: image #i of seed s looks like image #0 of seed s+i, as on the
    # real service where n>1 images use seed, seed+1, ...
    key = f"{spec.model}\x00{spec.prompt}\x00{spec.seed}{spec.salt}".encode()
    digest = hashlib.sha256(key).digest()
    return (digest[0], digest[1], digest[2]), (digest[3], digest[4], digest[5])


def _edited(spec: ImageSpec, tint: tuple[int, int, int]) -> Image.Image:
    with Image.open(io.BytesIO(spec.source or b"")) as source:
        base = source.convert("RGB").resize((spec.width, spec.height), Image.BILINEAR)
    return Image.blend(base, Image.new("RGB", base.size, tint), 0.35)


def render_png(spec: ImageSpec) -> bytes:
    top, bottom = _colours(spec)
    if spec.source is not None:
        img = _edited(spec, top)
    else:
        mask = Image.linear_gradient("L").resize((16, 16))
        small = Image.composite(
            Image.new("RGB", (16, 16), bottom), Image.new("RGB", (16, 16), top), mask
        )
        img = small.resize((spec.width, spec.height), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    ink = (255, 255, 255) if sum(top) < 384 else (0, 0, 0)
    lines = [
        f"{spec.model}  seed {spec.seed}  #{spec.index}  {spec.width}*{spec.height}"
        + ("  (edited)" if spec.source is not None else ""),
        *_wrap(spec.prompt, 80, 6),
    ]
    draw.multiline_text((16, 16), "\n".join(lines), fill=ink)
    if spec.watermark:
        mark = "Qwen-Image" if spec.model.startswith("qwen") else "AI Generated"
        draw.text((spec.width - 90, spec.height - 24), mark, fill=ink)
    buf = io.BytesIO()
    # compress_level=1: ~5x faster than the default and the gradient still compresses well.
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    # The default bitmap font has no CJK glyphs; keep ASCII so drawing never fails.
    text = text.encode("ascii", "replace").decode()
    return [text[i : i + width] for i in range(0, min(len(text), width * max_lines), width)]
