"""`imgbuild cache info | verify | prune`: look after the store of paid originals.

The cache is found as a build finds it ($IMGBUILD_CACHE_DIR, else the project's `cache_dir`, else
$XDG_CACHE_HOME/imgbuild). Only the project file's `cache_dir` is read, so a project whose specs
do not validate can still have its cache inspected. Each function returns an exit code.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from imgbuild.store import cacheusers, lockfile
from imgbuild.store.originals import PRUNE_GRACE, Cache, default_dir
from imgbuild.commands import Where
from imgbuild.errors import EXIT_FAILED, EXIT_OK, UsageError
from imgbuild.spec.project import PROJECT_FILE, display_path, find_project_file, lock_path_for
from imgbuild.report import Reporter


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


def info(where: Where, reporter: Reporter) -> int:
    with _open(where) as cache:
        entries = cache.entries()
        blobs = cache.blobs()
        summary = {"command": "cache info", "directory": str(cache.directory), "entries": len(entries),
                   "images": sum(len(d) for d in entries.values()), "blobs": len(blobs),
                   "bytes": cache.volume()}
    reporter.summary(summary, f"directory: {summary['directory']}\n"
                              f"entries:   {summary['entries']} generation(s), {summary['images']} image(s)\n"
                              f"blobs:     {summary['blobs']}\n"
                              f"size:      {_size(summary['bytes'])}")
    return EXIT_OK


def verify(where: Where, reporter: Reporter, *, yes: bool = False) -> int:
    """Re-hash everything; with `yes`, remove what is damaged (under the cache's own lock)."""
    with _open(where) as cache:
        with (cacheusers.maintenance(cache.directory, reporter.notice) if yes
              else contextlib.nullcontext()):
            checked = len(cache.blobs())
            bad = cache.verify()
            removed = cache.repair(bad) if yes and bad else ([], [])
    for item, kind in sorted(bad.items()):
        if item.startswith("gen:"):
            what = ("names a blob that is not stored" if kind == "incomplete"
                    else "is not a record imgbuild can read")
            reporter.line(f"{kind:<10} entry {item[4:]}: {what}")
        else:
            reporter.line(f"{kind:<10} blob {item}: its bytes do not match its sha256")
    damaged = sorted(k for k, v in bad.items() if not k.startswith("gen:"))
    incomplete = sorted(k[4:] for k, v in bad.items() if v == "incomplete")
    unreadable = sorted(k[4:] for k, v in bad.items() if k.startswith("gen:") and v == "unreadable")
    summary = {"command": "cache verify", "directory": str(cache.directory), "blobs": checked,
               "damaged": damaged, "incomplete": incomplete, "unreadable_entries": unreadable,
               "removed_entries": removed[0], "removed_blobs": removed[1]}
    found = (f"imgbuild: {len(damaged)} of {checked} blob(s) damaged, {len(incomplete)} incomplete "
             f"and {len(unreadable)} unreadable entr(ies)")
    if not bad:
        text = f"imgbuild: all {checked} blob(s) intact"
    elif yes:
        text = (f"{found}; removed {len(removed[0])} entr(ies) and {len(removed[1])} blob(s). "
                "A build needing one of those images generates it again (paid).")
    else:
        text = (f"{found}. A build removes a damaged original when it meets it and generates the "
                "image again (paid); `imgbuild cache verify --yes` removes them now.")
    reporter.summary({**summary, "failed": len(bad)}, text)
    return EXIT_FAILED if bad else EXIT_OK


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
        for entry in lockfile.read(path).outputs.values():
            key = entry.get("key") if isinstance(entry, dict) else None
            if isinstance(key, str):
                keep.add(key)
    return keep, [display_path(p) for p in paths]


def prune(where: Where, reporter: Reporter, *, keep_locks: tuple[str, ...] = (), yes: bool = False) -> int:
    """Under the cache's own lock, delete what no kept lockfile references, except anything
    stored less than PRUNE_GRACE ago or since the oldest running build began: a build names
    its new originals in its lockfile only when it ends."""
    keep, lock_names = _keep_keys(where, keep_locks)
    with _open(where) as cache, cacheusers.maintenance(cache.directory, reporter.notice):
        before = time.time() - PRUNE_GRACE
        running = cacheusers.oldest_running(cache.directory)
        if running is not None:
            before = min(before, running)
        keys, blobs = cache.unreferenced(keep, before=before)
        young = len(cache.unreferenced(keep)[0]) - len(keys)
        directory = str(cache.directory)
        if keys or blobs:
            reporter.notice(f"keeping what {', '.join(lock_names)} reference(s); the cache at {directory} "
                            "may be shared by other projects: pass --keep-lock for each of them")
        if young:
            reporter.notice(f"keeping {young} unreferenced entr(ies) stored in the last "
                            f"{PRUNE_GRACE / 3600:g} h or while a build is running: a running build "
                            "records its images in its lockfile only when it ends")
        verb = "deleted" if yes else "would delete"
        for key in keys:
            reporter.line(f"{verb}: entry {key}")
        for digest in blobs:
            reporter.line(f"{verb}: blob {digest}")
        if yes:
            cache.delete(keys, blobs)
    summary: dict[str, Any] = {"command": "cache prune", "directory": directory, "keep_locks": lock_names,
                               "entries": keys, "blobs": blobs, "deleted": yes, "kept_recent": young}
    if not keys and not blobs:
        text = "imgbuild: nothing to prune"
    elif yes:
        text = f"imgbuild: deleted {len(keys)} entr(ies) and {len(blobs)} blob(s)"
    else:
        text = (f"imgbuild: {len(keys)} entr(ies) and {len(blobs)} blob(s) to prune; "
                "run with --yes to delete (paid originals cannot be restored)")
    reporter.summary(summary, text)
    return EXIT_OK


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
