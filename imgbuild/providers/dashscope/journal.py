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
import math
import os
import re
import tempfile
import time
from pathlib import Path

log = logging.getLogger("imgbuild.journal")

_SUFFIX = ".json"


_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
CLOCK_SKEW = 300.0  # seconds a submission time may lie in the future before it is doubted


class Journal:
    """Maps a generation key to the async task that is producing it.

    Every entry read is validated, its key against the key asked for: an entry that is damaged,
    swapped with another's or of the wrong shape is ignored with a warning (the target is then
    submitted anew, paid again) rather than trusted (another prompt's pixels) or crashed on."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.warnings: list[str] = []  # for the build to show; nothing here prints
        if self.directory.exists() and not self.directory.is_dir():
            from imgbuild.errors import ImgbuildError

            raise ImgbuildError(
                f"{self.directory} is a file, not a folder: imgbuild keeps the ids of paid async "
                "tasks there, so that a build interrupted after paying resumes them. Move the "
                "file away and build again; nothing was submitted")

    def __repr__(self) -> str:
        return f"Journal({str(self.directory)!r})"

    def get(self, key: str) -> dict[str, object] | None:
        """The entry for `key`, or None when there is none or it cannot be trusted (better to
        resubmit than to crash, or to give this target another task's images)."""
        path = self._path(key)
        entry = _read(path, self.warnings)
        return None if entry is None else self._checked(path, entry, key)

    def _checked(self, path: Path, entry: dict[str, object], key: str) -> dict[str, object] | None:
        why = _invalid(entry, key)
        if why:
            self.warnings.append(f"ignoring journal entry {path.name}: {why}; the image is "
                                 "submitted again if needed (paid again)")
            return None
        when = entry.get("submitted_at")
        now = time.time()
        if type(when) not in (int, float) or not math.isfinite(when) or when > now + CLOCK_SKEW:  # type: ignore[arg-type]
            # The task id is what matters: resume it; an expired task is answered UNKNOWN and
            # resubmitted then. Guessing "too old" from a bad clock would pay again for nothing.
            self.warnings.append(f"journal entry {path.name}: submission time {when!r} is not a "
                                 "past time; resuming its task anyway")
            entry = {**entry, "submitted_at": now}
        return entry

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
        """Forget `key`; a missing entry is not an error (discarding twice is harmless), and
        one that cannot be removed only costs a resumed poll next time, never a paid image."""
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.debug("could not discard journal entry for %s: %s", key, exc)

    def entries(self) -> dict[str, dict[str, object]]:
        """Every readable entry, by generation key."""
        if not self.directory.is_dir():
            return {}
        found = {}
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            if path.name.startswith("."):
                continue  # the temp file of an entry being written (or of a killed writer)
            entry = _read(path, self.warnings)
            key = entry.get("key") if entry is not None else None
            if isinstance(key, str) and path == self._path(key) and not _invalid(entry, key):  # type: ignore[arg-type]
                found[key] = entry  # type: ignore[assignment]
        return found

    def _path(self, key: str) -> Path:
        return self.directory / (hashlib.sha256(key.encode("utf-8")).hexdigest() + _SUFFIX)


def _read(path: Path, warnings: list[str]) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_bytes()[:65536].decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warnings.append(f"ignoring unreadable journal entry {path.name}: {exc}")
        return None
    if not isinstance(data, dict):
        warnings.append(f"ignoring journal entry {path.name}: not a JSON object")
        return None
    return data


def _invalid(entry: dict[str, object], key: str) -> str | None:
    """Why `entry` cannot be the journal entry of `key`, or None."""
    if entry.get("key") != key:
        return "it belongs to another request (moved or swapped?)"
    task_id = entry.get("task_id")
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        return "its task id is damaged"
    for name in ("endpoint", "model", "base_host"):
        value = entry.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= 256:
            return f"its {name} is damaged"
    return None


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
