"""Decide, for every target, whether it is up to date and what to do if not — and say why.

A target's *generation key* is sha256 over a canonical JSON of everything that changes its
pixels (provider identity, model, rendered prompts, size, n, seed, prompt_extend, watermark)
plus a format salt. The lock remembers the key each output was made with; comparing keys is
the whole staleness test, and the lock's copy of the rendered request explains the change.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import operator
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol

from imgbuild.store import gcpause
from imgbuild.store.atomic import sha256_file
from imgbuild.store.lockfile import Lock, is_draft
from imgbuild.errors import ImgbuildError
from imgbuild.spec import graph
from imgbuild.spec.types import PIXEL_FIELDS, Input, Request, Target

KEY_VERSION = "imgbuild-key-1"

UP_TO_DATE = "up_to_date"
NEW = "new"
CHANGED = "changed"
MISSING = "missing"
MODIFIED = "modified"
DRAFT = "draft"
PENDING = "pending"  # a target with candidates and no accepted pick (see plan.candidates)

RESTORE = "restore"
GENERATE = "generate"
NOTHING = "none"


_pixels = operator.attrgetter(*PIXEL_FIELDS)  # C-speed: 10k keys on every no-op build
# json.dumps makes a new encoder on every call that passes options: half the cost of a key
_canonical = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def generation_key(provider: str, request: Request) -> str:
    """sha256 of a canonical JSON array: a fixed field order makes it canonical without
    sort_keys, and lets the C encoder do it (10k keys in ~30 ms)."""
    doc = [KEY_VERSION, provider, *_pixels(request)]
    if request.inputs:  # only then: targets without inputs keep the keys they always had
        doc.append(list(request.inputs))
    canonical = _canonical(doc)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CacheView(Protocol):
    trusted: bool  # False: may only restore what the lock vouches for, hash for hash
    evicted: dict[str, str]  # key -> why its entry was removed while planning

    def complete(self, key: str, n: int) -> bool: ...


_EMPTY: Mapping[str, str] = MappingProxyType({})
_NOT_BUILT = ("not built yet",)


@dataclass(slots=True)
class Step:
    target: Target
    state: str
    action: str
    key: str  # the key the outputs will have (or have, when up to date)
    provider: str  # provider identity behind `key`
    reasons: Sequence[str] = ()  # read only: steps share the common ones
    draft: bool = False  # the current outputs are drafts (the placeholder's, an emulator's)
    # The three below are empty for nearly every step: one shared read-only empty each instead
    # of a new dict or list per step (~180 bytes of every target a build holds to its end).
    damage: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # output -> MISSING | MODIFIED
    locked: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # output -> sha256 the lock records
    candidate: int = 0  # 1-based candidate number of a pending target; 0 for an ordinary step
    sources: Sequence[Source] = ()  # the images an edit reads


@dataclass(frozen=True, slots=True)
class Source:
    """One input image of a step. For a target input, `key` is the generation key of the
    target it reads and the image is that target's first original from the cache (the bytes
    the service made, not the output file with its metadata); for a file, `key` is the sha256
    of its bytes. Both are known before anything runs, so a plan prices and keys a whole chain
    at once, and `check` needs nothing but the files."""

    kind: str  # graph.TARGET | graph.FILE
    ref: str  # target name, or path relative to the project root
    key: str

    @property
    def identity(self) -> str:
        return f"{self.ref}@{'key' if self.kind == graph.TARGET else 'sha256'}:{self.key}"


class Work:
    """The plan as a build runs it, sorted as make_plan makes each step (its `into`): what to
    generate or restore (`todo`: past the first `keep` steps they wait on disk in `folder`,
    store/spool.py, and the executor takes each out as it starts it), what is up to date
    (`fresh`, for the summary), what waits for a pick (`waiting`, for the lock's records)."""

    def __init__(self, folder: Path | None, keep: int) -> None:
        from imgbuild.store.spool import Spool

        self.todo: Spool[Step] = Spool(folder, _encode_step, _step_decoder(), keep)
        self.fresh: list[Step] = []
        self.waiting: list[Step] = []
        self.orphans: list[str] = []

    def append(self, step: Step) -> None:
        if step.action != NOTHING:
            self.todo.append(step)
        elif step.state != PENDING:
            self.fresh.append(step)
        if step.state == PENDING:  # a candidate to generate is in both
            self.waiting.append(step)

    def extend(self, steps: Iterable[Step]) -> None:
        for step in steps:
            self.append(step)


_SHARED_REASONS = 64  # distinct reasons shared by a spool's steps read back (the first ones seen)


def _encode_step(s: Step) -> bytes:
    t = s.target
    return _canonical([t.to_row(t.file), s.state, s.action, s.key, s.provider, list(s.reasons), s.draft,
                       dict(s.damage), dict(s.locked), s.candidate,
                       [[x.kind, x.ref, x.key] for x in s.sources]]).encode("utf-8")


def _step_decoder() -> Callable[[bytes], Step]:
    # Steps share their common reasons (read only: "not built yet" for 50k new targets), so
    # the summary rows made from them do too; a reason of its own (a diff) is not kept.
    reasons: dict[tuple[str, ...], tuple[str, ...]] = {}

    def decode(data: bytes) -> Step:
        row = json.loads(data)
        why = tuple(row[5])
        why = reasons.setdefault(why, why) if len(reasons) < _SHARED_REASONS else reasons.get(why, why)
        return Step(Target.from_row(row[0], row[0][3]), row[1], row[2], row[3], row[4], why,
                    row[6], row[7] or _EMPTY, row[8] or _EMPTY, row[9], tuple(Source(*x) for x in row[10]))

    return decode


@dataclass
class Plan:
    steps: list[Step]  # or the `into` make_plan was given
    orphans: list[str]  # lock entries no spec produces any more
    # name -> the request of each target that reads images, with their identities (so its key
    # as the plan computed it): what `accept` compares a pending record with
    requests: dict[str, Request] = field(default_factory=dict)

    def count(self, *states: str) -> int:
        return sum(1 for s in self.steps if s.state in states)


Hasher = Callable[[str], "str | None"]


def make_plan(targets: list[Target], lock: Lock, output_dir: Path, *, provider: str,
              provider_draft: bool, cache: CacheView | None, force: bool = False,
              hasher: Hasher = sha256_file, root: Path | None = None, into: Any = None) -> Plan:
    """Steps, inputs before the targets that read them. `root` (the project root) is needed
    only when a target reads a repository file. The steps are appended to `into` when given
    (a build sorts them as they come, its steps to run waiting on disk), else to a list."""
    with gcpause.paused():  # a step per target, no cycles (store/gcpause.py)
        return _make_plan(targets, lock, output_dir, provider=provider, provider_draft=provider_draft,
                          cache=cache, force=force, hasher=hasher, root=root,
                          steps=[] if into is None else into)


def _make_plan(targets: list[Target], lock: Lock, output_dir: Path, *, provider: str,
               provider_draft: bool, cache: CacheView | None, force: bool, hasher: Hasher,
               root: Path | None, steps: Any) -> Plan:
    requests: dict[str, Request] = {}
    if not any(t.inputs for t in targets):  # the common case: no graph, no reordering
        later = []  # targets with candidates: their steps come after the others', as they always did
        for t in targets:
            if t.candidates == 1:
                steps.append(_step(t, lock, output_dir, provider, provider_draft, cache, force, hasher))
            else:
                later.append(t)
        for t in later:
            steps.extend(_candidates(t, lock, output_dir, provider, provider_draft, cache, force, hasher))
    else:
        steps.extend(_graph_steps(targets, lock, output_dir, provider, provider_draft, cache, force,
                                  hasher, root or output_dir, requests))
    orphans: list[str] = []
    if lock.outputs:  # else nothing is orphaned: not a pass over every target's outputs
        produced = {o for t in targets for o in (*t.outputs, *(v.output for v in t.variants))}
        if lock.adopted_from is not None:  # the shared lock's other entries are other files'
            for other in [o for o in lock.outputs if o not in produced]:
                del lock.outputs[other]
        orphans = sorted(o for o in lock.outputs if o not in produced)
    return Plan(steps, orphans, requests)


def _candidates(target: Target, lock: Lock, output_dir: Path, provider: str, provider_draft: bool,
                cache: CacheView | None, force: bool, hasher: Hasher) -> list[Step]:
    from imgbuild.plan.candidates import candidate_steps

    def one(t: Target) -> Step:
        return _step(t, lock, output_dir, provider, provider_draft, cache, force, hasher)

    return candidate_steps(target, lock, provider, cache, one, provider_draft)


def _graph_steps(targets: list[Target], lock: Lock, output_dir: Path, provider: str,
                 provider_draft: bool, cache: CacheView | None, force: bool, hasher: Hasher,
                 root: Path, requests: dict[str, Request]) -> list[Step]:
    """Each target after its inputs, its request carrying their identities (so its key). A
    target with candidates is read by its dependants only once a pick is accepted: until then
    they are pending too (its key, the pick's, is not known), never built from candidate 1."""
    keys: dict[str, str] = {}  # name -> the key its dependants read
    waits: dict[str, Step] = {}  # name -> the pending step of the candidate target it waits for
    steps = []
    for target in graph.topological(targets):
        waiting = [waits[i.ref] for i in target.inputs if i.kind == graph.TARGET and i.ref in waits]
        sources = [] if waiting else [_source(i, keys, hasher, root) for i in target.inputs]
        if sources:
            request = replace(target.request, inputs=tuple(s.identity for s in sources))
            target = replace(target, request=request)
            requests[target.name] = request
        if waiting:
            steps.append(_waiting(target, waiting[0]))
            waits[target.name] = waiting[0]
            continue
        if target.candidates > 1:
            made = _candidates(target, lock, output_dir, provider, provider_draft, cache, force, hasher)
        else:
            made = [_step(target, lock, output_dir, provider, provider_draft, cache, force, hasher)]
        for step in made:
            step.sources = sources
        steps += made
        if made[0].state == PENDING:
            waits[target.name] = made[0]
        else:
            keys[target.name] = made[0].key
    return steps


def _waiting(target: Target, pending: Step) -> Step:
    """A target that reads (directly or not) a target still waiting for a pick."""
    ref = pending.target.name
    why = (f"is waiting for a pick (`imgbuild accept {ref} --pick N`)" if pending.candidate else
           "is pending (its accepted pick is not in the cache)")
    return Step(target, PENDING, NOTHING, "", "", [
        f"pending: input {ref} {why}; built from the accepted image after that"])


def _source(item: Input, keys: dict[str, str], hasher: Hasher, root: Path) -> Source:
    if item.kind == graph.TARGET:
        return Source(item.kind, item.ref, keys.get(item.ref, "unknown"))
    digest = hasher(str(root / item.ref))
    if digest is None:
        raise ImgbuildError(f"input file {item.ref} is gone (it existed when the specs were read)")
    return Source(item.kind, item.ref, digest)


def _step(target: Target, lock: Lock, output_dir: Path, provider: str, provider_draft: bool,
          cache: CacheView | None, force: bool, hasher: Hasher) -> Step:
    request = target.request
    entries = [lock.get(o) for o in target.outputs]
    first = entries[0]
    if first is None or any(e is None for e in entries) or len({e["key"] for e in entries if e}) != 1:
        state = CHANGED if any(entries) else NEW
        reasons = _NOT_BUILT if state == NEW else [_partial_reason(target, entries)]
        return _todo(target, state, reasons, generation_key(provider, request), provider, cache)
    locked_provider = first.get("provider", "")
    key_locked = generation_key(locked_provider, request)
    # a no-op run hashes each request once: the current provider is usually the locked one
    key_now = key_locked if locked_provider == provider else generation_key(provider, request)
    if first["key"] != key_locked:
        reasons = explain_change(first.get("request"), request) + _pin_seed_hint(target, first)
        return _todo(target, CHANGED, reasons, key_now, provider, cache)
    draft = is_draft(first)
    # A draft is replaced by any other provider that is not the placeholder: the emulator's
    # images replace placeholder drafts, and the production service replaces both.
    if draft and not provider_draft and provider != locked_provider:
        reasons = [f"draft made by {locked_provider or 'an unknown provider'}; "
                   f"the {provider} provider makes the real image"]
        return _todo(target, DRAFT, reasons, key_now, provider, cache, draft=True)
    damage = _file_damage(target, entries, output_dir, hasher)
    if not damage and not force:
        return Step(target, UP_TO_DATE, NOTHING, key_locked, locked_provider, (), draft)
    if not damage:
        state, reasons = CHANGED, ["--force"]
    else:
        state = MISSING if MISSING in damage.values() else MODIFIED
        reasons = [f"{o} {'is missing' if d == MISSING else 'was modified (sha256 differs from the lock)'}"
                   for o, d in damage.items()]
    if cache is not None and cache.complete(key_locked, request.n):
        locked = {o: str(e.get("sha256")) for o, e in zip(target.outputs, entries)}
        return Step(target, state, RESTORE, key_locked, locked_provider,
                    reasons + ["restoring from the cache"], draft, damage, locked)
    reasons = reasons + [_miss_reason(cache, key_locked)]
    return Step(target, state, GENERATE, key_now, provider, reasons, provider_draft, damage)


def _pin_seed_hint(target: Target, entry: dict[str, Any]) -> list[str]:
    """A rename alone changes a seed derived from the name: say how to keep the image."""
    before = (entry.get("request") or {}).get("seed")
    if not target.seed_derived or before is None or before == target.request.seed:
        return []
    if entry.get("name") == target.name:
        return []
    return [f"hint: the seed comes from the name, which changed from {entry.get('name')!r}: "
            f"pin `seed: {before}` in the spec to keep the image"]


def _miss_reason(cache: CacheView | None, key: str) -> str:
    if cache is not None and key in cache.evicted:
        return "the cached original was damaged (removed from the cache): generating it again"
    return "original not in the cache: generating again"


def _partial_reason(target: Target, entries: list[Any]) -> str:
    have = [e for e in entries if e]
    if all(e.get("key") == generation_key(e.get("provider", ""), target.request) for e in have):
        # Same request, fewer outputs: an earlier build got only some of the n images.
        return (f"only {len(have)} of {target.request.n} images were built "
                "(the others failed last time)")
    return "outputs added (n changed)"


def _todo(target: Target, state: str, reasons: Sequence[str], key: str, provider: str,
          cache: CacheView | None, *, draft: bool = False) -> Step:
    # An untrusted cache never supplies the image of a request the lock has no hash for.
    usable = cache is not None and cache.trusted
    action = RESTORE if usable and cache.complete(key, target.request.n) else GENERATE  # type: ignore[union-attr]
    if action == RESTORE:
        reasons = [*reasons, "in the cache: restoring without a provider call"]
    elif cache is not None and key in cache.evicted:
        reasons = [*reasons, "the cached original was damaged (removed from the cache)"]
    return Step(target, state, action, key, provider, reasons, draft)


def _file_damage(target: Target, entries: list[Any], output_dir: Path, hasher: Hasher) -> dict[str, str]:
    damage = {}
    base = str(output_dir)
    for output, entry in zip(target.outputs, entries):
        digest = hasher(os.path.join(base, output))  # str, not Path: 10k Path joins cost ~50 ms
        if digest is None:
            damage[output] = MISSING
        elif digest != entry.get("sha256"):
            damage[output] = MODIFIED
    return damage


def explain_change(old: Any, new: Request) -> list[str]:
    """Field-level reasons, with a word diff of rendered prompts."""
    if not isinstance(old, dict):
        return ["the lock has no record of the previous request"]
    reasons = []
    fields = new.pixel_fields()
    for name, value in fields.items():
        before = old.get(name)
        if before == value:
            continue
        if name == "inputs":
            reasons += input_changes(before, value)
        elif name in ("prompt", "negative_prompt") and isinstance(before, str):
            reasons.append(f"{name}: {word_diff(before, str(value))}")
        else:
            reasons.append(f"{name}: {json.dumps(before)} -> {json.dumps(value)}")
    if not reasons:
        reasons.append("the key format changed (a newer imgbuild); the request itself is the same")
    return reasons


def input_changes(before: Any, now: list[str]) -> list[str]:
    """`input hero changed` per input whose identity moved (see plan/graph.py for the form)."""
    old = before if isinstance(before, list) else []
    said = [f"input {i.split('@', 1)[0]} changed" for i in now if i not in old]
    return said or ["inputs: the list of inputs changed"]


def word_diff(old: str, new: str, context: int = 3) -> str:
    """`a photo of a [-red-] {+blue+} car` — changed words marked, long equal runs elided."""
    a, b = old.split(), new.split()
    parts: list[str] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    ops = matcher.get_opcodes()
    for i, (op, i1, i2, j1, j2) in enumerate(ops):
        if op == "equal":
            seg = a[i1:i2]
            head = seg[:context] if i > 0 else []
            tail = seg[-context:] if i < len(ops) - 1 else []
            if len(seg) > 2 * context:
                parts.extend([*head, "…", *tail] if head or tail else ["…"])
            else:
                parts.extend(seg)
            continue
        if i2 > i1:
            parts.append("[-" + " ".join(a[i1:i2]) + "-]")
        if j2 > j1:
            parts.append("{+" + " ".join(b[j1:j2]) + "+}")
    return " ".join(parts)
