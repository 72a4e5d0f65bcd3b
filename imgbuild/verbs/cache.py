"""`imgbuild cache info | verify | prune`: look after the store of paid originals.

The cache is found as a build finds it ($IMGBUILD_CACHE_DIR, else the project's `cache_dir`, else
$XDG_CACHE_HOME/imgbuild). Only the project file's `cache_dir` is read, so a project whose specs
do not validate can still have its cache inspected. Each function returns a `DataResult`.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from imgbuild.store import cacheusers, lockfile
from imgbuild.store.originals import PRUNE_GRACE, Cache, default_dir
from imgbuild.verbs.common import Where
from imgbuild.errors import EXIT_FAILED, UsageError
from imgbuild.spec.project import PROJECT_FILE, display_path, find_project_file, lock_path_for
from imgbuild.verbs.results import DataResult


def _project_file(where: Where) -> Path | None:
    """The project file, or None when there is none here and none was asked for."""
    if where.directory or where.file:
        return find_project_file(where.directory, where.file)
    path = Path.cwd() / PROJECT_FILE
    return path.resolve() if path.is_file() else None


def cache_dir(where: Where) -> Path:
    project_file = _project_file(where)
    configured = None
    if project_file is not None:
        from imgbuild.spec import yamlio

        try:
            data = yamlio.load_file(project_file, display_path(project_file))
        except yamlio.YamlError:
            data = None  # `validate` reports it; the cache location falls back to the default
        value = data.get("cache_dir") if isinstance(data, dict) else None
        if isinstance(value, str) and value:
            configured = project_file.parent / value
    return default_dir(configured)


def _open(where: Where) -> Cache:
    return Cache(cache_dir(where))  # maintenance: not a build, so not registered as a user


def info(where: Where) -> DataResult:
    with _open(where) as cache:
        entries = cache.entries()
        blobs = cache.blobs()
        return DataResult("cache info", {"directory": str(cache.directory), "entries": len(entries),
                                         "images": sum(len(d) for d in entries.values()),
                                         "blobs": len(blobs), "bytes": cache.volume()})


def verify(where: Where, *, yes: bool = False,
           on_wait: Callable[[str], None] = lambda text: None) -> DataResult:
    """Re-hash everything; with `yes`, remove what is damaged (under the cache's own lock)."""
    with _open(where) as cache:
        with cacheusers.maintenance(cache.directory, on_wait) if yes else contextlib.nullcontext():
            checked = len(cache.blobs())
            bad = cache.verify()
            keys, blobs = cache.repair(bad) if yes and bad else ([], [])
    damaged = sorted(k for k in bad if not k.startswith("gen:"))
    incomplete = sorted(k[4:] for k, v in bad.items() if v == "incomplete")
    unreadable = sorted(k[4:] for k, v in bad.items() if k.startswith("gen:") and v == "unreadable")
    return DataResult("cache verify", {"directory": str(cache.directory), "blobs": checked,
                                       "damaged": damaged, "incomplete": incomplete,
                                       "unreadable_entries": unreadable, "repaired": yes,
                                       "removed_entries": keys, "removed_blobs": blobs,
                                       "failed": len(bad)},
                      exit_code=EXIT_FAILED if bad else 0)


def _keep_keys(where: Where, keep_locks: tuple[str, ...]) -> tuple[set[str], list[str]]:
    if keep_locks:
        paths = [Path(p) for p in keep_locks]
    else:
        project_file = _project_file(where)
        if project_file is None:
            raise UsageError(f"no {PROJECT_FILE} here: name the lockfile of every project whose images "
                             "must be kept with --keep-lock PATH (repeatable), or use -C DIR")
        paths = [lock_path_for(project_file)]
    keep: set[str] = set()
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{display_path(path)}: no such lockfile; prune keeps only what a lockfile "
                             "references, so it refuses to guess")
        lock = lockfile.read(path)
        # candidates waiting for `imgbuild accept` are as much the lock's as its outputs
        waiting = [c for r in lock.pending.values() if isinstance(r, dict)
                   for c in r.get("candidates", []) if isinstance(c, dict)]
        for entry in [*lock.outputs.values(), *waiting]:
            key = entry.get("key") if isinstance(entry, dict) else None
            if isinstance(key, str):
                keep.add(key)
    return keep, [display_path(p) for p in paths]


def prune(where: Where, *, keep_locks: tuple[str, ...] = (), yes: bool = False,
          on_wait: Callable[[str], None] = lambda text: None) -> DataResult:
    """Under the cache's own lock, delete what no kept lockfile references, except anything
    stored less than PRUNE_GRACE ago or since the oldest running build began: a build names
    its new originals in its lockfile only when it ends."""
    keep, lock_names = _keep_keys(where, keep_locks)
    with _open(where) as cache, cacheusers.maintenance(cache.directory, on_wait):
        before = time.time() - PRUNE_GRACE
        running = cacheusers.oldest_running(cache.directory)
        if running is not None:
            before = min(before, running)
        keys, blobs = cache.unreferenced(keep, before=before)
        recent = len(cache.unreferenced(keep)[0]) - len(keys)
        if yes:
            cache.delete(keys, blobs)
        directory = str(cache.directory)
    return DataResult("cache prune", {"directory": directory, "keep_locks": lock_names,
                                      "entries": keys, "blobs": blobs, "deleted": yes,
                                      "kept_recent": recent, "grace_hours": PRUNE_GRACE / 3600})
