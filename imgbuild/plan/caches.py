"""Local, disposable caches that make a no-op run fast (in `.imgbuild/`, never committed):

* the *plan cache*: the expanded targets, valid while every file that shaped them (project
  file, included specs, matrix data, prompt partials) has the same content and the include
  globs match the same files. A no-op `check` then skips YAML parsing, schema validation and
  10k template renders.
* the *stat cache*: sha256 of each output, valid while its size, mtime and inode are unchanged
  (as git's index does), so unchanged images are not re-read.

Both are plain JSON (never pickle: a cloned repository must not be able to run code through
them) and are rebuilt silently when missing, stale or damaged.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from imgbuild._version import __version__
from imgbuild.store import gcpause
from imgbuild.store.atomic import atomic_write_chunks, sha256_file, sha256_files
from imgbuild.store.parked import Spill
from imgbuild.spec.types import Target

PLAN_FILE = "plan-cache.json"
STAT_FILE = "stat-cache.json"
_SLICE = 1000  # targets encoded at a time into the plan cache
_FORMAT = f"4/{__version__}/{sys.version_info[0]}.{sys.version_info[1]}"
_STAT_FORMAT = f"3/{__version__}"  # entries: [size, mtime_ns, inode, ctime_ns, sha256]


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _globs(root: Path, settings: dict[str, Any]) -> list[str]:
    from imgbuild.spec.project import include_matches

    return include_matches(root, settings)


def load_plan(project_file: Path, state_dir: Path) -> tuple[dict[str, Any], list[Target], dict[str, str]] | None:
    """(settings, targets, the files they were made from with their sha256) from the plan
    cache, or None when anything it depends on changed."""
    try:
        with gcpause.paused():
            return _load_plan(project_file, state_dir)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None  # missing or damaged (valid JSON of another shape too): rebuild it


def _load_plan(project_file: Path, state_dir: Path) -> tuple[dict[str, Any], list[Target], dict[str, str]] | None:
    doc = json.loads((state_dir / PLAN_FILE).read_bytes())
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), dict):
        return None
    if doc.get("format") != _FORMAT or doc.get("project") != str(project_file):
        return None
    for name, digest in doc["inputs"].items():
        if _digest(Path(name)) != digest:
            return None
    settings = doc["settings"]
    if _globs(project_file.parent, settings) != doc["globs"]:
        return None
    # target files are stored relative to the project and shown relative to the working
    # directory, as loading the specs shows them: `check -C dir` from anywhere reuses one cache
    root = project_file.parent
    shown: dict[str, str] = {}
    targets = [Target.from_row(t, _shown(shown, root, t[3])) for t in doc["targets"]]
    if not _plausible(project_file, settings, targets):
        return None
    return settings, targets, doc["inputs"]


def _shown(memo: dict[str, str], root: Path, stored: str) -> str:
    text = memo.get(stored)
    if text is None:
        from imgbuild.spec.project import display_path

        text = memo[stored] = display_path(root / stored)
    return text


def _stored(memo: dict[str, str], root: Path, shown: str) -> str:
    text = memo.get(shown)
    if text is None:
        text = memo[shown] = os.path.relpath(os.path.abspath(shown), root)
    return text


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]|^/|^\.\.(/|$)|/\.\.(/|$)")


def _plausible(project_file: Path, settings: Any, targets: list[Target]) -> bool:
    """A plan cache is local state, but a repository can commit one: never let it carry
    folders or paths that loading the specs would have refused."""
    from imgbuild.spec.project import Project, folder_problem

    if not isinstance(settings, dict):
        return False
    project = Project(file=project_file, root=project_file.parent, settings=settings, files=[])
    for name, default in (("output_dir", "generated"), ("templates_dir", "templates")):
        value = settings.get(name, default)
        if not isinstance(value, str) or folder_problem(project, name, value):
            return False
    return not any(_CONTROL.search(t.name) or any(_UNSAFE.search(o) for o in (
        *t.outputs, *(v.output for v in t.variants))) for t in targets)


def save_plan(project_file: Path, state_dir: Path, settings: dict[str, Any],
              read_files: dict[str, str], targets: list[Target]) -> None:
    """Keyed on what expansion actually read: each file by the path it was read through (not
    its resolved target, so a repointed link is a change) and the sha256 of the bytes read
    (so an edit made while we worked is a change too)."""
    inputs = dict(sorted(read_files.items()))
    root, memo = project_file.parent, {}
    head = {"format": _FORMAT, "project": str(project_file), "inputs": inputs,
            "globs": _globs(project_file.parent, settings), "settings": settings}
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def chunks() -> Iterator[bytes]:
        # In slices of targets: the whole document as one string (and its bytes) was the peak
        # of a 50k-target build's memory.
        yield (encode(head)[:-1] + ',"targets":[').encode("utf-8")
        todo, start = iter(targets), 0  # a build's targets may be a spool (store/spool.py): no slicing
        while rows := [t.to_row(_stored(memo, root, t.file)) for t in islice(todo, _SLICE)]:
            yield (("," if start else "") + encode(rows)[1:-1]).encode("utf-8")
            start += len(rows)
        yield b"]}"

    try:
        with gcpause.paused():
            atomic_write_chunks(state_dir / PLAN_FILE, chunks(), durable=False)
    except OSError:
        pass  # a read-only checkout still works, just without the speed-up


def plan_inputs(project_file: Path, state_dir: Path) -> tuple[dict[Path, str], dict[str, Any]] | None:
    """The files (with the sha256 of the content it read) and the settings the last plan was
    made from, whether or not they changed since: what `imgbuild watch` watches. None without
    a readable plan cache of this project."""
    try:
        doc = json.loads((state_dir / PLAN_FILE).read_bytes())
        if doc.get("format") != _FORMAT or doc.get("project") != str(project_file):
            return None
        return {Path(name): str(digest) for name, digest in doc["inputs"].items()}, dict(doc["settings"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def stamp_of(st: os.stat_result) -> list[int]:
    """A file's stamp as the stat cache keys it. ctime too: os.utime can put an edited file's
    mtime back, but not its ctime."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


