"""The files `imgbuild review` writes: a card per output (with its thumbnails), index.html from
the package's Jinja2 template, review.json, and the optional markdown summary.

Every file is replaced atomically; thumbnails are named by the sha256 of the image they show,
so a second review reuses them and a page never shows a stale picture under a reused name.
"""
from __future__ import annotations

import hashlib
import html
import json
import os
import re
from pathlib import Path
from typing import Any

from imgbuild.images import thumbs
from imgbuild.plan import compare as diff
from imgbuild.store.atomic import atomic_write_bytes

THUMBS = "thumbs"
ASSETS = Path(__file__).with_name("assets")
FACTS = (("key", "short_key"), ("pixels", "pixels"), ("bytes", "bytes"), ("draft", "draft"),
         ("image from", "source"))
MARKDOWN_ROWS = 50  # a PR comment holds 65,536 characters; the page has the rest
_THUMB_NAME = re.compile(r"^(diff-)?[0-9a-f]{12,64}(-[0-9a-f]{12})?\.webp$")


def card(change: diff.Change, pair: tuple[Any, Any], folder: Path, images: Any = None) -> dict[str, Any]:
    """What the page, review.json and the summary say about one output."""
    from imgbuild.verbs.review.inputs import card_inputs

    before, after = pair
    doc = change.to_dict()
    doc["inputs"] = card_inputs(change, images, folder, _thumbnail) if images is not None else []
    doc["id"] = ""  # numbered once all cards exist (see `number`)
    doc["ops"] = {name: p["ops"] for name, p in change.prompts.items()}
    doc["before"] = _side(change.before, before, folder) if change.before is not None else None
    doc["after"] = _side(change.after, after, folder) if change.after is not None else None
    doc["diff"] = None
    if change.kind == diff.MODIFIED and before is not None and after is not None:
        doc["diff"] = _pixel_diff(before[0], after[0], folder)
    return doc


def pending_picks(project: Any, folder: Path, images: Any = None) -> list[dict[str, Any]]:
    """Targets waiting for `imgbuild accept`, each with its candidates' thumbnails and the images
    they were made from (review.picks)."""
    from imgbuild.verbs.review.picks import pending_picks as find

    return find(project, folder, images)


def number(cards: list[dict[str, Any]]) -> None:
    """Stable, readable anchors (`#t-posters-night-png`), unique even when two paths slug alike."""
    seen: set[str] = set()
    for c in cards:
        base = "t-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", c["output"]).strip("-").lower() or "image")
        anchor, i = base, 2
        while anchor in seen:
            anchor, i = f"{base}-{i}", i + 1
        seen.add(anchor)
        c["id"] = anchor


def _side(entry: dict[str, Any], found: Any, folder: Path) -> dict[str, Any]:
    key = str(entry.get("key", ""))
    side: dict[str, Any] = {"key": key, "short_key": key[:12], "sha256": entry.get("sha256"),
                            "draft": bool(entry.get("draft")), "provider": entry.get("provider"),
                            "source": None, "thumb": None, "bytes": None, "width": None, "height": None,
                            "unreadable": None}
    if found is None:
        return side
    data, source = found
    picture = _thumbnail(data, folder, hashlib.sha256(data).hexdigest()[:32])
    if picture is None:
        side["unreadable"] = source
        return side
    side.update(source=source, bytes=len(data), **picture)
    return side


def _thumbnail(data: bytes, folder: Path, name: str) -> dict[str, Any] | None:
    size = thumbs.dimensions(data)
    if size is None:
        return None
    path = folder / f"{name}.webp"
    made = thumbs.dimensions(path.read_bytes()) if path.is_file() else None
    if made is None:
        picture = thumbs.thumbnail(data)
        if picture is None:
            return None
        atomic_write_bytes(path, picture.data, durable=False)  # remade when unreadable
        made = (picture.width, picture.height)
    return {"width": size[0], "height": size[1], "thumb": f"{THUMBS}/{path.name}",
            "thumb_width": made[0], "thumb_height": made[1]}


def _pixel_diff(before: bytes, after: bytes, folder: Path) -> dict[str, Any]:
    result = thumbs.difference(before, after)
    if result is None:
        return {"thumb": None, "changed": None, "box": None, "note": "cannot compare: not both images"}
    if result.picture is None:
        return {"thumb": None, "changed": 1.0, "box": None, "note": "sizes differ"}
    name = f"diff-{hashlib.sha256(before).hexdigest()[:12]}-{hashlib.sha256(after).hexdigest()[:12]}.webp"
    atomic_write_bytes(folder / name, result.picture.data, durable=False)
    share = result.changed * 100
    note = "identical pixels" if result.box is None else f"{share:.2f}% of pixels differ"
    return {"thumb": f"{THUMBS}/{name}", "thumb_width": result.picture.width,
            "thumb_height": result.picture.height, "changed": round(result.changed, 6),
            "box": list(result.box) if result.box else None, "note": note}


# --- writing ------------------------------------------------------------------------------------

