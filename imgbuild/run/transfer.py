"""Moving paid originals between the local cache and the remote cache (`store.remote`):
fetching what a build or a pull needs before anyone pays, uploading what a build paid for,
pushing what a lock references. Many objects at once, in threads (obstore's calls release the
GIL); failures are data (`store.remote.Fault`, counted in `Remote.stats`); nothing prints.

Trust: the committed lock is the source of it. A target the lock pins (its entry has the
generation key being fetched) is restored only when the fetched original renders to exactly
the sha256 the lock records; anything else is reported and neither used nor cached locally.
When the lock also names each original's sha256, that object is fetched directly (one request
per original, no record): the name only chooses the object, the checks stay the same.
"""
from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from imgbuild.plan.states import GENERATE, Step, generation_key
from imgbuild.spec.types import Target
from imgbuild.store.lockfile import Lock
from imgbuild.store.outputs import render
from imgbuild.store.remote import IN_FLIGHT, Fault, Remote, RemoteConfig, RemoteError

REMOTE_JOBS = IN_FLIGHT  # objects asked for at once: as many as a Remote lets be in flight
VERIFIERS = 4  # threads beyond REMOTE_JOBS, checking originals while the requests go on
CACHE_WRITERS = 2  # threads putting verified originals into the local cache (measured: 1 < 2 ≈ 4)


@dataclass(frozen=True)
class Want:
    """One generation a build or pull would like from the remote."""

    key: str
    provider: str
    target: Target
    pinned: dict[str, str] = field(default_factory=dict)  # output -> sha256 the lock records
    # the sha256 of each original in slot order, when the lock names them all (older locks do
    # not; their originals are found through the remote's record): fetched as cas/sha256/<digest> directly, with `record` (what the lock
    # says of the generation) in place of the remote's record, which then need not be read
    originals: tuple[str, ...] = ()
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fetched:
    restored: list[Want] = field(default_factory=list)
    absent: list[Want] = field(default_factory=list)
    refused: list[tuple[Want, Fault]] = field(default_factory=list)  # found but not usable


def wants_for(steps: Iterable[Step], lock: Lock) -> list[Want]:
    """For every step that would call the provider: the key the lock pins (if the request is
    unchanged), then the key of the current provider. The first the remote has wins."""
    wants = []
    for step in steps:
        if step.action != GENERATE:
            continue
        target = step.target
        entries = [lock.get(o) for o in target.outputs]
        first = entries[0]
        if first and all(entries) and first.get("key") == generation_key(
                first.get("provider", ""), target.request):
            pins = {o: e["sha256"] for o, e in zip(target.outputs, entries) if e.get("key") == first["key"]}
            wants.append(Want(first["key"], first["provider"], target, pins, *_named_originals(target, entries)))
            if step.key == first["key"]:
                continue
        wants.append(Want(step.key, step.provider, target))
    return wants


def _named_originals(target: Target, entries: list[Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(digest of each original, the generation's record) from the lock entries of a target,
    when every one of its n outputs names its original under the same key; else ((), {})."""
    key, n = entries[0]["key"], target.request.n
    by_slot = {int(e.get("index", 1)): e for e in entries if e.get("key") == key and e.get("original")}
    if sorted(by_slot) != list(range(1, n + 1)):
        return (), {}
    first = by_slot[1]
    record: dict[str, Any] = {"provider": first["provider"], "request": first.get("request", {}),
                              "slots": list(range(1, n + 1))}
    record.update({k: first[k] for k in ("request_id", "task_id", "actual_prompt") if first.get(k)})
    return tuple(by_slot[i]["original"] for i in range(1, n + 1)), record


def fetch(remote: Remote, wants: list[Want], cache: Any, jobs: int = REMOTE_JOBS) -> Fetched:
    """Look up every wanted key (records by GET, never a bucket listing), verify what is found
    and put it into the local cache, where the plan finds it as any cached original."""
    result = Fetched()
    by_target: dict[str, list[Want]] = {}
    for want in wants:
        by_target.setdefault(want.target.name, []).append(want)

    def one(candidates: list[Want]) -> None:
        for want in candidates:  # stop at the first key found, usable or not reported
            if cache.complete(want.key, want.target.request.n):
                return
            outcome = _fetch_one(remote, want, writer)
            if outcome is None:
                result.absent.append(want)
                continue
            if isinstance(outcome, Fault):
                result.refused.append((want, outcome))
                continue
            result.restored.append(want)
            return

    with _CacheWriter(cache, jobs) as writer:
        # More threads than requests in flight (the remote bounds those): while some hash and
        # decode what arrived, the others keep the link busy.
        _each(one, list(by_target.values()), jobs + VERIFIERS)
    return result


class _CacheWriter:
    """A few threads put what the fetchers verified into the local cache. sqlite takes one
    writer at a time, and 16 fetch threads contending for it (sleeping in its busy handler)
    were slower than handing the writes to CACHE_WRITERS threads. The queue is bounded, so at
    most `jobs` generations wait in memory."""

    def __init__(self, cache: Any, jobs: int) -> None:
        self.cache = cache
        self.queue: queue.Queue[tuple[str, list[bytes], dict[str, Any]] | None] = queue.Queue(max(1, jobs))
        self.threads = [threading.Thread(target=self._run, name="imgbuild-cache-writer", daemon=True)
                        for _ in range(CACHE_WRITERS)]
        self.error: BaseException | None = None

    def __enter__(self) -> _CacheWriter:
        for thread in self.threads:
            thread.start()
        return self

    def put(self, key: str, images: list[bytes], record: dict[str, Any]) -> None:
        self.queue.put((key, images, record))

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    key, images, record = item
                    # the remote verified each original against its digest (the record's)
                    self.cache.put(key, images, record, record.pop("_digests"))
                except BaseException as e:  # re-raised in the caller's thread on exit
                    self.error = e

    def __exit__(self, *exc: object) -> None:
        for thread in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


def _fetch_one(remote: Remote, want: Want, writer: _CacheWriter) -> Fault | bool | None:
    """True when restored into the cache, None when absent, a Fault when refused."""
    n = want.target.request.n

    def accept(images: list[bytes], record: dict[str, Any]) -> str | None:
        if len(images) < n:
            return f"holds {len(images)} of the {n} images"
        return _against_lock(want, images, _local(record)) if want.pinned else None

    try:
        if want.originals:  # the lock names the digests: one GET per original, no record
            images = remote.fetch_by_digest(list(want.originals), want.record, accept)
            found = None if images is None else (images, {**want.record, "images": list(want.originals)})
        else:
            found = remote.fetch(want.key, accept)
    except RemoteError as e:
        return e.fault
    if found is None:
        return None
    images, record = found
    writer.put(want.key, images, {**_local(record), "_digests": list(record["images"])})
    return True


def _local(record: dict[str, Any]) -> dict[str, Any]:
    """A remote record as the local cache keeps it (the cache adds the digests itself)."""
    return {k: v for k, v in record.items() if k not in ("version", "key", "images")}


def _against_lock(want: Want, images: list[bytes], record: dict[str, Any]) -> str | None:
    for _, output, data in render(want.target, images, want.key, want.provider, record, record.get("slots")):
        pinned = want.pinned.get(output)
        if pinned is not None and hashlib.sha256(data).hexdigest() != pinned:
            return f"{output} would not have the sha256 the lock records"
    return None


def upload_hook(remote: Remote, config: RemoteConfig, provider: str) -> Callable[..., None] | None:
    """What the executor calls once a paid original is safe in the local cache (in its worker
    thread, before the target counts as built): upload it, unless this provider's images stay
    local. A failed upload is counted and the build goes on."""
    if not config.uploads(provider):
        return None

    def stored(key: str, images: list[bytes], record: dict[str, Any]) -> None:
        try:
            remote.upload(key, images, record)
        except RemoteError:
            pass  # recorded in remote.stats; the build says so in its closing line

    return stored


def push(remote: Remote, lock: Lock, cache: Any, jobs: int = REMOTE_JOBS) -> list[str]:
    """Upload every original the lock references that the remote lacks; returns the keys not in
    the local cache. Images of providers that stay local (placeholder drafts, an emulator) are
    skipped: which providers go up is the remote's setting, not the lock's draft flag."""
    keys = {}
    for entry in lock.outputs.values():
        if "key" in entry and remote.config.uploads(entry.get("provider", "")):
            keys[entry["key"]] = entry
    missing: list[str] = []

    def one(key: str) -> None:
        found = cache.get(key)
        if found is None:
            missing.append(key)
            return
        images, record = found
        try:
            remote.upload(key, images, record)
        except RemoteError:
            pass

    _each(one, sorted(keys), jobs)
    return sorted(missing)


def _each(fn: Callable[[Any], None], items: list[Any], jobs: int) -> None:
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(items)))) as pool:
        for _ in pool.map(fn, items):
            pass
