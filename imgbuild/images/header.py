"""An image's pixel size from its PNG, JPEG or WebP header, without decoding (and without
importing Pillow): to refuse what is too large before anything is decoded, and to record the
size of what was kept."""
from __future__ import annotations


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or WebP header, without decoding; None otherwise."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) do not
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                return None
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if length < 2:
            return None
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                int.from_bytes(data[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


# colour type -> the bit depths PNG allows for it (PNG spec, IHDR)
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def png_problem(data: bytes) -> str | None:
    """Why `data` is not a complete, intact PNG, or None if it is: every chunk's CRC-32 matches
    its bytes, IHDR comes first and is well formed, a palette image has its PLTE, the IDAT
    chunks are consecutive and start a zlib stream, and IEND closes the file. A download cut
    short has no IEND; a flipped byte breaks its chunk's CRC. The pixels are not decompressed:
    what the CRCs cannot see is a server that compressed garbage to begin with."""
    import zlib

    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return "no PNG signature"
    view, end, at = memoryview(data), len(data), 8
    previous, colour, palette, idat = b"", -1, False, 0  # idat: 0 none yet, 1 in the run, 2 after
    while at + 12 <= end:
        length = int.from_bytes(data[at:at + 4], "big")
        kind, stop = data[at + 4:at + 8], at + 8 + length
        if length > 0x7FFFFFFF or stop + 4 > end:
            return f"a chunk at byte {at} runs past the end ({end} bytes): cut short?"
        if not kind.isalpha():
            return f"a chunk at byte {at} has no valid type"
        if zlib.crc32(view[at + 4:stop]) != int.from_bytes(data[stop:stop + 4], "big"):
            return f"chunk {kind.decode('latin-1')} at byte {at} fails its CRC-32 (damaged)"
        if not previous:
            colour = _ihdr_colour(kind, data[at + 8:stop])
            if colour < 0:
                return "the first chunk is not a well-formed IHDR"
        elif kind == b"IHDR":
            return "a second IHDR chunk"
        elif kind == b"PLTE":
            palette = True
        elif kind == b"IDAT":
            if idat == 2:
                return "the IDAT chunks are not consecutive"
            if idat == 0 and colour == 3 and not palette:
                return "a palette image without a PLTE chunk"
            if idat == 0 and (length < 2 or data[at + 8] & 0x0F != 8
                              or (data[at + 8] * 256 + data[at + 9]) % 31):
                return "the image data does not start a zlib stream"
            idat = 1
        elif kind == b"IEND":
            return None if idat else "no IDAT chunk before IEND"
        if idat == 1 and kind != b"IDAT":
            idat = 2
        previous, at = kind, stop + 4
    return f"no IEND chunk in {end} bytes: cut short?"


def _ihdr_colour(kind: bytes, body: bytes) -> int:
    """The colour type of a well-formed IHDR, else -1."""
    if kind != b"IHDR" or len(body) != 13:
        return -1
    width, height = int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big")
    depth, colour, compression, filtering, interlace = body[8:13]
    if (not width or not height or depth not in _PNG_DEPTHS.get(colour, ())
            or compression or filtering or interlace > 1):
        return -1
    return colour


__all__ = ["header_size", "png_problem"]
