"""Provenance embedded in every output: PNG text chunks (prompt, negative prompt, model, seed,
size, key, an A1111-style `parameters` chunk and an `imgbuild` JSON chunk) and XMP with the
IPTC digital source type `trainedAlgorithmicMedia`, for JPEG and WebP too."""
from __future__ import annotations

import json
import struct
import zlib
from typing import Any
from html import escape as _html_escape

def escape(text: str) -> str:
    """XML text escaping (&, <, >). html.escape, because xml.sax.saxutils imports urllib and
    http.client (~40 ms) on the start-up path of every build."""
    return _html_escape(text, quote=False)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def a1111_parameters(meta: dict[str, Any]) -> str:
    w, h = str(meta["size"]).split("*")
    lines = [meta["prompt"]]
    if meta.get("negative_prompt"):
        lines.append(f"Negative prompt: {meta['negative_prompt']}")
    lines.append(f"Seed: {meta['seed']}, Size: {w}x{h}, Model: {meta['model']}, "
                 f"Provider: {meta['provider']}, Prompt extend: {str(meta['prompt_extend']).lower()}, "
                 f"imgbuild key: {meta['key']}")
    return "\n".join(lines)


def text_fields(meta: dict[str, Any]) -> dict[str, str]:
    fields = {
        "prompt": meta.get("actual_prompt") or meta["prompt"],
        "negative_prompt": meta.get("negative_prompt", ""),
        "model": meta["model"],
        "seed": str(meta["seed"]),
        "size": meta["size"],
        "key": meta["key"],
        "parameters": a1111_parameters(meta),
        "imgbuild": json.dumps(meta, sort_keys=True, ensure_ascii=False),
        "XML:com.adobe.xmp": xmp_packet(meta),
    }
    return fields


def xmp_packet(meta: dict[str, Any]) -> str:
    description = escape(meta.get("actual_prompt") or meta["prompt"])
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
        f"<Iptc4xmpExt:DigitalSourceType>{DIGITAL_SOURCE_TYPE}</Iptc4xmpExt:DigitalSourceType>"
        f'<xmp:CreatorTool>imgbuild ({escape(meta["provider"])}: {escape(meta["model"])})</xmp:CreatorTool>'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt></dc:description>'
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    )


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _itxt(keyword: str, text: str) -> bytes:
    # iTXt: keyword, 0, compression flag 0, method 0, no language tag, no translated keyword
    return png_chunk(b"iTXt", keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def png_with_text(png: bytes, fields: dict[str, str]) -> bytes:
    """Insert iTXt chunks right after IHDR without re-encoding the pixels."""
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    ihdr_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    chunks = b"".join(_itxt(k, v) for k, v in fields.items())
    return png[:ihdr_end] + chunks + png[ihdr_end:]
