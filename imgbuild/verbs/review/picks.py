"""The review page's "waiting for a pick" section: each pending target (issue 16) as a grid of
its candidates, each with the exact `imgbuild accept … --pick N` command to copy. Thumbnails come
from the local cache (the candidates live nowhere else until one is accepted)."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from imgbuild.store import lockfile


def pending_picks(project: Any, folder: Path, images: Any = None) -> list[dict[str, Any]]:
    lock = lockfile.read(project.lock_path)
    waiting = {name: r for name, r in sorted(lock.pending.items()) if isinstance(r, dict) and r.get("candidates")}
    if not waiting:
        return []
    from imgbuild.verbs.common import open_cache
    from imgbuild.verbs.review.inputs import made_from
    from imgbuild.verbs.review.page import _thumbnail

    folder.mkdir(parents=True, exist_ok=True)
    picks = []
    with open_cache(project) as cache:
        for name, record in waiting.items():
            shown = []
            for i, c in enumerate(record["candidates"], 1):
                found = cache.get(str(c.get("key")))
                data = found[0][0] if found is not None else None
                ok = data is not None and hashlib.sha256(data).hexdigest() == c.get("sha256")
                picture = _thumbnail(data, folder, str(c["sha256"])[:32]) if ok and data is not None else None
                shown.append({"pick": i, "seed": c.get("seed"), "sha256": c.get("sha256"),
                              "short": str(c.get("sha256"))[:12], "command": _command(name, i),
                              **(picture or {"thumb": None})})
            slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-").lower() or "target"
            made = made_from(record, images, folder, _thumbnail) if images is not None else []
            picks.append({"name": name, "id": f"p-{slug}", "candidates": shown, "inputs": made})
    return picks


def _command(name: str, pick: int) -> str:
    quoted = name if re.fullmatch(r"[A-Za-z0-9_./-]+", name) else "'" + name.replace("'", "'\\''") + "'"
    return f"imgbuild accept {quoted} --pick {pick}"
