"""Who is using a cache of originals right now, and the cache's own maintenance lock.

A build writes its paid originals to the cache as they arrive, but names them in its project's
lockfile only when it ends, so until then `cache prune` cannot tell them from garbage. Every
process that opens a cache for a build therefore registers in `.imgbuild-users/`: a small file
holding its start time, kept under an exclusive OS lock for as long as the process uses the
cache (the OS drops the lock when the process dies, even on SIGKILL, so a crash never leaves a
live-looking registration). `prune` deletes nothing stored after the oldest live registration
began, nor anything younger than a grace period, which also covers users we cannot see (an
older imgbuild, another machine sharing the folder).

`maintenance()` is the cache's own lock: prunes and repairs take it so that two of them never
interleave their deletions.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

USERS_DIR = ".imgbuild-users"
MAINTENANCE_LOCK = ".imgbuild-maintenance.lock"
_TMP = "tmp-"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: registrations count as live while present
    fcntl = None  # type: ignore[assignment]


class Registration:
    """This process's entry in the users folder; `close()` removes it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def close(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def register(directory: Path) -> Registration | None:
    """Announce a build using the cache in `directory`; None when the folder is not writable
    (such a build cannot store anything either, so there is nothing for prune to spare)."""
    folder = directory / USERS_DIR
    name = f"{os.getpid()}-{secrets.token_hex(6)}"
    tmp, final = folder / (_TMP + name), folder / name
    try:
        folder.mkdir(exist_ok=True)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode())
        # Locked before it gets the name prune reads, so prune never sees it unlocked.
        os.replace(tmp, final)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    return Registration(final, fd)


def oldest_running(directory: Path) -> float | None:
    """Start time of the oldest live registered user; removes registrations of dead ones."""
    folder = directory / USERS_DIR
    try:
        entries = [e for e in os.scandir(folder) if not e.name.startswith(_TMP) and e.is_file()]
    except OSError:
        return None
    oldest: float | None = None
    for entry in entries:
        since = _live_since(Path(entry.path))
        if since is not None and (oldest is None or since < oldest):
            oldest = since
    return oldest


def _live_since(path: Path) -> float | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: its owner is alive
            else:  # nobody holds it: the owner died without cleaning up
                with contextlib.suppress(OSError):
                    path.unlink()
                return None
        try:
            since = json.loads(os.read(fd, 4096))["since"]
        except (ValueError, KeyError, TypeError, OSError):
            return 0.0  # alive but unreadable: protect everything
        return float(since) if isinstance(since, (int, float)) else 0.0
    finally:
        os.close(fd)


@contextlib.contextmanager
def maintenance(directory: Path, on_wait: Callable[[str], None] = lambda text: None) -> Iterator[None]:
    """Hold the cache's maintenance lock, waiting (and saying so) while another prune or
    repair of the same cache holds it."""
    fd = os.open(directory / MAINTENANCE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                on_wait(f"waiting for another prune or repair of the cache at {directory}…")
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
