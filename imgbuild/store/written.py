"""What imgbuild wrote and then stopped producing: `.imgbuild/written.json`, project-relative
path -> sha256 of the bytes imgbuild wrote. The build adds to it when lock entries leave the
lock (a spec renamed or removed, output_dir moved); `clean` deletes such a file only while its
bytes are still the ones imgbuild wrote, so it never touches a file a person made or edited.

Plain JSON, local to this checkout, rewritten atomically; a damaged one is read as empty."""
from __future__ import annotations

import json
from pathlib import Path

from imgbuild.store.atomic import atomic_write_bytes

FILE = "written.json"
_FORMAT = 1


def load(state_dir: Path) -> dict[str, str]:
    try:
        doc = json.loads((state_dir / FILE).read_bytes())
        files = doc["files"] if doc.get("format") == _FORMAT else {}
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def save(state_dir: Path, files: dict[str, str]) -> None:
    doc = {"format": _FORMAT, "files": dict(sorted(files.items()))}
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(state_dir / FILE, json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8"))


def remember(state_dir: Path, files: dict[str, str]) -> None:
    """Add `files` (project-relative path -> sha256); nothing is written when nothing is new."""
    if not files:
        return
    known = load(state_dir)
    if all(known.get(k) == v for k, v in files.items()):
        return
    save(state_dir, {**known, **files})
