"""Lock entries parked on disk while a build runs (imgbuild/store/parked.py): the lock written
is byte for byte the one an in-memory lock writes, a change made through the mapping is kept,
reading does not bring entries back into memory, and without a writable folder nothing is
parked."""
from __future__ import annotations

import os
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from helpers import run

from imgbuild.store import lockfile
from imgbuild.store.parked import ParkedEntries


def _entry(i: int) -> dict[str, Any]:
    return {"name": f"t{i}", "key": f"{i:064x}", "sha256": f"{i + 1:064x}", "provider": "placeholder",
            "draft": True, "model": "qwen-image-plus", "size": "512*512", "seed": i, "bytes": 14000 + i,
            "original": f"{i + 2:064x}",
            "request": {"model": "qwen-image-plus", "prompt": f"a “quoted” prompt\nnumber {i} ✓",
                        "negative_prompt": "", "size": "512*512", "n": 1, "seed": i,
                        "prompt_extend": False, "watermark": False}}


def _locks(folder: Path, n: int) -> tuple[lockfile.Lock, lockfile.Lock]:
    """The same entries in a plain lock and in a parked one (half read from a lock file, as a
    build starts, half added as targets finish)."""
    plain = lockfile.Lock({f"old/{i}.png": _entry(i) for i in range(n)}, "out")
    parked = lockfile.Lock({f"old/{i}.png": _entry(i) for i in range(n)}, "out")
    parked.park(folder)
    for i in range(n, 2 * n):
        plain.add({f"new/{i}.png": _entry(i)})
        parked.add({f"new/{i}.png": _entry(i)})
    return plain, parked


def test_the_lock_written_is_the_same_bytes_parked_or_not(tmp_path: Path) -> None:
    plain, parked = _locks(tmp_path, 50)
    assert isinstance(parked.outputs, ParkedEntries)
    assert len(parked.outputs._held) == 50 and len(parked.outputs._parked) == 50  # the new ones wait on disk
    assert parked.dumps() == plain.dumps()
    lockfile.write(tmp_path / "a.lock", plain)
    lockfile.write(tmp_path / "b.lock", parked)
    assert (tmp_path / "a.lock").read_bytes() == (tmp_path / "b.lock").read_bytes()
    assert lockfile.read(tmp_path / "b.lock").outputs == plain.outputs


def test_changes_through_the_mapping_are_written_and_reading_keeps_nothing(tmp_path: Path) -> None:
    plain, parked = _locks(tmp_path, 20)
    # reading every entry, as a build does after generating, leaves them on disk
    assert sum(1 for _ in parked.outputs.values()) == 40
    assert dict(parked.outputs.items()) == plain.outputs
    assert parked.get("new/25.png") == plain.get("new/25.png") and parked.get("nope.png") is None
    assert len(parked.outputs._parked) == 20
    # an accepted pick's fields (keep_pins) and the other mapping operations
    for lock in (plain, parked):
        lock.outputs.get("new/21.png").update(picked_from=2, base_key="b" * 64)  # type: ignore[union-attr]
        del lock.outputs["new/22.png"]
        lock.outputs.pop("new/23.png")
        lock.outputs["new/24.png"] = {"key": "k", "sha256": "s"}
        lock.add({"new/26.png": {**_entry(99), "name": "again"}})  # parked again, replacing
    assert "new/22.png" not in parked.outputs and "new/21.png" in parked.outputs
    assert len(parked.outputs) == len(plain.outputs) == 38
    assert sorted(parked.outputs) == sorted(plain.outputs)
    assert parked.dumps() == plain.dumps()
    with pytest.raises(KeyError):
        parked.outputs["new/22.png"]


def test_a_parked_entry_keeps_only_its_name_and_where_it_is(tmp_path: Path) -> None:
    entries = ParkedEntries({}, tmp_path, lambda e: lockfile._encode(e, 2))
    names = [f"images/t{i}.png" for i in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, name in enumerate(names):
            entries.park(name, _entry(i))  # the caller drops its dict, as the build does
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    held = len(lockfile._encode(_entry(0), 2))
    assert kept / len(names) < 150, f"{kept / len(names):.0f} bytes per parked entry"  # a dict of it: ~1 KB
    assert held > 600  # what it would otherwise be (encoded; the dicts themselves hold more)
    assert entries.get("images/t7.png") == _entry(7) and len(entries._parked) == 1999  # brought back


def test_without_a_writable_folder_entries_stay_in_memory(tmp_path: Path) -> None:
    lock = lockfile.Lock({}, "out")
    lock.park(tmp_path / "missing")  # no such folder: the file cannot be made
    lock.add({"a.png": _entry(1)})
    assert lock.outputs._held == {"a.png": _entry(1)}  # type: ignore[attr-defined]
    assert lock.dumps() == lockfile.Lock({"a.png": _entry(1)}, "out").dumps()


def test_a_build_writes_the_same_lock_with_and_without_parking(
        site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole pipeline: a first build (parked) and the same build with parking turned off
    write the same lock; no parking file is left in .imgbuild/."""
    other = tmp_path / "copy"
    shutil.copytree(site, other)
    assert run(capsys, "build", "-C", str(site)).code == 0
    monkeypatch.setattr(lockfile.Lock, "park", lambda self, folder: None)
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "other-cache"))
    assert run(capsys, "build", "-C", str(other)).code == 0
    ours, theirs = (site / "imgbuild.lock").read_text(), (other / "imgbuild.lock").read_text()
    assert ours == theirs and '"sha256"' in ours
    assert not [p for p in os.listdir(site / ".imgbuild") if p.startswith("#") or "tmp" in p]
