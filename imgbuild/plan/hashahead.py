"""Hashing a fresh clone's outputs in a child process while this one reads the specs.

A fresh clone has no stat cache, so `check` must read every output the lock names (312 MB at
10k targets: ~0.25 s), and rendering the specs holds the GIL, so threads could not overlap the
two (measured: no gain). A forked child reads the lock itself, stamps and hashes those files on
the other core and hands back (path, stamp, sha256) rows; the parent uses a row only when the
file's stamp is still the one the child took before reading it, and hashes anything else
itself. Only where fork is safe and cheap: Linux, a process with one thread.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from imgbuild.store import gcpause

WORTH_IT = 64  # fewer outputs than this: the fork costs more than it saves


class Ahead:
    """A running child; `rows()` waits for it (once) and returns what it hashed."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd
        self._rows: dict[str, list[Any]] | None = None

    def rows(self) -> dict[str, list[Any]]:
        """path -> [size, mtime_ns, inode, ctime_ns, sha256]; empty when the child failed."""
        if self._rows is None:
            chunks = []
            try:
                while chunk := os.read(self.fd, 1 << 20):
                    chunks.append(chunk)
                with gcpause.paused():
                    doc = json.loads(b"".join(chunks)) if chunks else {}
                self._rows = doc if isinstance(doc, dict) else {}
            except (OSError, ValueError):
                self._rows = {}
            self.close()
        return self._rows

    def close(self) -> None:
        """Stop and reap the child (a parent leaving early does not wait for its hashing)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pid:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0


def start(project_file: Path) -> Ahead | None:
    """A child hashing the outputs the project's lock names, or None where it would not pay:
    the stat cache exists (not a fresh clone), fork is unsafe here, or the lock is small. The
    child reads the project file and the lock itself, so the parent starts it at once."""
    from imgbuild.plan.caches import STAT_FILE
    from imgbuild.spec.project import STATE_DIR, lock_path_for

    lock_path = lock_path_for(project_file)
    if (sys.platform != "linux" or threading.active_count() != 1
            or (project_file.parent / STATE_DIR / STAT_FILE).exists()
            or _size(lock_path) < WORTH_IT * 200):  # a lock entry is a few hundred bytes
        return None
    try:
        read_end, write_end = os.pipe()
    except OSError:  # out of descriptors: hash in this process, as without a child
        return None
    try:
        pid = os.fork()
    except OSError:  # out of processes or memory: the same
        os.close(read_end)
        os.close(write_end)
        return None
    if pid:
        os.close(write_end)
        return Ahead(pid, read_end)
    try:  # the child: never returns into the caller's code, whatever happens
        os.close(read_end)
        rows = _hash(_locked_outputs(project_file, lock_path))
        with os.fdopen(write_end, "wb") as out:
            out.write(json.dumps(rows, separators=(",", ":")).encode("utf-8"))
    finally:
        os._exit(0)


def _locked_outputs(project_file: Path, lock_path: Path) -> list[str]:
    """The outputs the lock names, under the output folder the project file sets. Read here
    as plain YAML: were it to differ from what the full loader makes of it, the parent would
    find no row for its paths and hash them itself."""
    import yaml

    from imgbuild.store import lockfile

    settings = yaml.load(project_file.read_bytes(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    folder = settings.get("output_dir", "generated") if isinstance(settings, dict) else None
    if not isinstance(folder, str):
        return []
    base = str(project_file.parent / folder)
    return [os.path.join(base, o) for o in lockfile.read(lock_path).outputs]


def _hash(paths: list[str]) -> dict[str, list[Any]]:
    from imgbuild.plan.caches import stamp_of
    from imgbuild.store.atomic import sha256_files

    stamps = {}
    for path in paths:  # stamped before reading: a file changed meanwhile is not vouched for
        try:
            st = os.stat(path)
        except OSError:
            continue
        stamps[path] = stamp_of(st)
    # one thread: the parent has the other core
    digests = sha256_files(list(stamps), threads=1)
    return {path: [*stamp, digest] for (path, stamp), digest in zip(stamps.items(), digests) if digest is not None}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
