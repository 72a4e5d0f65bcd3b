"""One build at a time per project: an OS advisory lock on `.imgbuild/build.lock`.

Two builds of one project would plan against the same lockfile, pay for the same images and
race on the same outputs. `build` and `clean --yes` hold this lock for their whole run; a
second one waits for it (saying for whom) or, with --no-wait, refuses at once. `plan`,
`check` and `validate` only read, and never take it.

POSIX uses fcntl.flock and Windows msvcrt.locking: both are released by the OS when the
process dies, even on SIGKILL, so a crash never leaves a stale lock. Where neither exists, an
O_EXCL lock file is used, and one whose owner pid is gone is taken over.
"""
from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from imgbuild.errors import ImgbuildError

LOCK_NAME = "build.lock"


class Busy(ImgbuildError):
    """Another imgbuild build holds the project lock (exit 1)."""


def _owner(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"


def _write_pid(fd: int) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())


def _state_dir_ready(state_dir: Path) -> bool:
    """Create `state_dir`; False when the checkout is read-only (then nothing can be written,
    so there is nothing for a lock to serialise: a no-op build still succeeds there)."""
    if state_dir.exists() and not state_dir.is_dir():
        raise ImgbuildError(f"{state_dir} is a file, not a folder: imgbuild keeps its local state "
                            f"there (build lock, task journal, caches). Move it away and run again")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return False
        raise ImgbuildError(f"cannot create {state_dir}: {e.strerror or e}") from None
    lock = state_dir / LOCK_NAME
    if lock.is_dir():
        raise ImgbuildError(f"{lock} is a folder, not a file: imgbuild uses it to run one build "
                            "at a time. Remove it and run again")
    if not os.access(state_dir, os.W_OK) and not os.access(lock, os.W_OK):
        return False
    return True


@contextlib.contextmanager
def hold(state_dir: Path, *, wait: bool = True,
         on_wait: Callable[[str], None] = lambda text: None) -> Iterator[None]:
    """Hold the project lock in `state_dir` for the `with` block."""
    if not _state_dir_ready(state_dir):
        yield  # read-only: nobody can write here, so nothing to serialise
        return
    path = state_dir / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows and exotic platforms
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        with _flock(path, fcntl, wait, on_wait):
            yield
        return
    try:  # pragma: no cover - Windows
        import msvcrt
    except ImportError:  # pragma: no cover
        msvcrt = None  # type: ignore[assignment]
    if msvcrt is not None:  # pragma: no cover
        with _msvcrt_lock(path, msvcrt, wait, on_wait):
            yield
        return
    with _exclusive_file(path, wait, on_wait):  # pragma: no cover
        yield


def _busy(path: Path) -> Busy:
    return Busy(f"another imgbuild build is running in this project (pid {_owner(path)}); "
                "wait for it, or run again without --no-wait to queue behind it")


def _waiting(path: Path) -> str:
    return f"waiting for another imgbuild build in this project (pid {_owner(path)})…"


@contextlib.contextmanager
def _flock(path: Path, fcntl: object, wait: bool, on_wait: Callable[[str], None]) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[attr-defined]
        except BlockingIOError:
            if not wait:
                raise _busy(path) from None
            on_wait(_waiting(path))
            fcntl.flock(fd, fcntl.LOCK_EX)  # type: ignore[attr-defined]
        # The pid is written for the waiting message, then the file is emptied and its mtime put
        # back: a no-op build changes no file, and site dev servers' watchers go by mtimes.
        before = os.fstat(fd)
        _write_pid(fd)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                if before.st_size == 0:
                    os.utime(fd if os.utime in os.supports_fd else path,
                             ns=(before.st_atime_ns, before.st_mtime_ns))
            fcntl.flock(fd, fcntl.LOCK_UN)  # type: ignore[attr-defined]
    finally:
        os.close(fd)


@contextlib.contextmanager
def _msvcrt_lock(path: Path, msvcrt: object, wait: bool,
                 on_wait: Callable[[str], None]) -> Iterator[None]:  # pragma: no cover - Windows
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        told = False
        while True:
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
                break
            except OSError:
                if not wait:
                    raise _busy(path) from None
                if not told:
                    on_wait(_waiting(path))
                    told = True
                time.sleep(0.2)
        try:
            yield
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
    finally:
        os.close(fd)


@contextlib.contextmanager
def _exclusive_file(path: Path, wait: bool,
                    on_wait: Callable[[str], None]) -> Iterator[None]:  # pragma: no cover
    told = False
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            owner = _owner(path)
            if owner.isdigit() and not _alive(int(owner)):
                with contextlib.suppress(OSError):
                    path.unlink()  # its owner died without cleaning up
                continue
            if not wait:
                raise _busy(path) from None
            if not told:
                on_wait(_waiting(path))
                told = True
            time.sleep(0.2)
    try:
        _write_pid(fd)
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _alive(pid: int) -> bool:  # pragma: no cover - only for the O_EXCL fallback
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


__all__ = ["LOCK_NAME", "Busy", "hold"]
