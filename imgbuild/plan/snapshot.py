"""The no-op snapshot: disposable state in `.imgbuild/` that lets a `build` or `check` with
nothing to do answer without loading targets, parsing the lock or recomputing keys.

It is written only after a full run found everything up to date, and holds what that verdict
depended on: the sha256 of every file expansion read (as the plan cache records them), the include
globs' matches, the settings, the provider identity (build), and the (inode, size, mtime_ns,
ctime_ns) of the lock, of every output the lock names and of the manifest. ctime cannot be
set back by `os.utime`, so an output edited and given its old mtime still differs. Anything
different, missing or unreadable sends the run down the full path; the lock stays the
committed source of truth.

Plain JSON, never pickle: a cloned repository must not be able to run code through it.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgbuild._version import __version__

SNAPSHOT_FILE = "noop-snapshot.json"
_FORMAT = f"2/{__version__}/{sys.version_info[0]}.{sys.version_info[1]}"
# A file changed less than this before the snapshot could change again within the filesystem's
# timestamp granularity without its stamp changing (git's "racy" entries): such a run does not
# write a snapshot; the next no-op does.
_RACY_SECONDS = 2.0


def _stamp(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _sha256(path: str, buffer: bytearray, view: memoryview) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                digest.update(view[:n])
    except OSError:
        return None
    return digest.hexdigest()


def _globs(root: Path, settings: dict[str, Any]) -> list[str]:
    from imgbuild.spec.project import include_matches

    return include_matches(root, settings, resolve=False)  # compared only with this list


def lock_stamp(lock_path: Path) -> list[int] | None:
    """Taken before the lock is read, so a snapshot never vouches for a lock it did not see."""
    return _stamp(str(lock_path))


def load(project_file: Path, state_dir: Path, kind: str) -> dict[str, Any] | None:
    """The snapshot's document when every input, the lock and every output are exactly as it
    recorded them; None otherwise. `kind` is "build" or "check"."""
    try:
        raw = (state_dir / SNAPSHOT_FILE).read_bytes()
        # tens of thousands of small lists, all kept: the collector would only walk them
        gc.disable()
        try:
            doc = json.loads(raw)
        finally:
            gc.enable()
        if doc.get("format") != _FORMAT or doc.get("project") != str(project_file):
            return None
        entry = doc[kind]
        buffer = bytearray(1 << 16)
        view = memoryview(buffer)
        for name, digest in doc["inputs"].items():
            if _sha256(name, buffer, view) != digest:
                return None
        if _globs(project_file.parent, doc["settings"]) != doc["globs"]:
            return None
        stat = os.stat
        for name, (ino, size, mtime, ctime) in doc["files"]:  # ~10k stats: the no-op's main cost
            st = stat(name)
            if st.st_mtime_ns != mtime or st.st_ctime_ns != ctime or st.st_size != size or st.st_ino != ino:
                return None
        return {**doc, **entry}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(project: Any, kind: str, lock: Any, locked: list[int] | None, entry: dict[str, Any],
         manifest: str | None, stat_entry: Callable[[str], list[Any] | None]) -> None:
    """Record a verdict of nothing to do. `locked` is the lock's stamp from before it was read;
    `stat_entry` the stat cache's [size, mtime_ns, inode, ctime_ns, sha256] of an output it hashed,
    so the stamps recorded are those of the bytes that were judged. The files expansion read
    and their sha256 are `project.read_files` (loaded or expanded: what the plan cache holds,
    not read back from it: that is a parse of every target's row)."""
    if locked is None or lock_stamp(project.lock_path) != locked or not project.read_files:
        return
    from imgbuild.store import gcpause  # not at the top: the no-op's fast path never saves

    with gcpause.paused():  # a list per output, no cycles (store/gcpause.py)
        _save(project, kind, lock, locked, entry, manifest, stat_entry)


def _save(project: Any, kind: str, lock: Any, locked: list[int], entry: dict[str, Any],
          manifest: str | None, stat_entry: Callable[[str], list[Any] | None]) -> None:
    inputs, settings = project.read_files, project.settings
    now = time.time_ns()
    racy = now - int(_RACY_SECONDS * 1e9)
    files = [[str(project.lock_path), locked]]
    base = str(project.output_dir)
    for name in (os.path.join(base, o) for o in lock.outputs):
        # The stamp the bytes were judged by (taken before they were read), not a new stat: a
        # file changed since then no longer matches it, and the next run does not trust it.
        cached = stat_entry(name)
        if cached is None:
            return  # not judged by its bytes
        files.append([name, [cached[2], cached[0], cached[1], cached[3]]])
    if manifest is not None:  # judged by its bytes, just now
        stamp = _stamp(os.path.join(base, manifest))
        if stamp is None:
            return
        files.append([os.path.join(base, manifest), stamp])
    if max(max(s[2], s[3]) for _, s in files) > racy:
        return
    _write(project, kind, entry, dict(inputs), settings, files)


def _write(project: Any, kind: str, entry: dict[str, Any], inputs: dict[str, str],
           settings: dict[str, Any], files: list[Any]) -> None:
    from imgbuild.store.atomic import atomic_write_bytes

    path = project.state_dir / SNAPSHOT_FILE
    doc = {"format": _FORMAT, "project": str(project.file), "inputs": inputs,
           "globs": _globs(project.root, settings), "settings": settings, "files": files}
    try:  # keep the other verb's verdict when it was made on the same state
        old = json.loads(path.read_bytes())
        if all(old.get(k) == v for k, v in doc.items()):
            doc.update({k: old[k] for k in ("build", "check") if k in old})
    except (OSError, ValueError, AttributeError):
        pass
    doc[kind] = entry
    try:
        # disposable state, checked when read: not worth an fsync
        atomic_write_bytes(path, json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
                           durable=False)
    except OSError:
        pass  # a read-only checkout still works, just without the speed-up


def forget(state_dir: Path) -> None:
    try:
        os.unlink(state_dir / SNAPSHOT_FILE)
    except OSError:
        pass
