"""`imgbuild push`: upload to the remote every original the lock references that it lacks (from
the local cache), e.g. once after adding a remote to a project built before. Reads only the
project; the remote's create-only writes make a concurrent build harmless."""
from __future__ import annotations

from typing import Any

from imgbuild.errors import UsageError
from imgbuild.store import lockfile
from imgbuild.verbs import remote as remote_verbs
from imgbuild.verbs.common import Where, load, open_cache
from imgbuild.verbs.results import PushResult


def push(where: Where, sink: Any) -> PushResult:
    from imgbuild.run.transfer import push as upload_all

    project, _ = load(where)
    link = remote_verbs.open_link(project.settings, sink, required=True)
    assert link is not None  # required=True raises instead
    if link.config.read_only:
        raise UsageError(f"the remote {link.config.url} is read-only here (remote.read_only or "
                         "IMGBUILD_REMOTE_READ_ONLY); nothing was pushed")
    lock = lockfile.read(project.lock_path)
    missing: list[str] = []
    if link.remote is not None:
        with open_cache(project) as cache:
            missing = upload_all(link.remote, lock, cache)
    link.say_new_faults(sink)
    absent = set(missing)
    names = sorted({str(e.get("name", "")) for e in lock.outputs.values() if e.get("key") in absent})
    return PushResult(link.summary(), names)
