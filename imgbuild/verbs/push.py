"""`imgbuild push`: upload to the remote every original the lock references that it lacks (from
the local cache), e.g. once after adding a remote to a project built before."""
from __future__ import annotations

from imgbuild import commands
from imgbuild.errors import EXIT_FAILED, EXIT_OK, UsageError
from imgbuild.report import Reporter
from imgbuild.store import lockfile


def push(where: commands.Where, reporter: Reporter) -> int:
    from imgbuild.run.transfer import push as upload_all
    from imgbuild.verbs.remote_link import open_link

    project, _ = commands.load(where)
    link = open_link(project.settings, reporter, required=True)
    assert link is not None  # required=True raises instead
    if link.config.read_only:
        raise UsageError(f"the remote {link.config.url} is read-only here (remote.read_only or "
                         "IMGBUILD_REMOTE_READ_ONLY); nothing was pushed")
    lock = lockfile.read(project.lock_path)
    missing: list[str] = []
    if link.remote is not None:
        with commands.open_cache(project) as cache:
            missing = upload_all(link.remote, lock, cache)
    link.say_new_faults(reporter)
    names = sorted({str(e.get("name", "")) for e in lock.outputs.values() if e.get("key") in set(missing)})
    for name in names:
        reporter.line(f"not in the local cache, not pushed: {name}")
    summary = {"command": "push", "not_in_cache": len(missing), "remote": link.summary()}
    text = "imgbuild: " + link.line()
    if missing:
        text += f"\nimgbuild: {len(missing)} original(s) the lock names are not in this machine's cache"
    reporter.summary(summary, text)
    return EXIT_FAILED if link.errors else EXIT_OK
