"""The `imgbuild` command's entry point.

`imgbuild --version` and the top-level `imgbuild --help` are answered here, before click and
the command definitions (`imgbuild.cli.app`) are imported: they are run often (shell prompts,
editors, scripts probing for the tool) and should cost little more than starting Python. The
help text is rendered from the real click group ahead of time (`imgbuild.cli.helptext`); a test
asserts that it is exactly what click prints, so the two cannot drift apart. Everything else,
and any --help at a terminal narrower than the text was rendered for, goes to click.
"""
from __future__ import annotations

import os
import sys

from imgbuild._version import __version__

VERSION_FLAGS = ("-V", "--version")
HELP_FLAGS = ("-h", "--help")
# click renders help to min(terminal columns, 80) - 2; the stored text was rendered at 80
HELP_COLUMNS = 80


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) == 1 and args[0] in VERSION_FLAGS:
        return _write(f"imgbuild, version {__version__}\n")
    if len(args) == 1 and args[0] in HELP_FLAGS and terminal_columns() >= HELP_COLUMNS:
        from imgbuild.cli.helptext import TOP_HELP

        return _write(TOP_HELP)
    if args and args[0] in ("build", "check"):
        from imgbuild.cli.quick import answer

        code = answer(args)
        if code is not None:
            return code
    from imgbuild.cli.app import main as click_main

    return click_main(argv)


def _write(text: str) -> int:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `imgbuild --help | head -1`
        pass
    return 0


def terminal_columns() -> int:
    """The width click would format for: shutil.get_terminal_size's rule, without importing
    shutil (which loads the compression modules)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or HELP_COLUMNS


def __getattr__(name: str) -> object:
    """`from imgbuild.cli import cli` (the click group), imported on first use."""
    if name == "cli":
        from imgbuild.cli import app

        return app.cli
    raise AttributeError(f"module 'imgbuild.cli' has no attribute {name!r}")
