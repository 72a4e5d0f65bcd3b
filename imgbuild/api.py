"""The Python API: the CLI's verbs as functions that return the `--json` summary as a dict.

    import imgbuild

    summary = imgbuild.build("site")             # same dict as `imgbuild build -C site --json`
    if summary["failed"]:
        ...
    status = imgbuild.check("site", allow_drafts=True)
    if status["stale"]:
        ...

The functions run the same code as the commands (`imgbuild.commands`); only the output differs:
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
from typing import Any, TextIO, Union

from imgbuild.commands import Where
from imgbuild.spec.project import Project
from imgbuild.report import Reporter

__all__ = ["build", "check", "load_project"]

PathLike = Union[str, "os.PathLike[str]"]
log = logging.getLogger("imgbuild")


class CaptureReporter(Reporter):
    """A Reporter that keeps the summary instead of printing it, and logs everything else."""

    def __init__(self) -> None:
        super().__init__(json_mode=False, verbosity=0)
        self.result: dict[str, Any] | None = None

    def _print(self, text: str, *, stream: TextIO | None = None) -> None:
        log.info(text)

    def error(self, text: str) -> None:
        log.warning(text)

    def summary(self, summary: dict[str, Any], text: str) -> None:
        self.result = summary
        log.info(text)


def _where(project_dir: PathLike) -> Where:
    """A project folder, or the path of its project file (for a file not named imgbuild.yaml)."""
    path = Path(project_dir)
    if path.is_file():
        return Where(str(path.parent), path.name)
    return Where(str(path), None)


def _run(verb: Any, project_dir: PathLike, **options: Any) -> dict[str, Any]:
    reporter = CaptureReporter()
    verb(_where(project_dir), reporter, **options)
    if reporter.result is None:  # pragma: no cover - every verb ends with a summary
        raise RuntimeError(f"{verb.__name__} returned no summary")
    return reporter.result


def build(project_dir: PathLike = ".", targets: list[str] | tuple[str, ...] | None = None, *,
          jobs: int | None = None, provider: str | None = None, dry_run: bool = False,
          keep_going: bool = False, force: bool = False, budget: float | None = None,
          max_images: int | None = None) -> dict[str, Any]:
    """Build the project at `project_dir` (a folder, or its project file); the `build --json` dict.

    targets: globs of target names or output paths (all when None). jobs: targets at once
    (None: the CLI's default). provider: "auto", "dashscope" or "placeholder" (None: the
    project's/IMGBUILD_PROVIDER). dry_run: only plan, and return the `plan --json` dict.
    budget / max_images: refuse (ImgbuildError) before any request if the build would exceed them.
    """
    from imgbuild import commands

    return _run(commands.build, project_dir, patterns=tuple(targets or ()), jobs=jobs,
                dry_run=dry_run, keep_going=keep_going, provider=provider, force=force,
                budget=budget, max_images=max_images)


def check(project_dir: PathLike = ".", allow_drafts: bool = False) -> dict[str, Any]:
    """Offline freshness check; the `check --json` dict. `result["stale"]` is 0 when all is fresh."""
    from imgbuild import commands

    return _run(commands.check, project_dir, allow_drafts=allow_drafts)


def load_project(project_dir: PathLike = ".") -> Project:
    """Load and validate the project (imgbuild.yaml plus included spec files); raises SpecError."""
    from imgbuild.spec import project

    where = _where(project_dir)
    return project.load_project(project.find_project_file(where.directory, where.file))
