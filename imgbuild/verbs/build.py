"""`imgbuild build`: generate what is new or changed, restore what the cache holds, derive the
web variants, write the lock and the manifest. `build --dry-run` is `verbs.plan`.

Holds the build mutex (.imgbuild/build.lock) while it writes; a second build waits for the
first, or with `no_wait` refuses. The lock is written also when the run is interrupted.

This module answers a build with nothing to do from the no-op snapshot before the run itself
(`verbs.build_run`, and the planner, lock reader and stores behind it) is even imported: in
pre-commit and before every site build, that is the build people run most."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from imgbuild import providers
from imgbuild.verbs.common import Where, project_lock, unchanged
from imgbuild.verbs.results import BuildResult, PlanResult


@dataclass(frozen=True)
class BuildOptions:
    patterns: tuple[str, ...] = ()
    jobs: int | None = None
    dry_run: bool = False
    keep_going: bool = False
    provider: str | None = None
    force: bool = False
    budget: float | None = None
    max_images: int | None = None
    no_wait: bool = False
    shard: str | None = None  # "I/N": only the targets whose key falls in shard I of N
    remote_required: bool = False
    candidates: int | None = None  # --candidates k: this run's k for targets with n: 1



def build(where: Where, sink: Any, options: BuildOptions = BuildOptions()) -> BuildResult | PlanResult:
    if options.dry_run:  # only reads: never takes the build mutex
        return _build(where, sink, options)
    with project_lock(where, sink.notice, options.no_wait):
        return _build(where, sink, options)


def answer_unchanged(where: Where, sink: Any, options: BuildOptions) -> BuildResult | None:
    """The no-op snapshot's answer alone, under the build mutex; None when it cannot answer (the
    caller then runs `build`, which asks again: the state may have changed meanwhile)."""
    with project_lock(where, sink.notice, options.no_wait):
        return _unchanged(where, sink, options)


def _build(where: Where, sink: Any, options: BuildOptions) -> BuildResult | PlanResult:
    known = _unchanged(where, sink, options)
    if known is not None:
        return known
    from imgbuild.verbs.build_run import run_build

    return run_build(where, sink, options)


def _unchanged(where: Where, sink: Any, options: BuildOptions) -> BuildResult | None:
    """A whole build that nothing could change since the last one found nothing to do, when no
    row of it is wanted (--json lists every output): the no-op snapshot's answer."""
    if (options.dry_run or options.patterns or options.force or options.shard or options.remote_required
            or getattr(sink, "json_mode", True)):
        return None
    known = unchanged(where, "build")
    if known is None or remote_configured(known["settings"]):
        return None
    identity = providers.identity(providers.choose(options.provider, known["settings"]), known["settings"])
    if identity != known["provider"]:
        return None
    return BuildResult(provider=identity, changed=[], unlisted=known["count"], nothing_to_do=True)


def remote_configured(settings: Any) -> bool:
    """Whether a run needs the remote stack at all (most projects: no); verbs.remote's rule,
    without importing it."""
    from imgbuild.store.remote import REMOTE_ENV

    return bool(settings.get("remote") or os.environ.get(REMOTE_ENV))
