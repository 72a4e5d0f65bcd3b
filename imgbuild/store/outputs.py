"""Write a target's images to disk: encode to the output's format with provenance embedded,
replace atomically, and describe each written file as a lock entry."""
from __future__ import annotations

import io
import os
import posixpath
from pathlib import Path
from typing import Any

from imgbuild.images import metadata
from imgbuild.images.header import header_size
from imgbuild.errors import ImgbuildError
from imgbuild.spec.expand import FORMATS
from imgbuild.spec.types import Target
from imgbuild.store.atomic import atomic_write_bytes
from imgbuild.store.lockfile import is_final


def image_meta(target: Target, key: str, provider: str, record: dict[str, Any]) -> dict[str, Any]:
    """What goes into the image's metadata (and, minus per-image fields, into the lock)."""
    req = target.request
    meta: dict[str, Any] = {"name": target.name, "key": key, "provider": provider, **req.pixel_fields()}
    for extra in ("request_id", "task_id", "actual_prompt"):
        if record.get(extra):
            meta[extra] = record[extra]
    return meta


def encode(original: bytes, fmt: str, meta: dict[str, Any]) -> bytes:
    if fmt == "PNG" and original.startswith(metadata.PNG_SIGNATURE):
        return metadata.png_with_text(original, metadata.text_fields(meta))
    from PIL import Image, PngImagePlugin

    with Image.open(io.BytesIO(original)) as image:
        image.load()
        out = io.BytesIO()
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            for k, v in metadata.text_fields(meta).items():
                info.add_itxt(k, v)
            image.save(out, "PNG", pnginfo=info)
        else:
            rgb = image.convert("RGB")
            xmp = metadata.xmp_packet(meta).encode("utf-8")
            if fmt == "JPEG":
                rgb.save(out, "JPEG", quality=90, optimize=True, xmp=xmp,
                         comment=metadata.a1111_parameters(meta).encode("utf-8"))
            else:
                rgb.save(out, "WEBP", quality=90, method=4, xmp=xmp)
        return out.getvalue()


def safe_destination(output_dir: Path, output: str) -> Path:
    """output_dir/output, refusing anything that resolves outside output_dir (symlinks too)."""
    root = output_dir.resolve()
    dest = output_dir / output
    parent = dest.parent.resolve()
    if parent != root and root not in parent.parents:
        raise ImgbuildError(f"{output}: its folder resolves to {parent}, outside {root} (a symlink?); refusing to write")
    if dest.is_symlink():
        raise ImgbuildError(f"{output} is a symlink; refusing to write through it")
    return parent / dest.name


def render(target: Target, images: list[bytes], key: str, provider: str, record: dict[str, Any],
           slots: list[int] | None = None) -> list[tuple[int, str, bytes]]:
    """(index, output, file bytes) of every image we have (fewer than n on partial success,
    each at its own `slots` position), with provenance embedded, as write_target writes them."""
    meta = image_meta(target, key, provider, record)
    positions = slots if slots is not None and len(slots) == len(images) else range(1, len(images) + 1)
    rendered = []
    for index, original in zip(positions, images):
        if not 1 <= index <= len(target.outputs):
            continue  # an image the request did not ask for has no output to go to
        output = target.outputs[index - 1]
        fmt = FORMATS[posixpath.splitext(output)[1].lower()]
        per_image = {**meta, "index": index} if target.request.n > 1 else meta
        rendered.append((index, output, encode(original, fmt, per_image)))
    return rendered


def write_target(output_dir: Path, target: Target, images: list[bytes], key: str, provider: str,
                 record: dict[str, Any],
                 slots: list[int] | None = None) -> dict[str, dict[str, Any]]:
    """Write every image we have; return their lock entries."""
    # Who made the original decides whether it is a draft: a cached draft restored by a paid
    # run is still a draft, and an emulator's image never becomes final.
    draft = not is_final(str(record.get("provider") or provider))
    meta = image_meta(target, key, provider, record)
    entries: dict[str, dict[str, Any]] = {}
    for index, output, data in render(target, images, key, provider, record, slots):
        digest = atomic_write_bytes(safe_destination(output_dir, output), data)
        entries[output] = lock_entry(target, key, provider, draft, digest, meta, index)
        entries[output]["bytes"] = len(data)
        actual = header_size(data)  # the written file has the original's pixel size
        if actual is not None and f"{actual[0]}*{actual[1]}" != target.request.size:
            # a paid image a few pixels off the request is kept; the lock says what it is
            entries[output]["actual_size"] = f"{actual[0]}*{actual[1]}"
    return entries


def lock_entry(target: Target, key: str, provider: str, draft: bool, digest: str,
               meta: dict[str, Any], index: int) -> dict[str, Any]:
    req = target.request
    entry: dict[str, Any] = {
        "name": target.name,
        "key": key,
        "sha256": digest,
        "provider": provider,
        "draft": draft,
        "model": req.model,
        "size": req.size,
        "seed": req.seed,
        "request": req.pixel_fields(),
    }
    if req.n > 1:
        entry["index"] = index
    for extra in ("request_id", "task_id", "actual_prompt"):
        if meta.get(extra):
            entry[extra] = meta[extra]
    return entry


def remove_output(output_dir: Path, output: str) -> bool:
    try:
        os.unlink(safe_destination(output_dir, output))
        return True
    except FileNotFoundError:
        return False
