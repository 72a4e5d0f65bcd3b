"""Run the CLI in-process, exactly as the console script does, and capture what it prints."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from imgbuild.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out.strip().splitlines()[-1])

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, f"traceback printed:\n{out}\n{err}"
    return Result(code, out, err)


def age_holds(directory: Any, days: float) -> None:
    """Move the time recorded for every candidate not picked (or rejected) `days` into the past,
    as if that much time had passed since the pick: `cache prune` keeps them for a while after it."""
    from pathlib import Path

    from imgbuild.store.originals import Cache

    with Cache(Path(directory)) as cache:
        for key, hold in cache.holds().items():
            cache.hold({key: hold}, since=hold["since"] - days * 86400)


def age_cache(directory: Any, seconds: float = 2 * 3600) -> None:
    """Make every row of a cache of originals look `seconds` older, as if that much time had
    passed: `cache prune` spares whatever was stored within its grace period."""
    import sqlite3
    from pathlib import Path

    db = sqlite3.connect(Path(directory) / "cache.db")
    try:
        with db:
            db.execute("UPDATE Cache SET store_time = store_time - ?", (seconds,))
    finally:
        db.close()
