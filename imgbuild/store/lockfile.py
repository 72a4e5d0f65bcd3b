"""imgbuild.lock: what was built, keyed by output path. JSON with sorted keys and no timestamps,
so the same inputs give byte-identical bytes; replaced atomically."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

from imgbuild.errors import ImgbuildError
from imgbuild.store import gcpause
from imgbuild.store.atomic import atomic_write_bytes, atomic_write_chunks, sha256_file

LOCK_VERSION = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
SHARED_NAME = "imgbuild.lock"  # before 0.2, every project file in a folder wrote this one

# Fields a lock entry may have, with their types; `key` and `sha256` are required.
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "key": str, "sha256": str, "name": str, "provider": str, "draft": bool, "model": str,
    "size": str, "seed": int, "request": dict, "index": int, "bytes": int, "derived_from": str,
    "original": str,
}

# The provider identity of images from Alibaba Cloud's own endpoints. Anything else (the
# placeholder, an emulator or a proxy: `dashscope@HOST`) made a stand-in, not a final image.
PRODUCTION = "dashscope"


def is_final(provider: str) -> bool:
    return provider == PRODUCTION


def is_draft(entry: dict[str, Any]) -> bool:
    """A lock entry's image is a draft when it says so, or when anyone but the production
    service made it (entries written before emulator images counted as drafts say draft: false)."""
    return bool(entry.get("draft")) or ("provider" in entry and not is_final(str(entry["provider"])))


class Lock:
    def __init__(self, outputs: dict[str, dict[str, Any]] | None = None,
                 output_dir: str | None = None) -> None:
        # a dict, or the same kept on disk while a build runs (`park`)
        self.outputs: MutableMapping[str, dict[str, Any]] = outputs or {}
        # the folder (relative to the project) the outputs were written under: when the project
        # moves output_dir, the files under the old one are still imgbuild's to clean
        self.output_dir = output_dir
        # Set when this project file has no lock of its own yet and starts from the folder's
        # shared imgbuild.lock: entries no spec of this file produces belong to another file.
        self.adopted_from: Path | None = None
        # target name -> its candidates awaiting `imgbuild accept` (see plan.candidates)
        self.pending: dict[str, dict[str, Any]] = {}

    def get(self, output: str) -> dict[str, Any] | None:
        """The entry of `output`, or None, to read: one parked on disk is read back and not
        kept in memory (a change to an entry goes through `outputs`)."""
        outputs = self.outputs
        if type(outputs) is dict:  # not parked: the plan asks this 10k times on a no-op
            return outputs.get(output)
        try:
            return outputs.peek(output)  # type: ignore[attr-defined,no-any-return]
        except KeyError:
            return None

    def park(self, folder: Path) -> None:
        """From now on, entries given to `add` wait on disk in `folder`, encoded as this lock
        writes them (store/parked.py): a build holds what is in flight, not everything it made."""
        from imgbuild.store.parked import ParkedEntries

        if not isinstance(self.outputs, ParkedEntries):
            self.outputs = ParkedEntries(dict(self.outputs), folder, lambda entry: _encode(entry, 2))

    def add(self, entries: dict[str, dict[str, Any]]) -> None:
        """The entries of a finished target."""
        park = getattr(self.outputs, "park", None)
        for output, entry in entries.items():
            if park is not None:
                park(output, entry)
            else:
                self.outputs[output] = entry

    def dumps(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> Iterator[bytes]:
        """The lock's bytes, one output entry at a time: exactly what
        `json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"` gives, without
        holding that. json's indenting encoder is pure Python and lists every token of the
        document before joining them (~3 KB per entry: 150 MB at 50k outputs)."""
        doc: dict[str, Any] = {"version": LOCK_VERSION, "generator": "imgbuild", "outputs": self.outputs}
        if self.output_dir is not None:
            doc["output_dir"] = self.output_dir
        if self.pending:  # absent when empty: locks without candidates keep their bytes
            doc["pending"] = self.pending
        yield b"{"
        for i, name in enumerate(sorted(doc)):
            yield (",\n  " if i else "\n  ").encode() + _encode(name, 1) + b": "
            if name == "outputs" and not self.outputs:
                yield b"{}"  # what json.dumps writes for an empty dict (this may be a ParkedEntries)
            elif name == "outputs":
                raw = getattr(self.outputs, "raw", None)  # parked entries: their bytes as they are
                for j, output in enumerate(sorted(self.outputs)):
                    head = ((",\n    " if j else "{\n    ") + _text(output, 2) + ": ").encode("utf-8")
                    parked = raw(output) if raw is not None else None
                    yield head + (parked if parked is not None else _encode(self.outputs[output], 2))
                yield b"\n  }"
            else:
                yield _encode(doc[name], 1)
        yield b"\n}\n"


def _text(value: Any, level: int) -> str:
    """`value` as json.dumps(indent=2, sort_keys=True) writes it nested `level` deep (JSON text
    holds no raw newline: every one inside a string is escaped)."""
    return _pretty(value).replace("\n", "\n" + "  " * level)


# one encoder for every entry: json.dumps makes a new one on every call that passes options
_pretty = json.JSONEncoder(indent=2, sort_keys=True, ensure_ascii=False).encode


def _encode(value: Any, level: int) -> bytes:
    return _text(value, level).encode("utf-8")


#: what an accepted pick (`imgbuild accept`) adds to its output's entry
PIN_FIELDS = ("picked_from", "base_key", "original", "candidate_seeds")


def keep_pins(lock: Lock, before: dict[str, dict[str, Any]]) -> None:
    """A pick restored or rewritten with the same key stays a pick (entries in `before`)."""
    for output, old in before.items():
        new = lock.outputs.get(output)
        if new is not None and new is not old and new.get("key") == old.get("key"):
            new.update({f: old[f] for f in PIN_FIELDS if f in old})


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
        with gcpause.paused():
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
    folder = doc.get("output_dir")
    # A lock is committed, so a repository can write it: `clean` trusts this folder only if it
    # is one imgbuild could have written to (a folder below the project, outside .git/).
    lock = Lock(doc["outputs"], folder if isinstance(folder, str) and _writable_path(folder) else None)
    pending = doc.get("pending")
    lock.pending = pending if isinstance(pending, dict) else {}
    return lock


def _writable_path(rel: str) -> bool:
    """Could imgbuild have written `rel` (project-relative)? Only below a folder of the
    project (output_dir is never the root), never in .git/ or .imgbuild/, never through '..'."""
    parts = rel.split("/")
    return (rel not in ("", ".") and not rel.startswith("/") and "\\" not in rel
            and all(p not in ("", ".", "..") for p in parts) and parts[0] not in (".git", ".imgbuild")
            and not any(ord(c) < 32 for c in rel))


def _check_entry(output: str, entry: Any) -> None:
    if "\0" in output or output.startswith("/") or (".." in output and ".." in output.split("/")):
        raise ValueError(f"entry {output!r} is not a path inside output_dir")
    if not isinstance(entry, dict):
        raise ValueError(f"entry {output!r} is not a mapping")
    for name in ("key", "sha256"):
        if name not in entry:
            raise ValueError(f"entry {output!r} has no {name!r}")
    for name, value in entry.items():  # the fields present, not every field known: 10k per check
        kind = _FIELDS.get(name)
        if kind is None or value is None or type(value) is kind:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"entry {output!r}: {name!r} has the wrong type")
    original = entry.get("original")
    if original is not None and not _HEX64.fullmatch(original):
        # a pull fetches cas/sha256/<original> by this name: only a digest is one
        raise ValueError(f"entry {output!r}: 'original' is not a sha256 hex digest")


def write(path: Path, lock: Lock) -> bool:
    """Write only when the content changed; True if written. A no-op build touches nothing.
    The entries are encoded one at a time into the temp file and hashed on the way: the file
    is replaced only when that hash differs from the old file's. (Holding the encoded lock to
    compare first was the peak of a large first build: ~0.7 KB per entry.)"""
    before = sha256_file(path)
    digest = hashlib.sha256()

    def hashed() -> Iterator[bytes]:
        for chunk in lock.chunks():
            digest.update(chunk)
            yield chunk

    try:  # not with the collector paused: json's indenting encoder leaves a cycle per entry
        return atomic_write_chunks(path, hashed(), unless=lambda: digest.hexdigest() == before)
    except OSError as e:
        unchanged = hashlib.sha256()
        for chunk in lock.chunks():  # a read-only checkout whose lock is already right: fine
            unchanged.update(chunk)
        if unchanged.hexdigest() == before:
            return False
        raise ImgbuildError(
            f"cannot write {path}: {e.strerror or e}. The images written by this build are on "
            "disk and in the cache; build again where the lockfile can be written to record them"
        ) from None

# --- what imgbuild wrote and then stopped producing ------------------------------------------
# `.imgbuild/written.json`: project-relative path -> sha256 of the bytes imgbuild wrote. A build
# adds to it when entries leave the lock (a target renamed or removed, output_dir moved); `clean`
# deletes such a file only while its bytes are still imgbuild's, so it never touches a file a
# person made or edited. Local to this checkout; a damaged one reads as empty.

WRITTEN_FILE = "written.json"
_WRITTEN_FORMAT = 1


def load_written(state_dir: Path) -> dict[str, str]:
    try:
        doc = json.loads((state_dir / WRITTEN_FILE).read_bytes())
        files = doc["files"] if doc.get("format") == _WRITTEN_FORMAT else {}
        if not isinstance(files, dict):
            return {}
        # a file imgbuild wrote lies in a folder below the project, never at its root (the
        # project file, README...), in .git/ or .imgbuild/: anything else was not written by us
        return {str(k): str(v) for k, v in files.items()
                if isinstance(k, str) and "/" in k and _writable_path(k)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def save_written(state_dir: Path, files: dict[str, str]) -> None:
    doc = {"format": _WRITTEN_FORMAT, "files": dict(sorted(files.items()))}
    state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(state_dir / WRITTEN_FILE, json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8"))


def remember_written(state_dir: Path, files: dict[str, str]) -> None:
    """Add `files` (project-relative path -> sha256); nothing is written when nothing is new."""
    if not files:
        return
    known = load_written(state_dir)
    if all(known.get(k) == v for k, v in files.items()):
        return
    save_written(state_dir, {**known, **files})


def retire(state_dir: Path, lock: Lock, folder: str, prune: list[str]) -> bool:
    """Remember the files of lock entries about to leave the lock (`prune`) and, when output_dir
    moved to `folder`, every file under the old one; record `folder` in the lock. True when
    output_dir moved (the lock must be written even if nothing else changed)."""
    old = lock.output_dir if lock.output_dir is not None else folder
    gone = lock.outputs if old != folder else {o: lock.outputs[o] for o in prune if o in lock.outputs}
    remember_written(state_dir, {(o if old == "." else f"{old}/{o}"): str(e.get("sha256")) for o, e in gone.items()})
    lock.output_dir = folder
    return old != folder
