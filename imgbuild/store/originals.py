"""The local store of every paid original: content-addressed blobs plus one record per
generation key, in a diskcache directory shared by all projects on the machine.

Nothing is ever evicted by size: an original cost money. Blobs are written before the record
that names them, so a record always points at complete blobs; blobs are verified on read.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

from imgbuild.errors import ImgbuildError

CACHE_ENV = "IMGBUILD_CACHE_DIR"


def default_dir(project_cache_dir: Path | None = None) -> Path:
    """$IMGBUILD_CACHE_DIR > the project's `cache_dir` > $XDG_CACHE_HOME/imgbuild > ~/.cache/imgbuild."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    if project_cache_dir is not None:
        return project_cache_dir
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "imgbuild"


class Cache:
    def __init__(self, directory: Path) -> None:
        import diskcache

        self.directory = directory
        try:
            self._store = diskcache.Cache(
                str(directory),
                eviction_policy="none",  # originals are paid for: never drop them silently
                size_limit=2**62,
                cull_limit=0,
                statistics=False,
            )
        except OSError as e:
            raise ImgbuildError(f"cannot open the image cache at {directory}: {e.strerror}") from None

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def complete(self, key: str, n: int) -> bool:
        """True when all `n` images of `key` are stored (a partial result does not count)."""
        record = self._store.get(f"gen:{key}")
        return record is not None and len(record["images"]) >= n

    def put(self, key: str, images: list[bytes], meta: dict[str, Any],
            digests_known: list[str] | None = None) -> list[str]:
        """Store `images` under `key`. `digests_known`: their sha256, when the caller has just
        verified them (a restore from the remote), so that they are not hashed twice."""
        digests = []
        for i, data in enumerate(images):
            digest = digests_known[i] if digests_known else hashlib.sha256(data).hexdigest()
            blob = f"blob:{digest}"
            if blob not in self._store:
                # As a file object: diskcache writes plain bytes by iterating a BytesIO, i.e.
                # line by line (thousands of writes per image); a reader goes in 4 MiB chunks.
                self._store.set(blob, io.BytesIO(data), read=True)
            digests.append(digest)
        self._store.set(f"gen:{key}", {**meta, "images": digests})
        return digests

    def get(self, key: str) -> tuple[list[bytes], dict[str, Any]] | None:
        """The images and metadata of `key`, or None if absent or damaged."""
        record = self._store.get(f"gen:{key}")
        if record is None:
            return None
        images = []
        for digest in record["images"]:
            data = self._store.get(f"blob:{digest}")
            if data is None or hashlib.sha256(data).hexdigest() != digest:
                return None  # a damaged blob is treated as a miss, never copied into outputs
            images.append(data)
        return images, record

    def digests(self, key: str) -> list[str]:
        """sha256 of each original stored for `key` (empty when absent), without reading them."""
        record = self._store.get(f"gen:{key}")
        return list(record["images"]) if isinstance(record, dict) else []

    def keys(self) -> list[str]:
        return sorted(k[4:] for k in self._store.iterkeys() if isinstance(k, str) and k.startswith("gen:"))

    # --- maintenance (`imgbuild cache info | verify | prune`) ------------------------------------

    def entries(self) -> dict[str, list[str]]:
        """Every generation key with the blob digests its record names."""
        found = {}
        for key in self.keys():
            record = self._store.get(f"gen:{key}")
            if isinstance(record, dict):
                found[key] = list(record.get("images", []))
        return found

    def blobs(self) -> list[str]:
        return sorted(k[5:] for k in self._store.iterkeys() if isinstance(k, str) and k.startswith("blob:"))

    def volume(self) -> int:
        """Bytes the cache takes on disk (database plus value files), as diskcache estimates it."""
        return int(self._store.volume())

    def verify(self) -> dict[str, str]:
        """Re-hash every blob: {digest: 'damaged' | 'unreadable'} for each one that fails, plus
        {'gen:KEY': 'incomplete'} for records naming a blob that is not stored."""
        bad: dict[str, str] = {}
        for digest in self.blobs():
            data = self._store.get(f"blob:{digest}")
            if not isinstance(data, bytes):
                bad[digest] = "unreadable"
            elif hashlib.sha256(data).hexdigest() != digest:
                bad[digest] = "damaged"
        stored = set(self.blobs())
        for key, digests in self.entries().items():
            if any(d not in stored for d in digests):
                bad[f"gen:{key}"] = "incomplete"
        return bad

    def unreferenced(self, keep: set[str]) -> tuple[list[str], list[str]]:
        """(generation keys not in `keep`, blobs no kept record names): what a prune removes."""
        entries = self.entries()
        drop = sorted(k for k in entries if k not in keep)
        used = {d for k, digests in entries.items() if k in keep for d in digests}
        return drop, [d for d in self.blobs() if d not in used]

    def delete(self, keys: list[str], blobs: list[str]) -> None:
        """Records first, then blobs, so a record never names a deleted blob."""
        for key in keys:
            self._store.delete(f"gen:{key}")
        for digest in blobs:
            self._store.delete(f"blob:{digest}")
