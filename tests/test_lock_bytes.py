"""The lock is written one entry at a time (a 50k-output lock encoded at once by json's indenting
encoder took ~150 MB): the bytes must stay exactly those of the one-shot encoding, so committed
lockfiles do not change."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from imgbuild.store import lockfile
from imgbuild.store.lockfile import Lock

text = st.text(max_size=12)  # any code point: quotes, backslashes, newlines, controls, non-ASCII
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                      max_leaves=8)
entries = st.dictionaries(text, values, max_size=5)


def one_shot(lock: Lock) -> bytes:
    doc: dict[str, Any] = {"version": lockfile.LOCK_VERSION, "generator": "imgbuild", "outputs": lock.outputs}
    if lock.output_dir is not None:
        doc["output_dir"] = lock.output_dir
    if lock.pending:
        doc["pending"] = lock.pending
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(outputs=st.dictionaries(text, entries, max_size=4), output_dir=st.none() | text,
       pending=st.dictionaries(text, entries, max_size=2))
def test_the_lock_bytes_are_those_of_the_one_shot_encoding(outputs: dict[str, Any], output_dir: str | None,
                                                          pending: dict[str, Any]) -> None:
    lock = Lock(outputs, output_dir)
    lock.pending = pending
    assert lock.dumps() == one_shot(lock)


def test_write_compares_and_replaces_by_content(tmp_path: Path) -> None:
    path = tmp_path / "imgbuild.lock"
    lock = Lock({"b.png": {"key": "k", "sha256": "s", "request": {"prompt": "ünï\n\"q\""}}, "a.png": {}})
    assert lockfile.write(path, lock) is True and path.read_bytes() == one_shot(lock)
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    assert lockfile.write(path, lock) is False  # same bytes: the file is not touched
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp
    lock.outputs["c.png"] = {"key": "k2", "sha256": "s2"}
    assert lockfile.write(path, lock) is True and path.read_bytes() == one_shot(lock)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgbuild.lock"]  # no temp file left behind


def test_an_unchanged_lock_needs_no_writable_folder(tmp_path: Path, monkeypatch: Any) -> None:
    """The lock is streamed into a temp file and compared on the way; where no temp file can
    be made (a read-only checkout), an unchanged lock is still fine and a changed one is an error."""
    import pytest

    from imgbuild.errors import ImgbuildError

    path = tmp_path / "imgbuild.lock"
    lock = Lock({"a.png": {"key": "k", "sha256": "s"}})
    lockfile.write(path, lock)

    def read_only(*args: Any, **kwargs: Any) -> bool:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lockfile, "atomic_write_chunks", read_only)
    assert lockfile.write(path, lock) is False
    lock.outputs["b.png"] = {"key": "k2", "sha256": "s2"}
    with pytest.raises(ImgbuildError, match="cannot write"):
        lockfile.write(path, lock)
