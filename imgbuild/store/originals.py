"""The local store of every paid original: content-addressed blobs plus one record per
generation key, in a diskcache directory shared by all projects on the machine.

Nothing is ever evicted by size: an original cost money. Blobs are written before the record
that names them, so a record always points at complete blobs; blobs are verified on read, and
one whose bytes no longer match its digest is removed when it is found (the target is then
generated again instead of failing forever).

Nothing read from the cache is ever unpickled. diskcache keeps a *mode* per row and its stock
`Disk` unpickles every row whose mode says pickle, whatever the caller configured, so a cache
written by someone else (say, committed to a repository a CI job builds) could run code. Here
a `Disk` subclass returns pickled rows as inert bytes, refuses pickled keys, and reads value
files only by the names diskcache itself makes, inside the cache folder. Records are stored as
JSON, originals as raw bytes checked against their sha256, and anything that does not parse is
a miss. Records from imgbuild 0.x (pickled plain data) are read as data by `pickledata`.

Candidates that were not picked (and rejected or replaced ones, and replaced picks) get a *hold*
row, `hold:KEY` -> JSON {since, target, reason, project}: local to this cache, never in the
committed lock (which stays free of timestamps), read by `cache prune` to keep them a while.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from imgbuild.errors import ImgbuildError
from imgbuild.store import cacheusers, pickledata

CACHE_ENV = "IMGBUILD_CACHE_DIR"
PRUNE_GRACE = 3600.0  # seconds: prune never deletes anything stored more recently
MAX_BLOB_BYTES = 256 * 2**20  # an original is at most 64 MiB; larger value files are not ours
MAX_IMAGES = 16
_DIGEST = re.compile(r"[0-9a-f]{64}")
# ab/<28 hex>.val as imgbuild names them; ab/cd/<28 hex>.val as diskcache does (older caches)
_VALUE_FILE = re.compile(r"[0-9a-f]{2}[/\\](?:[0-9a-f]{2}[/\\])?[0-9a-f]{28}\.val")
_TEXT_FIELDS = ("provider", "request_id", "task_id", "actual_prompt")
_HOLD_FIELDS = ("target", "reason", "project")


class CacheError(ImgbuildError):
    """The cache cannot be opened or read (damaged database, not a folder, no permission)."""


class CacheWriteError(CacheError):
    """An original could not be stored (disk full, read-only folder): the build still writes
    the output and records it in the lock, but must stop paying for more."""


def default_dir(project_cache_dir: Path | None = None) -> Path:
    """$IMGBUILD_CACHE_DIR > the project's `cache_dir` > $XDG_CACHE_HOME/imgbuild > ~/.cache/imgbuild."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if project_cache_dir is not None:
        return project_cache_dir
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "imgbuild"


def for_project(root: Path, configured: str | None, *, register: bool = True) -> Cache:
    """The cache a project uses. A project file's `cache_dir` inside the repository is not
    trusted: whoever can commit can put a cache there (see `Cache.trusted`)."""
    if os.environ.get(CACHE_ENV) or not configured:
        return Cache(default_dir(), register=register)
    directory = root / configured
    from imgbuild.spec.project import is_within, repository_root

    inside = is_within(directory, repository_root(root))
    return Cache(directory, register=register, trusted=not inside,
                 notice=(f"cache_dir '{configured}' is inside the repository: anything committed "
                         "there is used only to restore images the lock records with the same "
                         f"hash (set {CACHE_ENV} to a folder outside it to use it fully)")
                 if inside else None)


_T = TypeVar("_T")


def _reading(fn: Callable[..., _T]) -> Callable[..., _T]:
    """sqlite errors while reading become one clear CacheError (exit 1), never a traceback."""

    @functools.wraps(fn)
    def wrapper(self: Cache, *args: Any, **kwargs: Any) -> _T:
        import sqlite3

        try:
            return fn(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            raise self._broken(e) from None

    return wrapper


class Cache:
    def __init__(self, directory: Path, *, trusted: bool = True, notice: str | None = None,
                 register: bool = False) -> None:
        self.directory = directory
        # An untrusted cache (a project's cache_dir inside its repository) only restores
        # outputs whose lock entry has the same key, and only if the bytes written reproduce
        # the lock's hash: it can never supply an image the lock does not already vouch for.
        self.trusted = trusted
        self.notice = notice
        self.evicted: dict[str, str] = {}  # generation key -> why its entry was removed
        self._register = register
        self._registration: cacheusers.Registration | None = None
        self._opened: Any = None
        self._lock = threading.Lock()

    # --- opening (lazily: a no-op build never touches the cache) ------------------------

    @property
    def _store(self) -> Any:
        if self._opened is None:
            with self._lock:
                if self._opened is None:
                    self._opened = self._open()
        return self._opened

    def _open(self) -> Any:
        import sqlite3

        import diskcache

        if self.directory.exists() and not self.directory.is_dir():
            raise CacheError(f"the image cache {self.directory} is a file, not a folder; move it "
                             f"away or point {CACHE_ENV} elsewhere")
        try:
            store = diskcache.Cache(
                str(self.directory), disk=_safe_disk(),
                eviction_policy="none",  # originals are paid for: never drop them silently
                size_limit=2**62, cull_limit=0, statistics=False, tag_index=False,
                # settings a cache database holds are applied by diskcache: give every one
                disk_min_file_size=2**15, disk_pickle_protocol=4,
                # No memory map of the database and a small page cache: drafts live in their
                # rows, so the database grows with the project, and diskcache's defaults (a
                # 64 MB map, a 32 MB page cache) filled up with it during a large first build.
                # Lookups are by key, one row at a time.
                sqlite_mmap_size=0, sqlite_cache_size=2**10,
            )
        except OSError as e:
            raise CacheError(f"cannot open the image cache at {self.directory}: {e.strerror or e}") from None
        except sqlite3.DatabaseError as e:
            raise self._broken(e) from None
        if self._register:
            self._registration = cacheusers.register(self.directory)
        return store

    def _broken(self, error: Exception) -> CacheError:
        text = str(error)
        if "readonly" in text or "unable to open" in text:
            why = "it is read-only or cannot be opened"
        elif "full" in text or "I/O error" in text:
            why = f"it cannot be written ({text}: is its disk full?)"
        else:
            why = f"its database is damaged ({text})"
        return CacheError(f"cannot use the image cache at {self.directory}: {why}. Move the folder "
                          f"away (or set {CACHE_ENV} to another one) and build again; images "
                          "already written and recorded in the lock are not affected")

    def close(self) -> None:
        import sqlite3

        if self._opened is not None:
            try:
                self._opened.close()
            except sqlite3.DatabaseError:
                pass  # a full disk may refuse the final checkpoint; the log keeps the rows
        if self._registration is not None:
            self._registration.close()
            self._registration = None

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- records and blobs --------------------------------------------------------------

    def _record(self, key: str) -> dict[str, Any] | None:
        return parse_record(self._store.get(f"gen:{key}"))

    def _blob(self, digest: str) -> bytes | None:
        data = self._store.get(f"blob:{digest}")
        return data if type(data) is bytes else None

    @_reading
    def complete(self, key: str, n: int) -> bool:
        """True when all `n` images of `key` are stored intact (a partial result does not
        count); a damaged one is removed on the way, and `evicted` says so."""
        record = self._record(key)
        if record is None or len(record["images"]) < n:
            return False
        return all(self._intact(key, d) is not None for d in record["images"])

    def _intact(self, key: str, digest: str) -> bytes | None:
        data = self._blob(digest)
        if data is not None and hashlib.sha256(data).hexdigest() != digest:
            self._evict(key, digest)
            return None
        return data

    def _evict(self, key: str, digest: str) -> None:
        self.evicted[key] = "damaged"
        try:
            self._store.delete(f"gen:{key}")
            self._store.delete(f"blob:{digest}")
        except Exception:  # noqa: BLE001 - a read-only cache keeps it; it is a miss either way
            pass

    def put(self, key: str, images: list[bytes], meta: dict[str, Any],
            digests_known: list[str] | None = None) -> list[str]:
        """Store `images` under `key`. `digests_known`: their sha256, when the caller has just
        verified them (a restore from the remote), so that they are not hashed twice. A cache
        that cannot take them raises CacheWriteError (the caller keeps the output anyway)."""
        import sqlite3

        digests = digests_known or [hashlib.sha256(data).hexdigest() for data in images]
        record = {**meta, "images": digests, "stored_at": time.time()}
        try:
            store = self._store
            for digest, data in zip(digests, images):
                stored = self._blob(digest)
                if stored is None or hashlib.sha256(stored).hexdigest() != digest:
                    store.set(f"blob:{digest}", data)
            store.set(f"gen:{key}", json.dumps(record, sort_keys=True).encode("utf-8"))
        except (sqlite3.DatabaseError, OSError) as e:
            raise CacheWriteError(_write_failure(self.directory, e)) from None
        except CacheError as e:
            raise CacheWriteError(str(e)) from None
        return digests

    @_reading
    def get(self, key: str) -> tuple[list[bytes], dict[str, Any]] | None:
        """The images and metadata of `key`, or None if absent or damaged (damage evicts)."""
        record = self._record(key)
        if record is None:
            return None
        images = []
        for digest in record["images"]:
            data = self._intact(key, digest)
            if data is None:
                return None  # never copied into outputs
            images.append(data)
        return images, record

    @_reading
    def digests(self, key: str) -> list[str]:
        """sha256 of each original stored for `key` (empty when absent), without reading them."""
        record = self._record(key)
        return list(record["images"]) if record is not None else []

    @_reading
    def keys(self) -> list[str]:
        return sorted(k[4:] for k in self._store.iterkeys() if type(k) is str and k.startswith("gen:"))

    # --- maintenance (`imgbuild cache info | verify | prune`) ------------------------------------

    @_reading
    def entries(self) -> dict[str, list[str]]:
        """Every readable generation record with the blob digests it names."""
        found = {}
        for key in self.keys():
            record = self._record(key)
            if record is not None:
                found[key] = list(record["images"])
        return found

    @_reading
    def unreadable(self) -> list[str]:
        """Keys of records that are not a valid record (garbage, or a pickle: never run)."""
        return [key for key in self.keys() if self._record(key) is None]

    @_reading
    def blobs(self) -> list[str]:
        return sorted(k[5:] for k in self._store.iterkeys()
                      if type(k) is str and k.startswith("blob:") and _DIGEST.fullmatch(k[5:]))

    @_reading
    def volume(self) -> int:
        """Bytes the cache takes on disk (database plus value files), as diskcache estimates it."""
        return int(self._store.volume())

    @_reading
    def verify(self) -> dict[str, str]:
        """Re-hash every blob: {digest: 'damaged' | 'unreadable'} for each one that fails, plus
        {'gen:KEY': 'incomplete' | 'unreadable'} for records naming a blob that is not stored
        or that cannot be read as a record."""
        bad: dict[str, str] = {}
        for digest in self.blobs():
            data = self._blob(digest)
            if data is None:
                bad[digest] = "unreadable"
            elif hashlib.sha256(data).hexdigest() != digest:
                bad[digest] = "damaged"
        stored = set(self.blobs())
        for key, digests in self.entries().items():
            if any(d not in stored for d in digests):
                bad[f"gen:{key}"] = "incomplete"
        for key in self.unreadable():
            bad[f"gen:{key}"] = "unreadable"
        return bad

    def repair(self, bad: dict[str, str]) -> tuple[list[str], list[str]]:
        """Remove what `verify` found, plus every record naming a removed blob: (keys, blobs)."""
        blobs = sorted(b for b in bad if not b.startswith("gen:"))
        keys = {k[4:] for k in bad if k.startswith("gen:")}
        gone = set(blobs)
        keys.update(k for k, digests in self.entries().items() if gone.intersection(digests))
        self.delete(sorted(keys), blobs)
        return sorted(keys), blobs

    @_reading
    def stored_at(self) -> dict[str, float]:
        """When each row (`gen:KEY`, `blob:DIGEST`) was last written, as diskcache recorded it."""
        rows = self._store._sql("SELECT key, store_time FROM Cache WHERE raw = 1").fetchall()
        return {k: float(t or 0) for k, t in rows if type(k) is str}

    def unreferenced(self, keep: set[str], before: float | None = None) -> tuple[list[str], list[str]]:
        """(generation keys not in `keep`, blobs no kept record names): what a prune removes.
        With `before`, nothing stored at or after that time is listed (a running build's)."""
        entries = self.entries()
        written = self.stored_at() if before is not None else {}

        def old(row: str) -> bool:
            return before is None or written.get(row, float("inf")) < before

        drop = sorted(k for k in (*entries, *self.unreadable()) if k not in keep and old(f"gen:{k}"))
        kept = keep | {k for k in entries if not old(f"gen:{k}")}
        used = {d for k, digests in entries.items() if k in kept for d in digests}
        return drop, [d for d in self.blobs() if d not in used and old(f"blob:{d}")]

    @_reading
    def delete(self, keys: list[str], blobs: list[str]) -> None:
        """Records first, then blobs, so a record never names a deleted blob (and a record's
        hold goes with it)."""
        for key in keys:
            self._store.delete(f"gen:{key}")
            self._store.delete(f"hold:{key}")
        for digest in blobs:
            self._store.delete(f"blob:{digest}")

    # --- candidates not picked (`imgbuild accept | reject`; `cache prune` keeps them a while) ---

    def hold(self, notes: dict[str, dict[str, str]], since: float | None = None) -> None:
        """Record that each generation key in `notes` stopped being wanted at `since` (default:
        now) and why (`target`, `reason`, `project`): a candidate not picked, rejected, or a pick
        replaced. `cache prune` keeps such an entry for a retention period after that time even
        when no lockfile references it. Without `since`, an earlier hold is moved forward, never
        back. A cache that cannot take it raises CacheWriteError."""
        import sqlite3

        now = time.time() if since is None else since
        try:
            for key, note in notes.items():
                old = self._hold(key) if since is None else None
                at = max(now, old["since"]) if old else now
                row = {**{f: str(note[f])[:1000] for f in _HOLD_FIELDS if note.get(f)}, "since": at}
                self._store.set(f"hold:{key}", json.dumps(row, sort_keys=True).encode("utf-8"))
        except (sqlite3.DatabaseError, OSError) as e:
            raise CacheWriteError(_write_failure(self.directory, e)) from None
        except CacheError as e:
            raise CacheWriteError(str(e)) from None

    def _hold(self, key: str) -> dict[str, Any] | None:
        return parse_hold(self._store.get(f"hold:{key}"))

    @_reading
    def holds(self) -> dict[str, dict[str, Any]]:
        """{generation key: its hold} for every readable hold (one that does not parse is none)."""
        found = {}
        for row in list(self._store.iterkeys()):
            if type(row) is str and row.startswith("hold:"):
                hold = self._hold(row[5:])
                if hold is not None:
                    found[row[5:]] = hold
        return found

    @_reading
    def release(self, keys: list[str]) -> None:
        """Forget the holds of `keys` (picked after all, or their entry is gone)."""
        for key in keys:
            self._store.delete(f"hold:{key}")


def _write_failure(directory: Path, error: Exception) -> str:
    import errno

    text = str(error)
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or "full" in text:
        return f"the disk holding the image cache ({directory}) is full"
    if getattr(error, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text:
        return f"the image cache ({directory}) is read-only"
    return f"cannot store in the image cache ({directory}): {text}"


def parse_hold(value: Any) -> dict[str, Any] | None:
    """A hold as data ({'since': epoch seconds, 'target', 'reason', 'project'}), or None."""
    if type(value) is not bytes:
        return None  # a pickle (never loaded) or anything else
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    since = doc.get("since") if isinstance(doc, dict) else None
    if type(since) not in (int, float) or not 0 <= since < 1e11:  # NaN and inf fail too
        return None
    hold: dict[str, Any] = {"since": float(since)}
    for name in _HOLD_FIELDS:
        if isinstance(doc.get(name), str) and len(doc[name]) <= 1000:
            hold[name] = doc[name]
    return hold


def parse_record(value: Any) -> dict[str, Any] | None:
    """A generation record as data, or None when it is not one (anything odd is a miss)."""
    if isinstance(value, _Pickled):
        try:
            doc = pickledata.loads(value.data)
        except pickledata.NotData:
            return None
    elif type(value) is bytes:
        try:
            doc = json.loads(value)
        except ValueError:
            return None
    else:
        return None
    if not isinstance(doc, dict):
        return None
    images = doc.get("images")
    if (not isinstance(images, list) or not 1 <= len(images) <= MAX_IMAGES
            or not all(isinstance(d, str) and _DIGEST.fullmatch(d) for d in images)):
        return None
    record: dict[str, Any] = {"images": images}
    for name in _TEXT_FIELDS:
        if isinstance(doc.get(name), str) and len(doc[name]) <= 10_000:
            record[name] = doc[name]
    if isinstance(doc.get("request"), dict):
        record["request"] = doc["request"]
    slots = doc.get("slots")
    if (isinstance(slots, list) and len(slots) == len(images)
            and all(type(s) is int and 1 <= s <= MAX_IMAGES for s in slots)):
        record["slots"] = slots
    return record


class _Pickled:
    """A pickled row's bytes, returned instead of being unpickled."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Refused(OSError):
    """A row imgbuild will not read; diskcache turns an OSError from `fetch` into a miss."""


def _value_file(directory: str) -> tuple[str, str]:
    """(name, path) of a new value file: one level of folders, not diskcache's two. In a fresh
    cache nearly every original made two new folders, about a quarter of the cost of storing it
    (256 folders of a few hundred files each are no burden to any file system in use)."""
    hex_name = os.urandom(15).hex()
    name = os.path.join(hex_name[:2], hex_name[2:] + ".val")
    return name, os.path.join(directory, name)


def _write_new(path: str, data: bytes) -> None:
    """Create `path` with `data`; its folder is made only when missing (diskcache tries to make
    it before every file)."""
    try:
        out = open(path, "xb")
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        out = open(path, "xb")
    try:
        with out:
            out.write(data)
    except BaseException:  # a full disk, an interrupt: no half-written file nobody names
        try:
            os.remove(path)
        except OSError:
            pass  # the write's own error is the one to report
        raise


def _value_path(root: str, filename: str | None) -> str:
    """The path of a value file a row names: only names imgbuild or diskcache make, and only
    inside the cache's folder (a row is data anyone could have written)."""
    if not isinstance(filename, str) or not _VALUE_FILE.fullmatch(filename):
        raise _Refused("not a value file name")
    path = os.path.join(root, filename)
    if os.path.dirname(os.path.realpath(path)) != os.path.join(root, os.path.dirname(filename)):
        raise _Refused("value file outside the cache")
    return path


@functools.lru_cache(maxsize=1)
def _safe_disk() -> type:
    import diskcache
    from diskcache.core import MODE_BINARY, MODE_PICKLE, MODE_RAW, UNKNOWN

    class SafeDisk(diskcache.Disk):  # type: ignore[misc]
        def __init__(self, directory: str, min_file_size: int = 0, pickle_protocol: int = 0,
                     **_settings: Any) -> None:  # unknown disk_* settings from a database: ignored
            super().__init__(directory, min_file_size=2**15, pickle_protocol=4)
            self._root = os.path.realpath(directory)

        def put(self, key: Any) -> Any:
            if type(key) is not str:
                raise TypeError("imgbuild cache keys are strings")
            return super().put(key)

        def get(self, key: Any, raw: bool) -> Any:
            # A non-raw key is a pickle: never loaded, never equal to any key of ours.
            return super().get(key, raw) if raw else _Pickled(bytes(key))

        def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> Any:
            if not (type(value) is bytes or (read and hasattr(value, "read"))):
                raise TypeError("imgbuild cache values are bytes")
            if type(value) is bytes and len(value) >= self.min_file_size:
                # In one write: diskcache's own path copies the value into a BytesIO and
                # writes it line by line (thousands of writes per original).
                filename, full_path = self.filename(key, value)
                _write_new(full_path, value)
                return len(value), MODE_BINARY, filename, None
            return super().store(value, read, key)

        def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
            if mode == MODE_RAW:  # small values live in the database row itself
                return bytes(value) if isinstance(value, (bytes, memoryview)) else value
            if mode not in (MODE_BINARY, MODE_PICKLE):
                raise _Refused("a row imgbuild does not write")
            data = self._read(filename) if value is None else bytes(value)
            return _Pickled(data) if mode == MODE_PICKLE else data

        def _read(self, filename: str | None) -> bytes:
            path = _value_path(self._root, filename)
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
            with open(os.open(path, flags), "rb") as f:
                data = f.read(MAX_BLOB_BYTES + 1)
            if len(data) > MAX_BLOB_BYTES:
                raise _Refused("value file too large")
            return data

        def filename(self, key: Any = UNKNOWN, value: Any = UNKNOWN) -> tuple[str, str]:
            return _value_file(self._directory)

        def remove(self, file_path: str) -> None:
            try:
                _value_path(self._root, file_path)
            except _Refused:
                return  # never delete outside the cache, whatever a row says
            super().remove(file_path)

    return SafeDisk