class StatCache:
    """sha256 of output files keyed by (size, mtime_ns, inode, ctime_ns)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STAT_FILE
        # path -> [size, mtime_ns, inode, ctime_ns, sha256] as read from the file, or the same
        # packed into 64 bytes (what this run stamped: ~100 instead of ~250 bytes per output)
        self.entries: dict[str, list[Any] | bytes] = {}
        try:
            with gcpause.paused():
                doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and doc.get("format") == _STAT_FORMAT and isinstance(doc.get("entries"), dict):
            self.entries = doc["entries"]  # each entry is checked when used
        self.dirty = False
        # paths whose entry `prefetch` found true a moment ago: not stat'ed again in this run
        self._checked: set[str] = set()
        # What `remember` stamped waits on disk until a lookup or `save` wants it: a first
        # build of 50k images held ~220 bytes per image here (path, packed stamp, slot) for
        # a file it reads only at the end. Each record: path length, path, packed stamp.
        self._folder = state_dir
        self._written = Spill(state_dir)

    def entry(self, path: str) -> list[Any] | None:
        """[size, mtime_ns, inode, ctime_ns, sha256] of `path`, or None."""
        found = self.entries.get(path)
        if found is None and self._written.end:
            self._fold()
            found = self.entries.get(path)
        return _unpacked(found)

    def _fold(self) -> None:
        """Bring what `remember` stamped into `entries` (a later record of a path wins)."""
        self.entries.update(self._written_records())
        self._written = Spill(self._folder)

    def _written_records(self) -> Iterator[tuple[str, bytes]]:
        """(path, packed stamp) as `remember` spilled them, in order, read a block at a time."""
        spill, offset = self._written, 0
        while offset < spill.end:
            data = spill.read(offset, min(_SPILL_READ, spill.end - offset))
            pos = 0
            while pos + _NAME_LEN.size <= len(data):
                (n,) = _NAME_LEN.unpack_from(data, pos)
                end = pos + _NAME_LEN.size + n + _PACKED.size
                if end > len(data):
                    break  # the record goes on in the next block
                yield os.fsdecode(data[pos + _NAME_LEN.size:end - _PACKED.size]), data[end - _PACKED.size:end]
                pos = end
            if pos == 0:  # the file is ours alone and holds whole records: a bug, not a user's mistake
                raise OSError(f"stat cache spill: no whole record at {offset} of {spill.end}")
            offset += pos

    def sha256(self, path: str | Path) -> str | None:
        if path in self._checked:
            return self.entry(path)[4]  # type: ignore[index,arg-type]
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = str(path)
        stamp = stamp_of(st)
        known = self.entry(key)
        if known is not None and known[:4] == stamp:
            return known[4]
        digest = sha256_file(path)
        if digest is not None:
            self.entries[key] = _packed(stamp, digest)
            self.dirty = True
        return digest

    def prefetch(self, paths: list[str], hashed: dict[str, list[Any]] | None = None) -> None:
        """Hash, two files at a time, every file of `paths` whose stamp the cache does not
        know (a fresh clone: all of them), so that sha256() then answers from memory.
        `hashed`: rows another process made (plan.hashahead), used where the stamp still holds."""
        todo: list[tuple[str, list[int]]] = []
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp = stamp_of(st)
            known = self.entry(path)
            if known is not None and known[:4] == stamp:
                self._checked.add(path)
                continue
            known = hashed.get(path) if hashed else None
            if isinstance(known, list) and len(known) == 5 and known[:4] == stamp and isinstance(known[4], str):
                self.entries[path] = known
                self._checked.add(path)
                self.dirty = True
            else:
                todo.append((path, stamp))
        if not todo:
            return
        for (path, stamp), digest in zip(todo, sha256_files([p for p, _ in todo])):
            if digest is not None:  # stamped before reading: a file changed meanwhile is read again next time
                self.entries[path] = _packed(stamp, digest)
                self._checked.add(path)
                self.dirty = True

    def remember(self, path: str | Path, digest: str) -> None:
        """Record a file we just wrote, so the next run need not read it back."""
        key = str(path)
        self._checked.discard(key)
        try:
            st = os.stat(key)
        except OSError:
            return
        self.dirty = True
        packed = _packed(stamp_of(st), digest)
        if isinstance(packed, bytes):
            name = os.fsencode(key)
            if len(name) < 1 << 16 and self._written.append(_NAME_LEN.pack(len(name)) + name + packed) is not None:
                self.entries.pop(key, None)  # one place for a path: the spill is read after entries
                return
        if self._written.end:
            self._fold()  # an older record of this path must not come after this one
        self.entries[key] = packed

    def save(self) -> None:
        if not self.dirty:
            return
        encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        items = iter(self.entries.items())

        def chunks() -> Iterator[bytes]:
            # in slices, as save_plan: one string of the whole document (and its bytes) held
            # ~0.3 KB per output at the end of a large first build
            yield ('{"format":' + encode(_STAT_FORMAT) + ',"entries":{').encode("utf-8")
            sep = ""
            while part := dict(islice(items, _SLICE)):
                rows = {k: _unpacked(v) if isinstance(v, bytes) else v for k, v in part.items()}
                yield (sep + encode(rows)[1:-1]).encode("utf-8")
                sep = ","
            # after entries, as `_fold` would put them; a path remembered twice is written
            # twice, and json keeps the last (documented), as `_fold` does
            records = self._written_records()
            while part := list(islice(records, _SLICE)):
                yield (sep + encode({k: _unpacked(v) for k, v in part})[1:-1]).encode("utf-8")
                sep = ","
            yield b"}}"

        try:  # disposable state, not fsynced: a file a crash cut short does not parse, and is made again
            with gcpause.paused():
                atomic_write_chunks(self.path, chunks(), durable=False)
        except OSError:
            pass  # a read-only checkout still works, just without the speed-up
        self.dirty = False


_PACKED = struct.Struct("<QqQq32s")  # size, mtime_ns, inode, ctime_ns, sha256
_NAME_LEN = struct.Struct("<H")  # a spilled record's path length
_SPILL_READ = 1 << 18  # bytes of spilled records read at a time


def _packed(stamp: list[int], digest: str) -> bytes | list[Any]:
    if len(digest) == 64:
        try:
            return _PACKED.pack(*stamp, bytes.fromhex(digest))
        except (struct.error, ValueError):
            pass
    return [*stamp, digest]  # anything out of the packed range is kept as it is


def _unpacked(value: Any) -> list[Any] | None:
    if isinstance(value, bytes) and len(value) == _PACKED.size:
        *stamp, digest = _PACKED.unpack(value)
        return [*stamp, digest.hex()]
    if isinstance(value, list) and len(value) == 5 and isinstance(value[4], str):
        return value
    return None
