"""imgbuild: make for AI-generated images.

The Python API (`build`, `check`, `load_project`, see `imgbuild.api`) is imported on first use,
so `import imgbuild` and `imgbuild --version` stay fast.
"""
from __future__ import annotations

from imgbuild._version import __version__
__all__ = ["__version__", "build", "check", "load_project"]

# not `from typing import TYPE_CHECKING`: importing typing costs ~9 ms, half of Python's
# start-up, and every `imgbuild --version` pays for this module; type checkers treat a name
# TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from imgbuild.api import build, check, load_project


def __getattr__(name: str) -> object:
    if name in ("build", "check", "load_project"):
        from imgbuild import api

        return getattr(api, name)
    raise AttributeError(f"module 'imgbuild' has no attribute {name!r}")
