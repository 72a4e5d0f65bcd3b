"""The images a dependent target read (`inputs:`, issue 19), for its review card: each input's
name or path, whether it changed (the plan's `input logo changed`), and a thumbnail of the
image as it was used, before and after.

The lock records each input's identity (`logo@key:KEY` or `brand/logo.png@sha256:DIGEST`), so
the bytes are found by it, never guessed: for a target input, that target's first original of
that key (what was sent: local cache, remote cache, else the output file a lock records with
that key, in the working tree or at the base); for a file, the repository file whose bytes have
that sha256 (working tree, else the base revision, else HEAD). One found nowhere is shown as
missing, with where it was looked for.
"""
from __future__ import annotations

import hashlib
import posixpath
from pathlib import Path
from typing import Any

from imgbuild.plan import compare as diff

TARGET, FILE = "target", "file"
MISSING = {TARGET: "not in the caches, the output tree or git",
           FILE: "no file with these bytes in the working tree or git"}


def parse(identity: str) -> tuple[str, str, str] | None:
    """(kind, ref, digest) of an input identity as the plan writes it (plan.states.Source)."""
    ref, at, rest = identity.rpartition("@")
    how, colon, digest = rest.partition(":")
    if not at or not colon or not ref or how not in ("key", "sha256"):
        return None
    return (TARGET if how == "key" else FILE), ref, digest


def identities(entry: dict[str, Any] | None) -> list[str]:
    request = entry.get("request") if entry else None
    listed = request.get("inputs") if isinstance(request, dict) else None
    return [str(i) for i in listed] if isinstance(listed, list) else []


def card_inputs(change: diff.Change, images: Any, folder: Path, thumbnail: Any) -> list[dict[str, Any]]:
    """One row per input of the later image (of the earlier one when it was removed)."""
    after, before = identities(change.after), identities(change.before)
    shown = after if change.after is not None else before
    rows = []
    for identity in shown:
        parsed = parse(identity)
        if parsed is None:
            continue
        changed = change.after is not None and change.before is not None and identity not in before
        row = _row(identity, parsed, changed, images, folder, thumbnail)
        if changed:  # the same input as the earlier image read it
            old = next((p for p in map(parse, before) if p and p[1] == row["ref"]), None)
            if old is not None:
                row["before"] = {"short": old[2][:12], **_shown(images, *old, folder, thumbnail)}
        rows.append(row)
    return rows


def made_from(record: dict[str, Any], images: Any, folder: Path, thumbnail: Any) -> list[dict[str, Any]]:
    """The images the candidates of a pending target were made from (its record's request)."""
    rows = []
    for identity in identities(record):
        parsed = parse(identity)
        if parsed is not None:
            rows.append(_row(identity, parsed, False, images, folder, thumbnail))
    return rows


def _row(identity: str, parsed: tuple[str, str, str], changed: bool, images: Any, folder: Path,
         thumbnail: Any) -> dict[str, Any]:
    kind, ref, digest = parsed
    return {"ref": ref, "kind": kind, "identity": identity, "short": digest[:12], "changed": changed,
            "image": _shown(images, kind, ref, digest, folder, thumbnail), "before": None}


def _shown(images: Any, kind: str, ref: str, digest: str, folder: Path, thumbnail: Any) -> dict[str, Any]:
    found = images.input_image(kind, ref, digest)
    if found is None:
        return {"thumb": None, "source": None, "missing": MISSING[kind]}
    data, source = found
    picture = thumbnail(data, folder, hashlib.sha256(data).hexdigest()[:32])
    if picture is None:
        return {"thumb": None, "source": source, "missing": f"not an image ({source})"}
    return {"source": source, "missing": None, **picture}


def find(images: Any, kind: str, ref: str, digest: str) -> tuple[bytes, str] | None:
    """The bytes of one input as it was used, and where they were found (see the module)."""
    if kind == TARGET:
        found = images.originals({"key": digest, "index": 1})
        return found or images.output_with_key(ref, digest)
    path = posixpath.normpath(ref)
    if path.startswith("../") or path == ".." or posixpath.isabs(path):
        return None  # a lock is untrusted: never read outside the project
    local = images.project_file(path)
    if local is not None and hashlib.sha256(local).hexdigest() == digest:
        return local, "repository file"
    for commit, label in images.revisions():
        data = images.repo.show(commit, posixpath.normpath(f"{images.project_dir}/{path}"))
        if data is not None and hashlib.sha256(data).hexdigest() == digest:
            return data, f"git {label}"
    return None
