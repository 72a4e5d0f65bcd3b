"""Atomic file replacement: a temp file in the destination folder, fsync, then os.replace, so a
reader (or a crash) only ever sees the old file or the complete new one."""
from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

TEMP_PREFIX = ".imgbuild-tmp-"


def atomic_write_bytes(path: Path | str, data: bytes, *, durable: bool = True) -> str:
    """Write `data` to `path` atomically; returns the sha256 hex of what was written.
    `durable=False` skips the fsync, for files that are cheap to make again and checked before
    reuse (review thumbnails): still never half-written for a reader, but not crash-proof."""
    atomic_write_chunks(path, (data,), durable=durable)
    return hashlib.sha256(data).hexdigest()


def atomic_write_chunks(path: Path | str, chunks: Iterable[bytes], *, durable: bool = True,
                        unless: Callable[[], bool] | None = None) -> bool:
    """atomic_write_bytes for content in pieces (a large file never joined in memory).
    `unless`, asked once every chunk is written: True keeps the file as it is (the temp file is
    removed). Returns whether `path` was replaced."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            f.writelines(chunks)
            f.flush()
            keep = unless is not None and unless()
            if durable and not keep:
                os.fsync(f.fileno())
        if keep:
            os.unlink(tmp)
            return False
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return True
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _open_regular(path: str | Path) -> int | None:
    """A read descriptor of `path` if it is a regular file (through links), else None. A cloned
    repository can commit an output as a link to /dev/zero or make it a FIFO: read to its end
    (or opened, for a FIFO, without O_NONBLOCK) that never returns, and `check` would hang."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def sha256_file(path: str | Path) -> str | None:
    """sha256 of a regular file's bytes; None when it cannot be read or is not a regular file."""
    fd = _open_regular(path)
    if fd is None:
        return None
    try:
        with open(fd, "rb") as f:
            if hasattr(hashlib, "file_digest"):  # Python 3.11+
                return hashlib.file_digest(f, "sha256").hexdigest()
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def sha256_files(paths: list[str], threads: int = 2) -> list[str | None]:
    """sha256 of many files (None where one cannot be read), in `threads` threads each reusing
    one read buffer: hashing 10k images is reading them, and both the read and the hash release
    the GIL, while a new buffer per file (hashlib.file_digest) costs a third more."""
    out: list[str | None] = [None] * len(paths)

    def work(start: int) -> None:
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        for i in range(start, len(paths), threads):
            fd = _open_regular(paths[i])
            if fd is None:
                continue
            try:
                with open(fd, "rb", buffering=0) as f:
                    digest = hashlib.sha256()
                    while n := f.readinto(buffer):
                        digest.update(view[:n])
                out[i] = digest.hexdigest()
            except OSError:
                pass

    threads = max(1, threads)
    if threads == 1 or len(paths) < 64:  # not worth a thread
        for i in range(threads):
            work(i)
        return out
    import threading

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def sweep_temp_files(directories: set[Path], prefixes: tuple[str, ...] = (TEMP_PREFIX,)) -> int:
    """Remove temp files a killed build left behind (an atomic write that never reached its
    rename). Only call this while holding the project lock: then no live writer owns them."""
    removed = 0
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(prefixes) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
    return removed
