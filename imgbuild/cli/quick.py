"""`imgbuild build` with nothing to do, and `imgbuild check`, run before click is imported.

Most runs in pre-commit and before a site build find nothing to do, and the no-op snapshot
(`plan.snapshot`) answers them in tens of milliseconds, of which importing click and defining
the commands would be some twenty. This module reads only the plain forms such runs use (the
command with -q/--quiet, -C/--directory, -f/--file, and check's --allow-drafts). `check` in
those forms is run here in full, snapshot or not (a fresh clone in CI, a check after an edit),
through the same `run_verb` as click's path. `build` is answered here only from the snapshot:
any other form, a build with work to do, or anything unusual (no project, a broken one) goes
to click, which runs the command in full and reports what is wrong. A test runs each accepted
form both ways and compares the bytes.
"""
from __future__ import annotations

from typing import Any

COMMANDS = ("build", "check")
_VALUED = {"-C": "directory", "--directory": "directory", "-f": "file", "--file": "file"}


def answer(args: list[str]) -> int | None:
    """The exit code of a check run here, or of a build the snapshot answered; None for click
    to take over."""
    parsed = _parse(args)
    if parsed is None:
        return None
    command, quiet, values, allow_drafts = parsed
    from imgbuild.cli.reporting import reporter, run_verb, show
    from imgbuild.verbs.common import Where

    where = Where(values.get("directory"), values.get("file"))
    if command == "check":  # what click's `check` does for these forms, click unloaded
        from imgbuild.verbs.check import check

        return run_verb("check", (False, 0, quiet), lambda sink: check(where, allow_drafts=allow_drafts, rows=False),
                        where)
    sink = reporter(False, 0, quiet)
    try:
        result = _unchanged(where, sink)
    except KeyboardInterrupt as e:
        from imgbuild.errors import EXIT_INTERRUPTED

        sink.failure("build", e, EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception:  # noqa: BLE001 - click's path runs the command again and reports it
        return None
    return None if result is None else show(sink, result)


def _unchanged(where: Any, sink: Any) -> Any:
    from imgbuild.verbs.build import BuildOptions, answer_unchanged

    return answer_unchanged(where, sink, BuildOptions())


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
