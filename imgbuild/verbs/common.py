"""What every verb starts with: finding the project, loading its targets (from the plan cache
when nothing they depend on changed), selecting targets, and opening the stores."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgbuild.errors import UsageError
from imgbuild.spec.project import STATE_DIR, Project, find_project_file, load_project
from imgbuild.spec.types import Target, closure


@dataclass(frozen=True)
class Where:
    directory: str | None = None  # -C
    file: str | None = None  # -f


def load(where: Where, keep: int | None = None) -> tuple[Project, list[Target]]:
    """The project and its expanded targets; from the plan cache when no input changed.
    With `keep`, targets expanded after the first `keep` wait on disk (store/spool.py)."""
    from imgbuild.plan import caches
    from imgbuild.spec.expand import expand

    path = find_project_file(where.directory, where.file)
    state_dir = path.parent / STATE_DIR
    cached = caches.load_plan(path, state_dir)
    if cached is not None:
        settings, targets, inputs = cached
        return Project(file=path, root=path.parent, settings=settings, files=[], read_files=inputs), targets
    project = load_project(path, defer=keep is not None)  # a build reads each spec file in turn
    targets = expand(project, spill=None if keep is None else (state_dir, keep))
    caches.save_plan(path, state_dir, _plain(project.settings), project.read_files, targets)
    # Nothing after expansion reads the parsed spec documents (a plan from the cache has none):
    # with the position of every key and value, they outweigh the targets made from them.
    project.files = []
    return project, targets


def _plain(value: Any) -> Any:
    """LocDict/LocList -> dict/list, for JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def select(targets: list[Target], patterns: tuple[str, ...]) -> list[Target]:
    """Targets whose name or any output matches one of the glob patterns (all when none), with
    the targets they read."""
    return closure(named(targets, patterns), targets)  # as `make target`: a target comes with what it reads


def named(targets: list[Target], patterns: tuple[str, ...]) -> list[Target]:
    """Targets whose name or any output matches one of the glob patterns (all when none); a
    pattern that matches none is a usage error."""
    if not patterns:
        return targets
    chosen = []
    unmatched = set(patterns)
    for t in targets:
        hit = [p for p in patterns if fnmatch.fnmatchcase(t.name, p)
               or any(fnmatch.fnmatchcase(o, p) for o in t.outputs)]
        if hit:
            chosen.append(t)
            unmatched.difference_update(hit)
    if unmatched:
        import difflib

        names = [t.name for t in targets]
        hints = {p: difflib.get_close_matches(p, names, n=1) for p in sorted(unmatched)}
        text = "; ".join(f"'{p}'" + (f" (did you mean '{h[0]}'?)" if h else "") for p, h in hints.items())
        raise UsageError(f"no target matches {text}")
    return chosen


def stat_cache(project: Project) -> Any:
    from imgbuild.plan.caches import StatCache

    return StatCache(project.state_dir)


def open_cache(project: Project) -> Any:
    """The store of paid originals: $IMGBUILD_CACHE_DIR, else the project's cache_dir, else
    the user's cache folder (the same rule as `imgbuild cache`). A cache_dir inside the
    repository is not trusted (see store.originals.for_project)."""
    from imgbuild.store.originals import for_project

    return for_project(project.root, project.settings.get("cache_dir"))


def project_lock(where: Where, on_wait: Any, no_wait: bool) -> Any:
    """The build mutex (.imgbuild/build.lock): a second writer waits, or refuses with no_wait."""
    from imgbuild.store import mutex

    state_dir = find_project_file(where.directory, where.file).parent / STATE_DIR
    return mutex.hold(state_dir, wait=not no_wait, on_wait=on_wait)


def project_folder(project: Project) -> str:
    """output_dir relative to the project root, in POSIX form (as the lock records it)."""
    return os.path.relpath(project.output_dir, project.root).replace(os.sep, "/")


def unchanged(where: Where, kind: str) -> dict[str, Any] | None:
    """What the no-op snapshot recorded for `kind` ("build" or "check") when nothing it depends
    on changed since; None otherwise."""
    from imgbuild.plan import snapshot

    path = find_project_file(where.directory, where.file)
    return snapshot.load(path, path.parent / STATE_DIR, kind)


def lock_stamp(project: Project | Path) -> Any:
    """Taken before the lock is read (a project's, or the lockfile at a path)."""
    from imgbuild.plan import snapshot

    return snapshot.lock_stamp(project if isinstance(project, Path) else project.lock_path)


def lock_path(where: Where) -> Any:
    """The project's lockfile, found before its specs are loaded."""
    from imgbuild.spec.project import lock_path_for

    return lock_path_for(find_project_file(where.directory, where.file))


def remember_noop(project: Project, kind: str, lock: Any, locked: Any, entry: dict[str, Any],
                  targets: list[Target], stats: Any) -> None:
    """After a run that found nothing to do: let the next identical one answer from a snapshot
    (not while candidates wait for a pick: those runs report them)."""
    if lock.pending or any(t.candidates > 1 for t in targets):
        return
    from imgbuild.plan import snapshot
    from imgbuild.store import manifest

    snapshot.save(project, kind, lock, locked, entry, manifest.wanted(project.settings, targets),
                  stats.entry)


def adopt(targets: list[Target], lock: Any) -> list[Any]:
    """Targets the lock holds candidates or a pick for stay candidate targets (plan.candidates)."""
    if not lock.pending and not any("picked_from" in e for e in lock.outputs.values()):
        return targets  # most projects: not even an import
    from imgbuild.plan.candidates import adopt as keep_candidates

    return keep_candidates(targets, lock)


def as_made(targets: list[Target], lock: Any) -> list[Target]:
    """Targets as their outputs were made: an accepted pick with its own seed (derivatives follow it)."""
    if not any(t.candidates > 1 for t in targets):
        return targets
    from imgbuild.plan.candidates import pinned

    return pinned(targets, lock)


def record_pending(steps: list[Any], targets: list[Target], lock: Any, cache: Any,
                   project: Project, notice: Any) -> None:
    """Record the pending candidates in the lock; candidates new ones replaced before any pick
    are marked in the cache, as accept and reject mark theirs, for `cache prune`."""
    from imgbuild.plan import candidates

    replaced = candidates.record_pending(steps, targets, lock, cache)
    if replaced:
        note = {"project": str(project.root), "reason": "replaced by new candidates"}
        hold_unpicked(cache, {k: {**note, "target": name} for k, name in replaced.items()}, set(), notice)


def hold_unpicked(cache: Any, notes: dict[str, dict[str, str]], picked: set[str], notice: Any) -> None:
    """Remember when candidates stopped being wanted, for `cache prune` (local to the cache:
    the lock stays free of timestamps). A cache that cannot take it costs the note, not the pick."""
    from imgbuild.store.originals import CacheError

    try:
        cache.release(sorted(picked))  # a pick is kept by the lock; an old hold would mislead
        cache.hold({k: v for k, v in notes.items() if k not in picked})
    except CacheError as e:
        notice(f"the candidates not picked could not be marked in the cache ({e}): "
               "`imgbuild cache prune` keeps them only while they are recent")
