from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from imgbuild.providers.dashscope.journal import Journal


def _record(journal: Journal, key: str = "k1", task_id: str = "t-1") -> dict[str, object]:
    return journal.record(key, task_id=task_id, endpoint="text2image", model="wan2.2-t2i-flash",
                          base_host="dashscope.aliyuncs.com")


def test_record_then_get_round_trips(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    before = time.time()
    _record(journal)
    entry = journal.get("k1")
    assert entry is not None
    assert entry["task_id"] == "t-1"
    assert entry["endpoint"] == "text2image"
    assert entry["model"] == "wan2.2-t2i-flash"
    assert entry["base_host"] == "dashscope.aliyuncs.com"
    assert before <= float(entry["submitted_at"]) <= time.time()  # type: ignore[arg-type]


def test_missing_key_is_none(tmp_path: Path) -> None:
    assert Journal(tmp_path / "nowhere").get("k1") is None


def test_record_overwrites(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _record(journal, task_id="t-1")
    _record(journal, task_id="t-2")
    assert journal.get("k1")["task_id"] == "t-2"  # type: ignore[index]
    assert len(journal.entries()) == 1


def test_discard_is_idempotent(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _record(journal)
    journal.discard("k1")
    journal.discard("k1")
    assert journal.get("k1") is None
    assert journal.entries() == {}


def test_entries_by_key(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _record(journal, "a", "t-a")
    _record(journal, "b/with:odd chars", "t-b")
    entries = journal.entries()
    assert sorted(entries) == ["a", "b/with:odd chars"]
    assert entries["b/with:odd chars"]["task_id"] == "t-b"


def test_no_temp_files_left_behind(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    for i in range(5):
        _record(journal, f"k{i}")
    names = os.listdir(tmp_path)
    assert len(names) == 5
    assert all(n.endswith(".json") and not n.startswith(".tmp-") for n in names)


def test_files_are_plain_json(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _record(journal)
    (path,) = tmp_path.iterdir()
    assert json.loads(path.read_text())["task_id"] == "t-1"


def test_damaged_entry_is_ignored(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _record(journal)
    (path,) = tmp_path.iterdir()
    path.write_text("{not json")
    assert journal.get("k1") is None
    assert journal.entries() == {}
    assert any("unreadable journal entry" in w for w in journal.warnings)  # the build shows them


def test_failed_write_keeps_old_entry(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    _record(journal, task_id="t-old")

    with pytest.raises(TypeError):
        journal.record("k1", task_id=object(), endpoint="e", model="m",  # type: ignore[arg-type]
                       base_host="h")
    assert journal.get("k1")["task_id"] == "t-old"  # type: ignore[index]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []
