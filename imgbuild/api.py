"""The Python API: the CLI's verbs as functions that return the `--json` summary as a dict.

    import imgbuild

    summary = imgbuild.build("site")             # same dict as `imgbuild build -C site --json`
    if summary["failed"]:
        ...
    status = imgbuild.check("site", allow_drafts=True)
    if status["stale"]:
        ...

The functions run the same verbs as the commands (`imgbuild.verbs`); only the output differs:
nothing is printed. Progress lines and notices go to the `imgbuild` logger at INFO (failures at
WARNING). Failed or stale targets are data in the returned dict, not exceptions.

Errors are raised as subclasses of `imgbuild.errors.ImgbuildError` (its `exit_code` is the CLI's):
  UsageError  no imgbuild.yaml at project_dir, a target glob that matches nothing (exit code 2)
  SpecError   invalid specs; `.problems` lists every one as file:line:col (exit code 2)
  ImgbuildError  anything else meant for a person: a damaged lockfile, a cache that cannot be
              opened, a build over `budget`/`max_images` (exit code 1)
KeyboardInterrupt propagates as usual; finished images are kept and recorded in the lock.

`build` runs its own asyncio event loop, so call it from synchronous code; from async code use
`await asyncio.to_thread(imgbuild.build, ...)`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Union

from imgbuild.spec.project import Project
from imgbuild.verbs.common import Where

__all__ = ["build", "check", "load_project"]

PathLike = Union[str, "os.PathLike[str]"]
log = logging.getLogger("imgbuild")


class LogSink:
    """Where a build's progress goes when called from Python: the `imgbuild` logger."""

    live = False
    verbosity = 0

    def notice(self, text: str) -> None:
        log.info(text)

    def interrupt_notice(self, paid_in_flight: int, grace: float, again: bool) -> None:
        log.warning("interrupted%s; %d paid request(s) in flight", " again" if again else "", paid_in_flight)

    def start_progress(self, targets: Any) -> None:
        pass

    def end_progress(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def event(self, name: str, outputs: Any, state: str) -> None:
        log.debug("%s: %s", name, state)

    def progress(self, done: int, total: int, status: str, step: Any, failure: Any) -> None:
        level = logging.WARNING if failure is not None and status == "failed" else logging.INFO
        log.log(level, "[%d/%d] %s %s%s", done, total, status, step.target.name,
                f": {failure.code}: {failure.message}" if failure is not None else "")

    def variant_progress(self, done: int, total: int, status: str, step: Any, error: str | None) -> None:
        log.log(logging.WARNING if error else logging.INFO, "[%d/%d] %s %s%s", done, total, status,
                step.variant.output, f": {error}" if error else "")


def _where(project_dir: PathLike) -> Where:
    """A project folder, or the path of its project file (for a file not named imgbuild.yaml)."""
    path = Path(project_dir)
    if path.is_file():
        return Where(str(path.parent), path.name)
    return Where(str(path), None)


def build(project_dir: PathLike = ".", targets: list[str] | tuple[str, ...] | None = None, *,
          jobs: int | None = None, provider: str | None = None, dry_run: bool = False,
          keep_going: bool = False, force: bool = False, budget: float | None = None,
          max_images: int | None = None) -> dict[str, Any]:
    """Build the project at `project_dir` (a folder, or its project file); the `build --json` dict.

    targets: globs of target names or output paths (all when None). jobs: targets at once
    (None: the CLI's default). provider: "auto", "dashscope" or "placeholder" (None: the
    project's/IMGBUILD_PROVIDER). dry_run: only plan, and return the `plan --json` dict.
    budget / max_images: refuse (ImgbuildError) before any request if the build would exceed them.
    An interrupted build raises `imgbuild.errors.Interrupted` (a KeyboardInterrupt) whose
    `.result` says what was kept.
    """
    from imgbuild.errors import Interrupted
    from imgbuild.verbs.build import BuildOptions, build as run

    options = BuildOptions(patterns=tuple(targets or ()), jobs=jobs, dry_run=dry_run, keep_going=keep_going,
                           provider=provider, force=force, budget=budget, max_images=max_images)
    result = run(_where(project_dir), LogSink(), options)
    if getattr(result, "interrupted", None) is not None:
        raise Interrupted(result)
    return result.to_dict()


def check(project_dir: PathLike = ".", allow_drafts: bool = False) -> dict[str, Any]:
    """Offline freshness check; the `check --json` dict. `result["stale"]` is 0 when all is fresh."""
    from imgbuild.verbs.check import check as run

    return run(_where(project_dir), allow_drafts=allow_drafts).to_dict()


def load_project(project_dir: PathLike = ".") -> Project:
    """Load and validate the project (imgbuild.yaml plus included spec files); raises SpecError."""
    from imgbuild.spec import project

    where = _where(project_dir)
    return project.load_project(project.find_project_file(where.directory, where.file))
