"""Bulk JSON work pauses the cyclic collector (store/gcpause.py) and always gives it back: after
a lock is read, a damaged one refused, a plan cache loaded or a plan made, collection is on
again; a caller that had paused it finds it still paused."""
from __future__ import annotations

import gc
from pathlib import Path

import pytest

from imgbuild.errors import ImgbuildError
from imgbuild.store import gcpause, lockfile
from imgbuild.store.lockfile import Lock


def test_paused_gives_the_collector_back_even_after_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with gcpause.paused():
            assert not gc.isenabled()
            raise ValueError("boom")
    assert gc.isenabled()


def test_a_caller_that_paused_the_collector_keeps_it_paused() -> None:
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_reading_and_writing_a_lock_leave_collection_on(tmp_path: Path) -> None:
    path = tmp_path / "imgbuild.lock"
    lockfile.write(path, Lock({"a.png": {"key": "k", "sha256": "s"}}))
    assert gc.isenabled()
    assert lockfile.read(path).outputs == {"a.png": {"key": "k", "sha256": "s"}}
    assert gc.isenabled()
    path.write_text('{"version": 1, "outputs": {"a.png": "not a mapping"}}')
    with pytest.raises(ImgbuildError, match="damaged"):
        lockfile.read(path)
    assert gc.isenabled()
