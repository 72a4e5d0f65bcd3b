"""`imgbuild clean`: list (and with --yes delete) the files imgbuild wrote that no spec produces
any more — wherever they are under the project (an earlier output_dir too) — and lock entries
without a spec. A file is only touched while its bytes are the ones imgbuild wrote: a file a
person made, or edited since, is never listed. Folders that deleting empties go too.
Deleting holds the build mutex."""
from __future__ import annotations


from pathlib import Path
from typing import Any

from imgbuild.store import lockfile
from imgbuild.verbs.common import Where, load, project_folder, project_lock
from imgbuild.verbs.results import CleanResult


def clean(where: Where, sink: Any, *, yes: bool = False, no_wait: bool = False) -> CleanResult:
    if not yes:  # only lists: reads like `plan`, no lock
        return _clean(where, yes=False)
    with project_lock(where, sink.notice, no_wait):  # never delete under a running build
        return _clean(where, yes=True)


def _clean(where: Where, *, yes: bool) -> CleanResult:
    from imgbuild.store import manifest

    project, targets = load(where)
    folder = project_folder(project)
    produced = {o for t in targets for o in (*t.outputs, *(v.output for v in t.variants))}
    manifest_name = manifest.wanted(project.settings, targets)
    if manifest_name:
        produced.add(manifest_name)
    lock = lockfile.read(project.lock_path)
    orphans = sorted(o for o in lock.outputs if o not in produced)
    old = lock.output_dir if lock.output_dir is not None else folder
    candidates = lockfile.load_written(project.state_dir)
    for output, entry in lock.outputs.items():
        if old != folder or output in orphans:
            candidates[_join(old, output)] = str(entry.get("sha256"))
    wanted = {_join(folder, o) for o in produced}
    stray = sorted(p for p, digest in candidates.items()
                   if p not in wanted and _ours(project.root, p, digest))
    if yes:
        stray = [rel for rel in stray if _remove(project.root, rel, candidates[rel])]
        for orphan in orphans:
            lock.outputs.pop(orphan)
        if orphans:
            lockfile.write(project.lock_path, lock)
        history = {p: d for p, d in lockfile.load_written(project.state_dir).items() if p not in stray}
        if history != lockfile.load_written(project.state_dir):
            lockfile.save_written(project.state_dir, history)
    return CleanResult(files=stray, lock_entries=orphans, deleted=yes)


def _join(folder: str, output: str) -> str:
    return output if folder in (".", "") else f"{folder}/{output}"


def _ours(root: Path, rel: str, digest: str) -> bool:
    """True when `rel` is a regular file inside the project holding the bytes imgbuild wrote."""
    from imgbuild.store.atomic import sha256_file

    path = root / rel
    try:
        inside = path.parent.resolve().is_relative_to(root.resolve())
    except OSError:
        return False
    return inside and path.is_file() and not path.is_symlink() and sha256_file(path) == digest


def _remove(root: Path, rel: str, digest: str) -> bool:
    """Delete the file while it still holds the bytes imgbuild wrote (hashed and unlinked
    through folder handles that never follow a link, so a link swapped in meanwhile cannot
    redirect it), then each parent folder this left empty, up to (not including) the root."""
    from imgbuild.store.outputs import REMOVED, remove_recorded

    head, _, rest = rel.partition("/")
    if not rest or remove_recorded(root, root / head, rest, digest) != REMOVED:
        return False
    path = root / rel
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()  # only succeeds when empty
        except OSError:
            break
        parent = parent.parent
    return True
