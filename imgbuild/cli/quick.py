"""`imgbuild build` and `imgbuild check` with nothing to do, answered before click is imported.

Most runs in pre-commit and before a site build find nothing to do, and the no-op snapshot
(`plan.snapshot`) answers them in tens of milliseconds, of which importing click and defining
the commands would be some twenty. This module reads only the plain forms such runs use (the
command with -q/--quiet, -C/--directory, -f/--file, and check's --allow-drafts) and asks the
verbs for the snapshot's answer alone. Any other form, a snapshot that cannot answer, or
anything unusual (no project, a broken one) goes to click, which runs the command in full and
reports what is wrong. A test runs each accepted form both ways and compares the bytes.
"""
from __future__ import annotations

from typing import Any

COMMANDS = ("build", "check")
_VALUED = {"-C": "directory", "--directory": "directory", "-f": "file", "--file": "file"}


def answer(args: list[str]) -> int | None:
    """The exit code after printing the snapshot's answer, or None for click to take over."""
    parsed = _parse(args)
    if parsed is None:
        return None
    command, quiet, values, allow_drafts = parsed
    from imgbuild.cli.reporting import reporter
    from imgbuild.verbs.common import Where

    where = Where(values.get("directory"), values.get("file"))
    sink = reporter(False, 0, quiet)
    try:
        result = _unchanged(command, where, sink, allow_drafts)
    except KeyboardInterrupt as e:
        from imgbuild.errors import EXIT_INTERRUPTED

        sink.failure(command, e, EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - click's path runs the command again and reports it
        return None
    if result is None:
        return None
    try:
        sink.result(result)
    except BrokenPipeError:  # `imgbuild check | head -1`, as on click's path
        return 0
    return int(result.exit_code)


def _unchanged(command: str, where: Any, sink: Any, allow_drafts: bool) -> Any:
    if command == "build":
        from imgbuild.verbs.build import BuildOptions, answer_unchanged

        return answer_unchanged(where, sink, BuildOptions())
    from imgbuild.verbs.check import answer_unchanged as check_unchanged

    return check_unchanged(where, allow_drafts)


def _parse(args: list[str]) -> tuple[str, int, dict[str, str], bool] | None:
    """(command, -q count, {directory, file}, --allow-drafts) for the forms handled here."""
    if not args or args[0] not in COMMANDS:
        return None
    command, quiet, values, allow_drafts = args[0], 0, {}, False
    rest = iter(args[1:])
    for arg in rest:
        name, eq, value = arg.partition("=")
        if arg in ("-q", "--quiet"):
            quiet += 1
        elif arg == "--allow-drafts" and command == "check":
            allow_drafts = True
        elif eq and name.startswith("--") and name in _VALUED and value:
            values[_VALUED[name]] = value
        elif arg in _VALUED:
            value = next(rest, "")
            if not value or value.startswith("-"):
                return None  # click says what is missing
            values[_VALUED[arg]] = value
        else:
            return None
    return command, quiet, values, allow_drafts
