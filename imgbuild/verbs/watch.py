"""`imgbuild watch`: build, then build again whenever a file the specs are made of changes.

Watched: what the last plan was made from (the plan cache lists imgbuild.yaml, the included spec
files, prompt partials and matrix data files), whatever the include globs match now (so a new
spec file is seen), and the files a spec error was found in. Never watched: output_dir, the lock
and .imgbuild/. And a build that changes nothing writes nothing, so neither this loop nor a site
generator's dev server watching the output folder is set off by a no-op.

Polling rather than OS file notifications: the watched set is small and known (tens of files),
so a sweep every POLL seconds costs about half a millisecond (examples/site: 5 files and one
glob), behaves the same on every OS and filesystem (network mounts, containers, editors that save by rename), and needs no
dependency.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgbuild.errors import EXIT_INTERRUPTED, ImgbuildError, SpecError
from imgbuild.spec.project import LOCK_FILE, STATE_DIR, display_path, find_project_file
from imgbuild.verbs.common import Where
from imgbuild.verbs.results import DataResult

POLL = 0.1  # seconds between two looks at the watched files
QUIET = 0.2  # debounce: a rebuild starts once the watched files stayed unchanged this long
# A file modified this recently may be modified again within the same mtime tick (the kernel's
# clock is coarse), leaving size and mtime alike: its content is compared too, as git does.
RACY_NS = 2_000_000_000

# Seams for the tests, which drive the loop on a clock of their own.
_sleep = time.sleep
_clock = time.monotonic

Stamp = tuple[int, int, int]  # mtime_ns, size, inode (a save by rename changes only the inode)


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass(frozen=True)
class Snapshot:
    stamps: dict[Path, Stamp | None]
    digests: dict[Path, str | None]  # of files modified just before it, or new to a build

    @classmethod
    def take(cls, paths: Iterable[Path]) -> Snapshot:
        now = time.time_ns()
        stamps = {p: _stamp(p) for p in paths}
        racy = [p for p, s in stamps.items() if s is not None and now - s[0] < RACY_NS]
        return cls(stamps, {p: _digest(p) for p in racy})

    def including(self, paths: Iterable[Path], digests: dict[Path, str]) -> Snapshot:
        """This snapshot plus the files it did not know (a build found new inputs: the first
        build, a new include), each with the digest of the content that build read when it is
        known, so that an edit made since then is still a change."""
        new = Snapshot.take(p for p in paths if p not in self.stamps)
        known = {p: digests[p] for p in new.stamps if p in digests}
        return Snapshot({**self.stamps, **new.stamps}, {**self.digests, **new.digests, **known})

    def changes(self, paths: Iterable[Path]) -> list[Path]:
        """The files added, removed or modified since this snapshot."""
        now = set(paths)
        return sorted(p for p in now | self.stamps.keys()
                      if p not in now or p not in self.stamps or _stamp(p) != self.stamps[p]
                      or (p in self.digests and _digest(p) != self.digests[p]))


class Inputs:
    """The files that make the plan, refreshed from the plan cache after each build."""

    def __init__(self, project_file: Path) -> None:
        self.project_file = project_file
        self.root = project_file.parent
        self.state_dir = self.root / STATE_DIR
        self.files: set[Path] = {project_file}
        self.digests: dict[Path, str] = {}  # what the last plan read
        self.include: list[str] = []
        self.ignored: list[Path] = []
        self.refresh()

    def refresh(self) -> None:
        from imgbuild.plan.caches import plan_inputs

        found = plan_inputs(self.project_file, self.state_dir)
        if found is None:
            return  # no plan yet (a spec error): go on watching what we knew
        self.digests, settings = found
        self.files = {self.project_file, *self.digests}
        self.include = [str(p) for p in settings.get("include") or []]
        output_dir = self.root / str(settings.get("output_dir", "generated"))
        self.ignored = [self.state_dir.resolve(), output_dir.resolve(), (self.root / LOCK_FILE).resolve()]

    def add(self, paths: Iterable[Path]) -> None:
        self.files.update(paths)

    def paths(self) -> set[Path]:
        found = set(self.files)
        for pattern in self.include:
            found.update(p.resolve() for p in self.root.glob(pattern) if p.is_file())
        return {p for p in found if not any(p == i or i in p.parents for i in self.ignored)}


def watch(where: Where, sink: Any, options: Any) -> DataResult:
    """Build now, then after every change, until Ctrl-C (exit 130). Each build's result goes to
    `sink` as `build` would show it; a failed build or a spec error is shown and watching goes
    on. `options` are `build`'s (verbs.build.BuildOptions)."""
    inputs = Inputs(find_project_file(where.directory, where.file))
    changed: list[Path] = []
    builds = 0
    building = False
    try:
        while True:
            before = Snapshot.take(inputs.paths())  # an edit during the build sets off the next
            if changed:
                sink.notice(f"{_names(changed)} changed: rebuilding")
            builds += 1
            building = True
            code, show = _build(where, sink, inputs, options)
            if code == EXIT_INTERRUPTED:
                show()
                break  # Ctrl-C stopped that build in its loop: its result said what was kept
            # done before its result is shown: a Ctrl-C sent on seeing the result interrupts
            # no build (it used to land between the two and call the finished build interrupted)
            building = False
            show()
            inputs.refresh()
            if not changed:
                sink.notice(f"watching {len(inputs.paths())} file(s) for changes (Ctrl-C to stop)")
            changed = _next_change(before.including(inputs.paths(), inputs.digests), inputs)
    except KeyboardInterrupt:
        # While waiting; or in a build outside its generation loop (loading, deriving), whose
        # own `finally` wrote the lock with what it finished, all files being written atomically.
        pass
    return DataResult("watch", {"builds": builds, "interrupted_build": building}, exit_code=EXIT_INTERRUPTED)


def _build(where: Where, sink: Any, inputs: Inputs, options: Any) -> tuple[int, Callable[[], None]]:
    """One build: its exit code, and what shows it as `imgbuild build` shows it."""
    from imgbuild.verbs.build import build

    try:
        result = build(where, sink, options)
    except ImgbuildError as e:
        if isinstance(e, SpecError):  # watch the files with problems, even those no plan listed
            inputs.add(Path(p.file).resolve() for p in e.problems if p.file)
        error = e
        return e.exit_code, lambda: sink.failure("build", error, error.exit_code)
    return int(result.exit_code), lambda: sink.result(result)


def _next_change(before: Snapshot, inputs: Inputs) -> list[Path]:
    """Wait for a watched file to change, then until none has changed for QUIET seconds (one
    save can be several writes; a checkout, many files); the files that differ from `before`."""
    while True:
        while not before.changes(inputs.paths()):
            _sleep(POLL)
        last = Snapshot.take(inputs.paths())
        settled_at = _clock()
        while _clock() - settled_at < QUIET:
            _sleep(POLL)
            if last.changes(inputs.paths()):
                last = Snapshot.take(inputs.paths())
                settled_at = _clock()
        changed = before.changes(inputs.paths())
        if changed:
            return changed


def _names(paths: list[Path]) -> str:
    shown = ", ".join(display_path(p) for p in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
