"""`imgbuild clean`: list (and with --yes delete) files under output_dir that no spec produces,
and lock entries without a spec. Deleting holds the build mutex."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from imgbuild.store import lockfile
from imgbuild.verbs.common import Where, load, project_lock
from imgbuild.verbs.results import CleanResult


def clean(where: Where, sink: Any, *, yes: bool = False, no_wait: bool = False) -> CleanResult:
    if not yes:  # only lists: reads like `plan`, no lock
        return _clean(where, yes=False)
    with project_lock(where, sink.notice, no_wait):  # never delete under a running build
        return _clean(where, yes=True)


def _clean(where: Where, *, yes: bool) -> CleanResult:
    from imgbuild.store import manifest

    project, targets = load(where)
    produced = {o for t in targets for o in (*t.outputs, *(v.output for v in t.variants))}
    manifest_name = manifest.wanted(project.settings, targets)
    if manifest_name:
        produced.add(manifest_name)
    out_dir = project.output_dir
    stray: list[str] = []
    if out_dir.is_dir():
        for dirpath, dirnames, filenames in os.walk(out_dir):
            dirnames.sort()
            for name in sorted(filenames):
                rel = Path(dirpath, name).relative_to(out_dir).as_posix()
                if rel not in produced:
                    stray.append(rel)
    lock = lockfile.read(project.lock_path)
    orphans = sorted(o for o in lock.outputs if o not in produced)
    if yes:
        from imgbuild.store.outputs import remove_output

        for rel in stray:
            remove_output(out_dir, rel)
        for orphan in orphans:
            lock.outputs.pop(orphan)
        if orphans:
            lockfile.write(project.lock_path, lock)
    return CleanResult(files=stray, lock_entries=orphans, deleted=yes)
