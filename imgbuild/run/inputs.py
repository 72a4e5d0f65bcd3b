"""The images an edit reads, for one step: wait until the targets it reads are done, then
attach their bytes (as data URIs) to the request the provider sends. Never uploads anything
anywhere but in that request, and never re-encodes: an image over the model's limits is
refused with the limit."""
from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from pathlib import Path
from typing import Any

from imgbuild.errors import Failure
from imgbuild.plan.states import Step
from imgbuild.spec import catalogue, graph

INPUT_FAILED = "InputFailed"  # a target this one reads failed or was skipped
INPUT_UNAVAILABLE = "InputUnavailable"  # an input's image cannot be read or is refused

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class Board:
    """Which targets of this run are done, and how: dependants wait on it."""

    def __init__(self, steps: list[Step]) -> None:
        # an event only for the targets some step of this run reads: one for every step, made
        # up front, cost ~0.9 KB per target (with its entries), as much as its lock entry
        read = {src.ref for s in steps for src in s.sources if src.kind == graph.TARGET}
        self._done = {s.target.name: asyncio.Event() for s in steps if s.target.name in read}
        self._status: dict[str, str] = {}

    def finish(self, step: Step, status: str) -> None:
        event = self._done.get(step.target.name)
        if event is not None:
            self._status[step.target.name] = status
            event.set()

    async def wait(self, step: Step) -> Failure | None:
        """None once every target input of `step` is built or restored (or was never part of
        this run: up to date); else why `step` cannot run."""
        for source in step.sources:
            event = self._done.get(source.ref) if source.kind == graph.TARGET else None
            if event is None:
                continue
            await event.wait()
            status = self._status[source.ref]
            if status not in ("built", "restored"):
                return Failure(INPUT_FAILED, f"input {source.ref} {status}", where=step.target.where)
        return None


def attach(step: Step, cache: Any, root: Path | None) -> Failure | None:
    """Give `step`'s request its input images (in place: the executor tracks steps by
    identity), or say why they cannot be sent."""
    if not step.sources:
        return None
    model = catalogue.get(step.target.request.model)
    rule = model.input_rule if model is not None else None
    uris = []
    for source in step.sources:
        data = _read(source, cache, root)
        if data is None:
            return Failure(INPUT_UNAVAILABLE, f"input {source.ref} is not available (build it "
                           "first, or check the file)", where=step.target.where)
        why = graph.input_problem(rule, data) if rule is not None else None
        if why:
            return Failure(INPUT_UNAVAILABLE, f"input {source.ref} {why} by {model.name}",
                           where=step.target.where)
        fmt = graph.image_format(data) or "PNG"
        uris.append(f"data:{_MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}")
    request = replace(step.target.request, images=tuple(uris))
    step.target = replace(step.target, request=request)
    return None


def _read(source: Any, cache: Any, root: Path | None) -> bytes | None:
    if source.kind == graph.TARGET:
        found = cache.get(source.key)
        return found[0][0] if found and found[0] else None  # the first original of that key
    if root is None:
        return None
    try:
        return (root / source.ref).read_bytes()
    except OSError:
        return None
