"""The Reporter a command writes through, made the same way on click's path (`cli.app`) and on
the path that answers a no-op before click is imported (`cli.quick`)."""
from __future__ import annotations

import os
import sys
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
