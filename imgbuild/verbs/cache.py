"""`imgbuild cache info | verify | prune`: look after the store of paid originals.

The cache is found as a build finds it ($IMGBUILD_CACHE_DIR, else the project's `cache_dir`, else
$XDG_CACHE_HOME/imgbuild). Only the project file's `cache_dir` and `keep_unpicked_days` are read,
so a project whose specs do not validate can still have its cache inspected. Each function returns
a `DataResult`.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgbuild.store import cacheusers, lockfile
from imgbuild.store.originals import PRUNE_GRACE, Cache, default_dir
from imgbuild.verbs.common import Where
from imgbuild.errors import EXIT_FAILED, UsageError
from imgbuild.spec.project import PROJECT_FILE, display_path, find_project_file, lock_path_for
from imgbuild.verbs.results import DataResult

UNPICKED_SETTING = "keep_unpicked_days"
KEEP_UNPICKED_DAYS = 30
DAY = 86400.0


def _project_file(where: Where) -> Path | None:
    """The project file, or None when there is none here and none was asked for."""
    if where.directory or where.file:
        return find_project_file(where.directory, where.file)
    path = Path.cwd() / PROJECT_FILE
    return path.resolve() if path.is_file() else None


def _settings(where: Where) -> tuple[Path | None, dict[str, Any]]:
    """The project file and its top-level settings, read without validating the specs (a project
    whose specs do not validate can still have its cache looked after)."""
    project_file = _project_file(where)
    if project_file is None:
        return None, {}
    from imgbuild.spec import yamlio

    try:
        data = yamlio.load_file(project_file, display_path(project_file))
    except yamlio.YamlError:
        data = None  # `validate` reports it; every setting falls back to its default
    return project_file, data if isinstance(data, dict) else {}


def cache_dir(where: Where) -> Path:
    project_file, settings = _settings(where)
    value = settings.get("cache_dir")
    configured = project_file.parent / value if project_file and isinstance(value, str) and value else None
    return default_dir(configured)


def keep_unpicked_days(where: Where, flag: int | None = None) -> int:
    """--keep-unpicked-days, else the project file's `keep_unpicked_days`, else 30."""
    if flag is not None:
        return flag
    project_file, settings = _settings(where)
    value = settings.get(UNPICKED_SETTING, KEEP_UNPICKED_DAYS)
    if type(value) is not int or value < 0:
        from imgbuild.spec import yamlio

        line, col = yamlio.locate(settings, [UNPICKED_SETTING])
        where_ = f"{display_path(project_file) if project_file else PROJECT_FILE}:{line}:{col}"
        raise UsageError(f"{where_}: {UNPICKED_SETTING}: {value!r} is not a whole number of days "
                         "(0 or more) for which `cache prune` keeps the candidates that were not picked")
    return value


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


def prune(where: Where, *, keep_locks: tuple[str, ...] = (), yes: bool = False, days: int | None = None,
          on_wait: Callable[[str], None] = lambda text: None) -> DataResult:
    """Under the cache's own lock, delete what no kept lockfile references, except anything
    stored less than PRUNE_GRACE ago or since the oldest running build began (a build names
    its new originals in its lockfile only when it ends), and candidates that were not picked
    (or were rejected) less than `days` ago (default: the project's keep_unpicked_days, 30)."""
    keep, lock_names = _keep_keys(where, keep_locks)
    days = keep_unpicked_days(where, days)
    with _open(where) as cache, cacheusers.maintenance(cache.directory, on_wait):
        now = time.time()  # tests move the recorded times back instead (helpers.age_holds)
        before = now - PRUNE_GRACE
        running = cacheusers.oldest_running(cache.directory)
        if running is not None:
            before = min(before, running)
        held, stale = _held(cache, keep, now - days * DAY)
        spared = keep | {k for k, h in held.items() if h["kept"]}
        keys, blobs = cache.unreferenced(spared, before=before)
        recent = len(cache.unreferenced(spared)[0]) - len(keys)
        if yes:
            cache.delete(keys, blobs)
            cache.release(stale)
        directory = str(cache.directory)
    kept = [{"key": k, **_dated(h, days)} for k, h in sorted(held.items()) if h["kept"]]
    expired = [{"key": k, **_dated(h, days)} for k, h in sorted(held.items()) if not h["kept"] and k in keys]
    return DataResult("cache prune", {"directory": directory, "keep_locks": lock_names,
                                      "entries": keys, "blobs": blobs, "deleted": yes,
                                      "kept_recent": recent, "grace_hours": PRUNE_GRACE / 3600,
                                      "keep_unpicked_days": days,
                                      "kept_unpicked": kept, "expired_unpicked": expired})


def _held(cache: Cache, keep: set[str], cutoff: float) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The holds of entries no kept lock references, each marked `kept` when it was recorded after
    `cutoff`; and the holds whose entry is gone (forgotten by a prune with --yes)."""
    holds = cache.holds()
    entries = set(cache.keys()) if holds else set()
    held, stale = {}, []
    for key, hold in holds.items():
        if key not in entries:
            stale.append(key)
        elif key not in keep:  # a lockfile's entry is kept anyway (an accepted pick, a pending one)
            held[key] = {**hold, "kept": hold["since"] > cutoff}
    return held, sorted(stale)


def _dated(hold: dict[str, Any], days: int) -> dict[str, Any]:
    def iso(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    return {"target": hold.get("target", ""), "reason": hold.get("reason", ""),
            "project": hold.get("project", ""), "since": iso(hold["since"]),
            "until": iso(hold["since"] + days * DAY)}
