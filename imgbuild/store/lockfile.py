"""imgbuild.lock: what was built, keyed by output path. JSON with sorted keys and no timestamps,
so the same inputs give byte-identical bytes; replaced atomically."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imgbuild.errors import ImgbuildError
from imgbuild.store.atomic import atomic_write_bytes

LOCK_VERSION = 1
SHARED_NAME = "imgbuild.lock"  # before 0.2, every project file in a folder wrote this one

# Fields a lock entry may have, with their types; `key` and `sha256` are required.
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "key": str, "sha256": str, "name": str, "provider": str, "draft": bool, "model": str,
    "size": str, "seed": int, "request": dict, "index": int, "bytes": int, "derived_from": str,
}


class Lock:
    def __init__(self, outputs: dict[str, dict[str, Any]] | None = None) -> None:
        self.outputs: dict[str, dict[str, Any]] = outputs or {}
        # Set when this project file has no lock of its own yet and starts from the folder's
        # shared imgbuild.lock: entries no spec of this file produces belong to another file.
        self.adopted_from: Path | None = None

    def get(self, output: str) -> dict[str, Any] | None:
        return self.outputs.get(output)

    def dumps(self) -> bytes:
        doc = {"version": LOCK_VERSION, "generator": "imgbuild", "outputs": self.outputs}
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def read(path: Path) -> Lock:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        shared = path.with_name(SHARED_NAME)
        if path.name != SHARED_NAME and shared.is_file():
            lock = read(shared)
            lock.adopted_from = shared
            return lock
        return Lock()
    except OSError as e:
        raise ImgbuildError(f"{path}: cannot read the lockfile: {e.strerror}") from None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != LOCK_VERSION or not isinstance(doc.get("outputs"), dict):
            raise ValueError("not an imgbuild lockfile of version 1")
        for output, entry in doc["outputs"].items():
            _check_entry(output, entry)
    except ValueError as e:
        raise ImgbuildError(
            f"{path}: the lockfile is damaged ({e}). Restore it from git (git checkout -- {path.name}) "
            "or delete it and run `imgbuild build`: images in the cache are restored without cost."
        ) from None
    return Lock(doc["outputs"])


def _check_entry(output: str, entry: Any) -> None:
    if "\0" in output or output.startswith("/") or ".." in output.split("/"):
        raise ValueError(f"entry {output!r} is not a path inside output_dir")
    if not isinstance(entry, dict):
        raise ValueError(f"entry {output!r} is not a mapping")
    for name in ("key", "sha256"):
        if name not in entry:
            raise ValueError(f"entry {output!r} has no {name!r}")
    for name, kind in _FIELDS.items():
        value = entry.get(name)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise ValueError(f"entry {output!r}: {name!r} has the wrong type")


def write(path: Path, lock: Lock) -> bool:
    """Write only when the content changed; True if written. A no-op build touches nothing."""
    data = lock.dumps()
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise ImgbuildError(
            f"cannot write {path}: {e.strerror or e}. The images written by this build are on "
            "disk and in the cache; build again where the lockfile can be written to record them"
        ) from None
    return True
