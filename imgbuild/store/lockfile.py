"""imgbuild.lock: what was built, keyed by output path. JSON with sorted keys and no timestamps,
so the same inputs give byte-identical bytes; replaced atomically."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imgbuild.errors import ImgbuildError
from imgbuild.store.atomic import atomic_write_bytes

LOCK_VERSION = 1

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
        self.outputs: dict[str, dict[str, Any]] = outputs or {}
        # the folder (relative to the project) the outputs were written under: when the project
        # moves output_dir, the files under the old one are still imgbuild's to clean
        self.output_dir = output_dir

    def get(self, output: str) -> dict[str, Any] | None:
        return self.outputs.get(output)

    def dumps(self) -> bytes:
        doc: dict[str, Any] = {"version": LOCK_VERSION, "generator": "imgbuild", "outputs": self.outputs}
        if self.output_dir is not None:
            doc["output_dir"] = self.output_dir
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def read(path: Path) -> Lock:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Lock()
    except OSError as e:
        raise ImgbuildError(f"{path}: cannot read the lockfile: {e.strerror}") from None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != LOCK_VERSION or not isinstance(doc.get("outputs"), dict):
            raise ValueError("not an imgbuild lockfile of version 1")
    except ValueError as e:
        raise ImgbuildError(
            f"{path}: the lockfile is damaged ({e}). Restore it from git (git checkout -- {path.name}) "
            "or delete it and run `imgbuild build`: images in the cache are restored without cost."
        ) from None
    folder = doc.get("output_dir")
    return Lock(doc["outputs"], folder if isinstance(folder, str) else None)


def write(path: Path, lock: Lock) -> bool:
    """Write only when the content changed; True if written. A no-op build touches nothing."""
    data = lock.dumps()
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write_bytes(path, data)
    return True
