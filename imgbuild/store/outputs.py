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
    return Path(destination(output_dir, output))


def destination(output_dir: Path | str, output: str) -> str:
    """safe_destination as a str, for the write of every output: string joins, no Path objects."""
    root = os.path.realpath(output_dir)
    dest = os.path.join(output_dir, output)
    parent = os.path.realpath(os.path.dirname(dest))
    if parent != root and not parent.startswith(root.rstrip(os.sep) + os.sep):
        raise ImgbuildError(f"{output}: its folder resolves to {parent}, outside {root} (a symlink?); refusing to write")
    if os.path.islink(dest):
        raise ImgbuildError(f"{output} is a symlink; refusing to write through it")
    return os.path.join(parent, os.path.basename(dest))


class NotVouched(ImgbuildError):
    """A restore from an untrusted cache would not reproduce the hash the lock records."""


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
                 slots: list[int] | None = None,
                 expected: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Write every image we have; return their lock entries. With `expected` (output ->
    sha256), nothing is written unless every file would have exactly that hash."""
    # Who made the original decides whether it is a draft: a cached draft restored by a paid
    # run is still a draft, and an emulator's image never becomes final.
    draft = not is_final(str(record.get("provider") or provider))
    meta = image_meta(target, key, provider, record)
    entries: dict[str, dict[str, Any]] = {}
    encoded = render(target, images, key, provider, record, slots)
    originals = _original_digests(images, slots)
    if expected is not None:
        import hashlib

        for _, output, data in encoded:
            if hashlib.sha256(data).hexdigest() != expected.get(output):
                raise NotVouched(f"{output}: the image in the repository's cache_dir does not "
                                 "reproduce the hash in the lock; not restored")
    for index, output, data in encoded:
        # A draft is not flushed to disk before the rename: it costs nothing to draw again, and
        # a file a crash left empty no longer has the sha256 the lock records.
        digest = atomic_write_bytes(destination(output_dir, output), data, durable=not draft)
        entries[output] = lock_entry(target, key, provider, draft, digest, meta, index)
        entries[output]["bytes"] = len(data)
        # the cached original's own sha256 (its name in a remote's cas/sha256/): a pull fetches
        # it directly, with no lookup of the generation's record first
        entries[output]["original"] = originals[index]
        actual = header_size(data)  # the written file has the original's pixel size
        if actual is not None and f"{actual[0]}*{actual[1]}" != target.request.size:
            # a paid image a few pixels off the request is kept; the lock says what it is
            entries[output]["actual_size"] = f"{actual[0]}*{actual[1]}"
    return entries


def _original_digests(images: list[bytes], slots: list[int] | None) -> dict[int, str]:
    """sha256 of each original by its output position, as render places them."""
    import hashlib

    positions = slots if slots is not None and len(slots) == len(images) else range(1, len(images) + 1)
    return {index: hashlib.sha256(data).hexdigest() for index, data in zip(positions, images)}


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


REMOVED, EDITED, MISSING, REFUSED = "removed", "edited", "missing", "refused"


def remove_recorded(project_root: Path, output_dir: Path, rel: str, sha256: str) -> str:
    """Delete output_dir/rel only if it is the file imgbuild wrote: its sha256 is the one the
    lock records. Returns REMOVED, EDITED (hash differs: kept), MISSING, or REFUSED (the path
    leaves output_dir or the project, or goes through a symlink: never followed, never deleted).

    Each folder is opened relative to the previous one without following links, and the file
    is hashed and unlinked through the same folder handle, so a link swapped in between cannot
    redirect the deletion."""
    parts = rel.split("/")
    if (not rel or "\0" in rel or "\\" in rel or rel.startswith("/")
            or any(p in ("", ".", "..") for p in parts)):
        return REFUSED
    root = os.path.realpath(project_root)
    top = os.path.realpath(output_dir)
    if top == root or not top.startswith(root + os.sep) or os.path.islink(output_dir):
        return REFUSED
    if not hasattr(os, "O_NOFOLLOW") or os.unlink not in os.supports_dir_fd:  # pragma: no cover
        return _remove_recorded_by_path(Path(top), parts, sha256)
    nofollow = os.O_RDONLY | os.O_NOFOLLOW
    try:
        folder = os.open(top, nofollow | os.O_DIRECTORY)
    except FileNotFoundError:
        return MISSING
    except OSError:
        return REFUSED
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, nofollow | os.O_DIRECTORY, dir_fd=folder)
            except FileNotFoundError:
                return MISSING
            except OSError:  # ELOOP/ENOTDIR: a symlink or a file where a folder should be
                return REFUSED
            os.close(folder)
            folder = inner
        return _remove_in(folder, parts[-1], sha256)
    finally:
        os.close(folder)


def _remove_in(folder: int, name: str, sha256: str) -> str:
    import hashlib
    import stat

    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder)
    except FileNotFoundError:
        return MISSING
    except OSError:
        return REFUSED
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return REFUSED
        digest = hashlib.file_digest(f, "sha256").hexdigest() if hasattr(hashlib, "file_digest") \
            else hashlib.sha256(f.read()).hexdigest()
    if digest != sha256:
        return EDITED
    os.unlink(name, dir_fd=folder)
    return REMOVED


def _remove_recorded_by_path(top: Path, parts: list[str], sha256: str) -> str:  # pragma: no cover
    from imgbuild.store.atomic import sha256_file

    path = top
    for part in parts:
        path = path / part
        if path.is_symlink():
            return REFUSED
    if not path.exists():
        return MISSING
    if not path.is_file():
        return REFUSED
    if sha256_file(path) != sha256:
        return EDITED
    path.unlink()
    return REMOVED


def remove_output(output_dir: Path, output: str) -> bool:
    try:
        os.unlink(destination(output_dir, output))
        return True
    except FileNotFoundError:
        return False
