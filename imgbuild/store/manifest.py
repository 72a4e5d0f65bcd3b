"""manifest.json — what static-site generators read — and `<picture>` markup made from it.

The manifest is a pure function of the targets and the lock (no image is opened), so it is
byte-identical for identical inputs: each image name → alt, original and variants, each with
path (relative to output_dir), format, width, height, bytes and sha256.
"""
from __future__ import annotations

import json
import posixpath
from html import escape
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imgbuild.images.derive import MIME
from imgbuild.spec.types import Target
from imgbuild.store.lockfile import Lock, is_draft

MANIFEST_VERSION = 1
_EXT_FORMAT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".avif": "avif"}


def image_name(target: Target, index: int) -> str:
    return target.name if len(target.outputs) == 1 else f"{target.name}-{index}"


def build(targets: list[Target], lock: Lock) -> bytes:
    images: dict[str, Any] = {}
    for target in targets:
        for index, output in enumerate(target.outputs, start=1):
            entry = lock.get(output)
            if entry is None:
                continue
            original = {
                "path": output,
                "format": _EXT_FORMAT[posixpath.splitext(output)[1].lower()],
                "width": target.request.width,
                "height": target.request.height,
                "bytes": entry.get("bytes"),
                "sha256": entry["sha256"],
            }
            variants = []
            for v in target.variants:
                ventry = lock.get(v.output)
                if v.source == output and ventry is not None:
                    variants.append({"path": v.output, "format": v.format, "width": v.width, "height": v.height,
                                     "bytes": ventry.get("bytes"), "sha256": ventry["sha256"]})
            images[image_name(target, index)] = {
                "alt": target.alt or "",
                "draft": is_draft(entry),
                "original": original,
                "variants": variants,  # in the spec's format order (preference), then by width
            }
    # One image per line: valid JSON, readable diffs, and the C encoder (10k images in ~50 ms)
    body = ",\n".join(f"{json.dumps(name, ensure_ascii=False)}: "
                      f"{json.dumps(images[name], sort_keys=True, ensure_ascii=False)}"
                      for name in sorted(images))
    text = f'{{"generator": "imgbuild", "version": {MANIFEST_VERSION}, "images": {{\n{body}\n}}}}\n'
    return text.encode("utf-8")


def wanted(settings: Any, targets: list[Target]) -> str | None:
    """The manifest's file name, or None: by default only projects with site outputs get one."""
    setting = settings.get("manifest")
    if setting is False:
        return None
    if setting:
        return str(setting)
    return "manifest.json" if any(t.variants or t.alt for t in targets) else None


def picture(image: dict[str, Any], *, sizes: str = "100vw", base_url: str = "",
            css_class: str | None = None) -> str:
    """`<picture>` with one `<source>` per format and a fallback `<img>` (the last format listed,
    or the original when there are no variants) carrying width, height, alt and lazy loading."""
    def url(path: str) -> str:
        # `/img` and `/img/` both mean the folder: join with exactly one slash
        joined = base_url.rstrip("/") + "/" + path.lstrip("/") if base_url else path
        return escape(joined, quote=True)

    by_format: dict[str, list[dict[str, Any]]] = {}
    for v in image["variants"]:
        by_format.setdefault(v["format"], []).append(v)
    if not by_format:
        by_format[image["original"]["format"]] = [image["original"]]
    formats = list(by_format)
    fallback_format = formats[-1]
    fallback = by_format[fallback_format]
    largest = max(fallback, key=lambda v: v["width"])

    def srcset(items: list[dict[str, Any]]) -> str:
        return ", ".join(f"{url(v['path'])} {v['width']}w" for v in sorted(items, key=lambda v: v["width"]))

    lines = ["<picture>"]
    for fmt in formats[:-1]:
        lines.append(f'  <source type="{MIME[fmt]}" srcset="{srcset(by_format[fmt])}" sizes="{escape(sizes, quote=True)}">')
    attrs = [f'src="{url(largest["path"])}"']
    if len(fallback) > 1 or image["variants"]:
        attrs.append(f'srcset="{srcset(fallback)}" sizes="{escape(sizes, quote=True)}"')
    attrs += [f'width="{largest["width"]}"', f'height="{largest["height"]}"',
              f'alt="{escape(image.get("alt", ""), quote=True)}"', 'loading="lazy"', 'decoding="async"']
    if css_class:
        attrs.insert(0, f'class="{escape(css_class, quote=True)}"')
    lines.append(f"  <img {' '.join(attrs)}>")
    lines.append("</picture>")
    return "\n".join(lines)


def write(output_dir: Path, settings: Mapping[str, Any], targets: list[Target], lock: Lock) -> None:
    """Write the manifest when it is wanted and its bytes changed (never touch an equal file).
    The bytes are compared on every build, a no-op too, so a build repairs a manifest that
    `check` reports stale even when no image changed."""
    from imgbuild.store.atomic import atomic_write_bytes

    name = wanted(settings, targets)
    if name is None:
        return
    path = output_dir / name
    data = build(targets, lock)
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write_bytes(path, data)
