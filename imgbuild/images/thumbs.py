"""Small webp pictures of originals for a review page, and the pixel difference of two images.

Pillow only; nothing here knows about locks or pages. Decoding is bounded the way Pillow bounds
it (its decompression-bomb limit), and every failure is a value, never an exception: a review
shows an image it cannot read as missing.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

THUMB_SIZE = 384  # px, the longer side: two side by side fill a laptop screen's card
QUALITY = 80
DIFF_GAIN = 4  # small differences (a re-encode, a retouch) stay visible


@dataclass(frozen=True)
class Picture:
    data: bytes  # webp
    width: int  # of the thumbnail
    height: int
    source_width: int  # of the image it shows
    source_height: int


@dataclass(frozen=True)
class PixelDiff:
    picture: Picture | None  # None when the sizes differ
    changed: float  # fraction of pixels that differ (0..1); 1.0 when the sizes differ
    box: tuple[int, int, int, int] | None  # where they differ, in source pixels


def thumbnail(data: bytes) -> Picture | None:
    """A webp of at most THUMB_SIZE px on its longer side, or None if `data` is no image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            image.draft("RGB", (THUMB_SIZE, THUMB_SIZE))  # JPEG: decode at a reduced scale
            small = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    small.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return _webp(small, size)


def dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone (nothing decoded), or None if no image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def difference(before: bytes, after: bytes) -> PixelDiff | None:
    """Where two images differ (Pillow's ImageChops.difference, brightened), or None if either
    cannot be read."""
    from PIL import Image, ImageChops

    try:
        with Image.open(io.BytesIO(before)) as a, Image.open(io.BytesIO(after)) as b:
            first, second = a.convert("RGB"), b.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if first.size != second.size:
        return PixelDiff(None, 1.0, None)
    delta = ImageChops.difference(first, second)
    box = delta.getbbox()
    red, green, blue = delta.split()
    mask = ImageChops.lighter(ImageChops.lighter(red, green), blue).point(lambda v: 255 if v else 0)
    changed = mask.histogram()[255] / (first.width * first.height)
    shown = delta.point(lambda v: min(255, v * DIFF_GAIN))
    shown.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX)
    return PixelDiff(_webp(shown, first.size), changed, box)


def _webp(image: object, source_size: tuple[int, int]) -> Picture:
    out = io.BytesIO()
    image.save(out, "WEBP", quality=QUALITY, method=4)  # type: ignore[attr-defined]
    width, height = image.size  # type: ignore[attr-defined]
    return Picture(out.getvalue(), width, height, source_size[0], source_size[1])
