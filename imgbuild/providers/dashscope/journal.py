"""A durable record of paid asynchronous tasks that have not yet reached the cache.

Async generation is billed when the task is submitted, not when we fetch the result. If the
process dies between submit and download, the task id is the only handle on images we have
already paid for, so it is written to disk before we start waiting. A later run with the same
generation key finds the entry and polls that task instead of submitting (and paying) again.

One small JSON file per generation key, written atomically (temp file in the same directory,
fsync, os.replace), so a crash leaves either the old entry or the new one, never half of one.
File names are a hash of the key: keys may hold any characters, file names may not.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger("imgbuild.journal")

_SUFFIX = ".json"


class Journal:
    """Maps a generation key to the async task that is producing it."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"Journal({str(self.directory)!r})"

    def get(self, key: str) -> dict[str, object] | None:
        """The entry for `key`, or None (also when the file is unreadable: better to resubmit
        than to crash on a damaged journal)."""
        return _read(self._path(key))

    def record(self, key: str, *, task_id: str, endpoint: str, model: str,
               base_host: str) -> dict[str, object]:
        """Durably remember that `task_id` (on `base_host`) is producing `key`."""
        entry: dict[str, object] = {
            "key": key,
            "task_id": task_id,
            "endpoint": endpoint,
            "model": model,
            "base_host": base_host,
            "submitted_at": time.time(),
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(self._path(key), json.dumps(entry, indent=2, sort_keys=True) + "\n")
        return entry

    def discard(self, key: str) -> None:
        """Forget `key`; a missing entry is not an error (discarding twice is harmless)."""
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def entries(self) -> dict[str, dict[str, object]]:
        """Every readable entry, by generation key."""
        if not self.directory.is_dir():
            return {}
        found = {}
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            if path.name.startswith("."):
                continue  # the temp file of an entry being written (or of a killed writer)
            entry = _read(path)
            if entry is not None and isinstance(entry.get("key"), str):
                found[str(entry["key"])] = entry
        return found

    def _path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode("utf-8")).hexdigest() + _SUFFIX)


def _read(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable journal entry %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _write_atomic(path: Path, text: str) -> None:
    # Same directory as the target so os.replace is a rename on one file system.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename itself is only durable once the directory entry is flushed (POSIX only).
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["Journal"]
