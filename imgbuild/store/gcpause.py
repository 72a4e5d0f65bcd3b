"""The cyclic garbage collector paused around bulk JSON work on the project's state.

A 100k-target fresh-clone check spent ~1.9 s of 10 s in collections during a few blocks that
make hundreds of thousands of containers and no reference cycles: parsing the lock, the plan
cache or the stat cache (everything parsed is kept), encoding them with json's C encoder (the
pieces are freed by their reference counts), and making the plan's steps. Each collection
there only walks the objects, and the ones that trigger late walk every target already
loaded: the cost grew faster than the number of targets. Pausing is safe in such a block: it
makes no cycle to reclaim. Not around json's indenting (pure-Python) encoder, the lock's: it
leaves a reference cycle per call, and a 6k-target build's lock write grew its peak by ~10 MB
with collection paused.
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:  # a caller that paused it keeps it paused
            gc.enable()
