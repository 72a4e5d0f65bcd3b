"""The download check of a PNG result (images.header.png_problem, used by the DashScope
download): every chunk's CRC-32 and the chunk order instead of a full decode. It must refuse
every damaged or cut-short body a decode would refuse, and accept every PNG Pillow writes."""
from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from imgbuild.emulator.images import ImageSpec, render_png
from imgbuild.images.header import png_problem
from imgbuild.providers.dashscope.download import DownloadError, verify_image

PNG = render_png(ImageSpec("qwen-image-2.0", "a lighthouse at dawn", 7, 0, 256, 256))


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_an_intact_png_passes_and_trailing_bytes_after_iend_are_ignored() -> None:
    assert png_problem(PNG) is None
    assert png_problem(PNG + b"\0\0") is None  # as every decoder does
    assert verify_image(PNG, 256, 256) == (256, 256)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])
@pytest.mark.parametrize("options", [{}, {"optimize": True}, {"interlace": 1}])
def test_every_png_pillow_writes_passes(mode: str, options: dict[str, object]) -> None:
    out = io.BytesIO()
    Image.new(mode, (37, 19)).save(out, "PNG", **options)
    assert png_problem(out.getvalue()) is None


def test_every_single_bit_flip_after_the_signature_is_refused() -> None:
    missed = [i for i in range(8, len(PNG)) for bit in (0x01, 0x80)
              if png_problem(PNG[:i] + bytes([PNG[i] ^ bit]) + PNG[i + 1:]) is None]
    assert missed == []


def test_every_truncation_is_refused() -> None:
    missed = [k for k in range(len(PNG)) if png_problem(PNG[:k]) is None]
    assert missed == []


def test_the_emulators_corrupt_download_is_refused_as_retryable() -> None:
    mid = len(PNG) // 2  # what the emulator's download_corrupt_next sends
    corrupt = PNG[:mid] + bytes(b ^ 0xFF for b in PNG[mid:mid + 64]) + PNG[mid + 64:]
    with pytest.raises(DownloadError) as caught:
        verify_image(corrupt, 256, 256)
    assert caught.value.code == "BadImage" and caught.value.retryable
    assert "CRC-32" in str(caught.value)


def test_well_formed_chunks_in_the_wrong_order_or_shape_are_refused() -> None:
    sig = PNG[:8]
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
    idat, iend = chunk(b"IDAT", zlib.compress(b"\0" * 13 * 4)), chunk(b"IEND", b"")
    assert png_problem(sig + ihdr + idat + iend) is None
    cases = {
        "no IDAT": sig + ihdr + iend,
        "IDAT first": sig + idat + ihdr + iend,
        "two IHDR": sig + ihdr + ihdr + idat + iend,
        "bad bit depth": sig + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 3, 2, 0, 0, 0)) + idat + iend,
        "zero width": sig + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 4, 8, 2, 0, 0, 0)) + idat + iend,
        "split IDAT run": sig + ihdr + idat + chunk(b"tEXt", b"a\0b") + idat + iend,
        "not zlib": sig + ihdr + chunk(b"IDAT", b"\xff\xff" + zlib.compress(b"\0" * 13 * 4)) + iend,
        "palette without PLTE": sig + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 3, 0, 0, 0)) + idat + iend,
        "no IEND": sig + ihdr + idat,
    }
    accepted = [name for name, data in cases.items() if png_problem(data) is None]
    assert accepted == []
