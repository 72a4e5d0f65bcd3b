"""Web-ready derivatives: crop to an aspect ratio around a focal point, resize to widths (never
up), encode as avif/webp/jpeg/png with provenance. Generate once, derive many — locally, from
the paid original, never calling a provider.

A derivative's key hashes its source's generation key and every operation, so changing widths,
formats, quality or crop re-derives, and regenerating the original re-derives too.
"""
from __future__ import annotations

import io
import posixpath
from typing import Any

from imgbuild.spec.types import DERIVE_VERSION, Variant  # noqa: F401 (Variant re-exported)

FORMAT_EXT = {"avif": ".avif", "webp": ".webp", "jpeg": ".jpg", "png": ".png"}
PIL_FORMAT = {"avif": "AVIF", "webp": "WEBP", "jpeg": "JPEG", "png": "PNG"}
MIME = {"avif": "image/avif", "webp": "image/webp", "jpeg": "image/jpeg", "png": "image/png"}
DEFAULT_QUALITY = 80
DEFAULT_OUTPUTS = "{{ stem }}-{{ width }}.{{ ext }}"


def crop_box(width: int, height: int, aspect: tuple[int, int], focus: tuple[float, float]) -> tuple[int, int, int, int]:
    """The largest box of the given aspect inside width×height, centred on the focal point as
    far as the edges allow."""
    a, b = aspect
    if width * b > height * a:  # too wide: keep full height
        ch, cw = height, round(height * a / b)
    else:
        cw, ch = width, round(width * b / a)
    cx, cy = focus[0] * width, focus[1] * height
    left = min(max(round(cx - cw / 2), 0), width - cw)
    top = min(max(round(cy - ch / 2), 0), height - ch)
    return (left, top, left + cw, top + ch)


def plan_variants(source: str, src_w: int, src_h: int, *, formats: list[str] | None,
                  widths: list[int] | None, quality: int | None, crop: tuple[tuple[int, int], tuple[float, float]] | None,
                  render_name: Any) -> tuple[list[Variant], list[str]]:
    """The variants of one original, and notes on widths dropped to avoid upscaling.

    `render_name(width, height, fmt, ext, stem)` renders the `outputs` template.
    """
    if not formats and not widths and crop is None:
        return [], []
    box = crop_box(src_w, src_h, *crop) if crop else None
    base_w, base_h = (box[2] - box[0], box[3] - box[1]) if box else (src_w, src_h)
    source_fmt = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}[posixpath.splitext(source)[1].lower()]
    fmts = list(dict.fromkeys(formats or [source_fmt]))
    wanted = sorted(set(widths or [base_w]))
    kept = [w for w in wanted if w <= base_w]
    notes = []
    dropped = [w for w in wanted if w > base_w]
    if dropped:
        # like eleventy-img: never upscale, but keep the full-resolution size as the largest
        if base_w not in kept:
            kept.append(base_w)
        notes.append(f"width(s) {', '.join(map(str, dropped))} capped to {base_w}: "
                     f"the source is only {base_w} px wide (no upscaling)")
    stem = posixpath.splitext(source)[0]
    variants = []
    for fmt in fmts:
        for w in kept:
            h = max(1, round(w * base_h / base_w))
            output = render_name(w, h, fmt, FORMAT_EXT[fmt].lstrip("."), stem)
            variants.append(Variant(source, output, fmt, w, h, quality or DEFAULT_QUALITY, box))
    return variants, notes


def derive(original: bytes, variant: Variant, meta: dict[str, Any]) -> bytes:
    """Encode one variant from the original's bytes, deterministically, with provenance."""
    from PIL import Image

    from imgbuild.images import metadata

    with Image.open(io.BytesIO(original)) as im:
        im.load()
        image = im.convert("RGBA" if variant.format in ("png", "webp", "avif") and "A" in im.getbands() else "RGB")
    if variant.crop:
        image = image.crop(variant.crop)
    if image.size != (variant.width, variant.height):
        image = image.resize((variant.width, variant.height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    xmp = metadata.xmp_packet(meta).encode("utf-8")
    if variant.format == "png":
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        for k, v in metadata.text_fields(meta).items():
            info.add_itxt(k, v)
        image.save(out, "PNG", pnginfo=info, optimize=False)
    elif variant.format == "jpeg":
        image.convert("RGB").save(out, "JPEG", quality=variant.quality, optimize=True, progressive=True,
                                  xmp=xmp, comment=metadata.a1111_parameters(meta).encode("utf-8"))
    elif variant.format == "webp":
        image.save(out, "WEBP", quality=variant.quality, method=4, xmp=xmp)
    else:
        # one encoder thread: AVIF output must be byte-identical from run to run
        image.save(out, "AVIF", quality=variant.quality, speed=6, max_threads=1, xmp=xmp)
    return out.getvalue()
