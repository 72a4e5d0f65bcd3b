"""MkDocs hook: `{{ picture("NAME") }}` or `{{ picture("NAME", "SIZES") }}` in a page becomes the
`<picture>` of that image in imgbuild's manifest.json, the same markup as `imgbuild html NAME`.

Standard library only, so the docs build needs nothing but MkDocs: imgbuild writes the images
and the manifest into docs/img/generated/, which MkDocs copies like any other file in docs/.
"""
from __future__ import annotations

import json
import posixpath
import re
from html import escape
from pathlib import Path
from typing import Any

GENERATED = "img/generated"  # imgbuild's output_dir, relative to docs_dir
CALL = re.compile(r'\{\{\s*picture\(\s*"([^"]+)"\s*(?:,\s*"([^"]*)"\s*)?\)\s*\}\}')
MIME = {"avif": "image/avif", "webp": "image/webp", "jpeg": "image/jpeg", "png": "image/png"}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if "picture(" not in markdown:
        return markdown
    path = Path(config["docs_dir"], GENERATED, "manifest.json")
    images = json.loads(path.read_text("utf-8"))["images"]
    # Relative URLs, so the site works under any base path and with or without directory URLs.
    folder = page.url if page.url.endswith("/") else posixpath.dirname(page.url)
    base = posixpath.relpath(GENERATED, folder or ".") + "/"

    def replace(match: re.Match[str]) -> str:
        name, sizes = match.group(1), match.group(2) or "100vw"
        if name not in images:
            raise ValueError(f'{page.file.src_path}: picture("{name}"): no such image in {path} '
                             "(run imgbuild build)")
        return picture(images[name], sizes, base)

    return CALL.sub(replace, markdown)


def picture(image: dict[str, Any], sizes: str, base: str) -> str:
    """One <source> per format but the last, in the spec's order of preference; the last
    format is the <img> fallback, whose width and height are its largest file's."""
    by_format: dict[str, list[dict[str, Any]]] = {}
    for v in image["variants"] or [image["original"]]:
        by_format.setdefault(v["format"], []).append(v)
    formats = list(by_format)
    fallback = by_format[formats[-1]]
    big = max(fallback, key=lambda v: v["width"])

    def srcset(items: list[dict[str, Any]]) -> str:
        return ", ".join(f"{escape(base + v['path'])} {v['width']}w" for v in items)

    lines = ["<picture>"]
    lines += [f'  <source type="{MIME[f]}" srcset="{srcset(by_format[f])}" sizes="{escape(sizes)}">'
              for f in formats[:-1]]
    fallback_set = f' srcset="{srcset(fallback)}" sizes="{escape(sizes)}"' if image["variants"] else ""
    lines.append(f'  <img src="{escape(base + big["path"])}"{fallback_set} width="{big["width"]}" '
                 f'height="{big["height"]}" alt="{escape(image["alt"])}" loading="lazy" decoding="async">')
    lines.append("</picture>")
    return "\n".join(lines)
