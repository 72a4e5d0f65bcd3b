"""`build --shard I/N`: a stable partition of targets by generation key, so N CI runners split a
catalogue. By key, not by position: identical requests land in the same shard, and adding or
removing an unrelated spec never moves a target to another shard."""
from __future__ import annotations

import re

from imgbuild.errors import UsageError


def parse(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); shards are numbered from 1, like Playwright's --shard."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--shard {text}: expected I/N, e.g. --shard 1/4")
    index, total = int(match.group(1)), int(match.group(2))
    if total < 1 or not 1 <= index <= total:
        raise UsageError(f"--shard {text}: I must be between 1 and N (N at least 1)")
    return index, total


def owns(key: str, index: int, total: int) -> bool:
    """Whether shard `index` of `total` builds the target with this generation key."""
    return int(key[:16], 16) % total == index - 1
