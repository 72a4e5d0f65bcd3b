"""The Reporter a command writes through, and the one way a verb's end becomes an exit code:
the same on click's path (`cli.app`) and on the path that runs `build`/`check` before click
is imported (`cli.quick`)."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any


def reporter(json_mode: bool, verbose: int, quiet: int) -> Any:
    from imgbuild.report import Reporter

    if verbose > 1:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    # The live status line only where someone watches it: stderr is a terminal, not --json/-q.
    live = (not json_mode and verbose - quiet >= 0 and os.environ.get("TERM") != "dumb"
            and isatty(sys.stderr))
    return Reporter(json_mode=json_mode, verbosity=verbose - quiet, live=live)


def isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def run_verb(command: str, output: tuple[bool, int, int], call: Callable[[Any], Any],
             where: Any = None) -> int:
    """Call a verb, render its result, and turn every way it can end into an exit code and a
    closing message (with --json, a closing object on every exit code)."""
    from imgbuild.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, ImgbuildError

    sink = reporter(*output)
    try:
        result = call(sink)
    except ImgbuildError as e:
        sink.failure(command, e, e.exit_code)
        return e.exit_code
    except KeyboardInterrupt as e:  # outside a build's loop (loading, planning): nothing to keep
        sink.failure(command, e, EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `imgbuild build --json | head -1`: the stream's reader left
        return reader_gone()
    except Exception as e:
        sink.failure(command, e, EXIT_INTERNAL, crash_log=_write_crash_log(where))
        return EXIT_INTERNAL
    return show(sink, result)


def show(sink: Any, result: Any) -> int:
    """Print a verb's result; its exit code (1 when the reader left: `imgbuild check | head -1`)."""
    try:
        sink.result(result)
    except BrokenPipeError:
        return reader_gone()
    return int(result.exit_code)


def reader_gone() -> int:
    """The exit code when whoever read standard output went away (`imgbuild check | head -1`):
    1, as click gives it for the output it writes itself, with standard output sent to
    /dev/null so that Python's own flush at exit does not complain (the recipe of the `signal`
    module's documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 1


def _write_crash_log(where: Any) -> str:
    """The traceback, in the project's .imgbuild/ (else the temp folder): never the current
    directory of someone who ran `imgbuild -C elsewhere`."""
    import platform
    import tempfile
    import traceback
    from pathlib import Path

    from imgbuild._version import __version__

    text = (f"imgbuild {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
            f"argv: {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    folders = [Path(tempfile.gettempdir())]
    try:
        from imgbuild.spec.project import STATE_DIR, find_project_file

        if where is not None:
            folders.insert(0, find_project_file(where.directory, where.file).parent / STATE_DIR)
    except Exception:  # no project to be found: the temp folder it is
        pass
    for folder in folders:
        try:
            folder.mkdir(exist_ok=True)
            path = folder / "crash.log"
            path.write_text(text, encoding="utf-8")
            return str(path)
        except OSError:
            continue
    return "(could not write a log file)"
