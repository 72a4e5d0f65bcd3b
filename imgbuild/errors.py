"""Errors carry data; `report` formats them, `cli` maps them to exit codes. Nothing here prints."""
from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1  # failed or stale targets
EXIT_USAGE = 2  # usage or spec error
EXIT_INTERNAL = 3  # a bug: traceback in a log file
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, order=True)
class Problem:
    """One located user mistake: `file:line:col: where: message`."""

    file: str
    line: int
    col: int
    where: str
    message: str

    def __str__(self) -> str:
        loc = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        return f"{loc}: {self.where}: {self.message}" if self.where else f"{loc}: {self.message}"


class ImgbuildError(Exception):
    """An error meant for the user, shown as its message with no traceback."""

    exit_code = EXIT_FAILED


class UsageError(ImgbuildError):
    exit_code = EXIT_USAGE


class SpecError(ImgbuildError):
    """All the problems found in the specs of one run, reported together."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(set(problems))
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the image specs"
        super().__init__("\n".join([head + ":", *map(str, self.problems)]))


INTERRUPTED_TEXT = ("interrupted; finished images are kept in the lock, and submitted tasks "
                    "are resumed (not paid again) by the next build")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, after the build stopped cleanly; str() is the one line to show (exit 130)."""