def write(result: Any, options: Any) -> None:
    out: Path = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "index.html", render_page(result).encode("utf-8"))
    atomic_write_bytes(out / "review.json", (json.dumps(result.document(), indent=1, sort_keys=True,
                                                       ensure_ascii=False) + "\n").encode("utf-8"))
    picks = getattr(result, "picks", [])
    _drop_unused_thumbnails(out / THUMBS, [*result.cards, *({"before": None, "after": c, "diff": None}
                                                             for p in picks for c in p["candidates"]),
                                           *({"before": None, "after": None, "diff": None,
                                              "inputs": p.get("inputs", [])} for p in picks)])
    if options.markdown:
        path = Path(options.markdown).resolve()
        link = options.report_url or os.path.relpath(out / "index.html", path.parent)
        atomic_write_bytes(path, render_markdown(result, link).encode("utf-8"))
        result.markdown = path


def render_page(result: Any) -> str:
    import jinja2

    from imgbuild._version import __version__

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ASSETS), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    comparison = result.comparison
    page = env.get_template("index.html.j2").render(
        version=__version__, project=result.project, base=result.base, counts=result.counts,
        kinds=diff.KINDS, images_paid=comparison.images_paid, spent=comparison.spent,
        currency=comparison.currency, cards=result.cards, changed=result.changed, facts=FACTS,
        picks=getattr(result, "picks", []),
        gain=thumbs.DIFF_GAIN,
        css=(ASSETS / "review.css").read_text("utf-8"), js=(ASSETS / "review.js").read_text("utf-8"))
    return page.lstrip()


def _drop_unused_thumbnails(folder: Path, cards: list[dict[str, Any]]) -> None:
    """Thumbnails of earlier reviews that this page no longer shows (only files we name)."""
    used = {Path(p).name for c in cards for p in _thumb_paths(c)}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name not in used and _THUMB_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def _thumb_paths(c: dict[str, Any]) -> list[str]:
    shown = [c["before"], c["after"], c["diff"]]
    shown += [side for i in c.get("inputs", ()) for side in (i["image"], i["before"])]
    return [s["thumb"] for s in shown if s and s.get("thumb")]


def render_markdown(result: Any, link: str) -> str:
    """Counts, cost, and a table of what changed with links into the page: for a PR comment."""
    c, comparison = result.counts, result.comparison
    counts = ", ".join(f"{c[k]} {k}" for k in diff.KINDS if c[k] or k in (diff.NEW, diff.CHANGED, diff.REMOVED))
    lines = [f"### imgbuild review: {counts}", "",
             f"Against `{result.base.ref}` ({result.base.commit[:10]}): **{comparison.images_paid} "
             f"image(s) paid, {comparison.spent:.2f} {comparison.currency}**. [Open the report]({link})", ""]
    shown = [card for card in result.cards if card["kind"] != diff.UNCHANGED]
    if not shown:
        return "\n".join([*lines, "No image changed.", ""])
    lines += ["| | target | output | what changed |", "|---|---|---|---|"]
    for card in shown[:MARKDOWN_ROWS]:
        lines.append(f"| {card['kind']} | [{_cell(card['name'])}]({link}#{card['id']}) "
                     f"| `{_cell(card['output'])}` | {_markdown_change(card)} |")
    if len(shown) > MARKDOWN_ROWS:
        lines.append(f"\n…and {len(shown) - MARKDOWN_ROWS} more in the report.")
    return "\n".join([*lines, ""])


def _markdown_change(card: dict[str, Any]) -> str:
    if card["kind"] == diff.NEW:
        return "new image"
    if card["kind"] == diff.REMOVED:
        return "no longer produced"
    parts = [_cell(why) for why in card.get("input_changes", ())]
    parts += [f"{name.replace('_', ' ')}: {_marked(card['ops'][name])}" for name in card["prompts"]]
    parts += [f"{p['field']}: {_cell(json.dumps(p['before']))} → {_cell(json.dumps(p['after']))}"
              for p in card["params"]]
    if card.get("inputs"):
        parts.append("reads " + ", ".join(f"`{_cell(i['ref'])}`" + (" (changed)" if i["changed"] else "")
                                          + ("" if i["image"]["thumb"] else " (image not found)")
                                          for i in card["inputs"]))
    if card["kind"] == diff.MODIFIED:
        note = (card.get("diff") or {}).get("note")
        parts.insert(0, "same request, other bytes" + (f" ({note})" if note else ""))
    return "; ".join(parts) or "—"


def _marked(ops: list[tuple[str, str]], context: int = 3) -> str:
    """The word diff with <del>/<ins> (GitHub renders both), long unchanged runs elided."""
    parts = []
    for i, (op, words) in enumerate(ops):
        text = _cell(html.escape(words, quote=False))
        if op == "delete":
            parts.append(f"<del>{text}</del>")
        elif op == "insert":
            parts.append(f"<ins>{text}</ins>")
        else:
            seq = text.split()
            if len(seq) > 2 * context:
                head = seq[:context] if i > 0 else []
                tail = seq[-context:] if i < len(ops) - 1 else []
                seq = [*head, "…", *tail]
            parts.append(" ".join(seq))
    return " ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
