"""Targets with `candidates: k`: k originals to pick from, one pinned by `imgbuild accept`.

Seeds: candidate i (1-based) asks for the i-th seed of seed, seed+1, seed+2, … (mod 2**31) that
was never rejected for this target, where `seed` is the spec's seed or the one derived from the
name. Candidate 1 is therefore the image the target would get with `candidates: 1`.

The lock keeps, under `pending`, per target name: the key of the target's request with its own
seed (`base_key`), the provider, and each candidate's seed, generation key and the sha256 of its
original, plus every seed rejected so far. An accepted pick is an ordinary output entry with
`picked_from: k`, its seed and `base_key`: while the target's request keeps that base key the
pick is restored by its generation key (the cached bytes, never a new generation); when the
request changes the pin no longer applies and the target is pending again.

A pick made among drafts stands for drafts only: a provider that replaces drafts makes k new
candidates, and once they are recorded the draft pin no longer applies (check reports the target
pending, drafts allowed or not). A draft build never draws over recorded candidates another
provider made: it keeps them as they are while the cache holds them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from imgbuild.plan.states import (
    DRAFT,
    GENERATE,
    NOTHING,
    PENDING,
    CacheView,
    Step,
    explain_change,
    generation_key,
)
from imgbuild.spec.types import Target
from imgbuild.store.lockfile import is_draft

SEED_SPACE = 2**31
DRAFT_PROVIDER = "placeholder"  # its candidates never stand for real ones


def candidate_seeds(seed: int, k: int, rejected: Iterable[int] = ()) -> list[int]:
    """The first k seeds of seed, seed+1, … (mod 2**31) not in `rejected`."""
    skip = set(rejected)
    seeds: list[int] = []
    offset = 0
    while len(seeds) < k:
        s = (seed + offset) % SEED_SPACE
        if s not in skip:
            seeds.append(s)
        offset += 1
    return seeds


def with_seed(target: Target, seed: int) -> Target:
    return replace(target, request=replace(target.request, seed=seed))


def pin_of(target: Target, entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The accepted pick in `entry` when it still applies to the target's current request."""
    if not entry or not entry.get("picked_from") or "seed" not in entry:
        return None
    if entry.get("base_key") != generation_key(str(entry.get("provider", "")), _keyed(target, entry)):
        return None
    return entry


def _keyed(target: Target, recorded: dict[str, Any]) -> Any:
    """The target's request with the identities of its input images. The plan sets them (it
    hashes the graph in order); a target that comes without them (derivatives and the
    manifest follow the original the lock holds) takes those its entry recorded: whether an
    input changed since is the plan's row for the target, not this one's."""
    if not target.inputs or target.request.inputs:
        return target.request
    inputs = (recorded.get("request") or {}).get("inputs")
    if not isinstance(inputs, list):
        return target.request
    return replace(target.request, inputs=tuple(str(i) for i in inputs))


def adopt(targets: list[Target], lock: Any) -> list[Target]:
    """Targets that `build --candidates k` made pending or picked stay candidate targets while
    the lock says so, though the spec says candidates: 1 (else the pick would be regenerated)."""
    if not lock.pending and not any("picked_from" in e for e in lock.outputs.values()):
        return targets
    out = []
    for t in targets:
        k = t.candidates
        if k == 1:
            entry = lock.get(t.outputs[0]) or {}
            record = lock.pending.get(t.name, {})
            k = len(record.get("candidates", [])) or int(record.get("k") or entry.get("picked_from") or 1)
        out.append(replace(t, candidates=k) if k != t.candidates else t)
    return out


def pinned(targets: list[Target], lock: Any) -> list[Target]:
    """The targets as their outputs were made: an accepted pick carries its own seed (derivatives
    and their keys follow the picked original)."""
    out = []
    for t in targets:
        pin = pin_of(t, lock.get(t.outputs[0])) if t.candidates > 1 else None
        out.append(with_seed(t, int(pin["seed"])) if pin is not None else t)
    return out


def live_record(target: Target, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pending record when its k candidates are for the target's current request."""
    if not record or len(record.get("candidates", [])) != target.candidates:
        return None
    if record.get("base_key") != generation_key(str(record.get("provider", "")), target.request):
        return None
    return record


def candidate_steps(target: Target, lock: Any, provider: str, cache: CacheView | None,
                    plan_one: Callable[[Target], Step], provider_draft: bool = False) -> list[Step]:
    entry = lock.get(target.outputs[0])
    pin = pin_of(target, entry)
    record = live_record(target, lock.pending.get(target.name))
    reasons: list[str] = []
    if (pin is not None and is_draft(pin) and record is not None
            and record.get("provider") not in (pin.get("provider"), DRAFT_PROVIDER)):
        # A pick among drafts, and real candidates made since: the draft never stands for them.
        pin = None
        reasons = [f"the accepted pick is a draft by {entry.get('provider')}; the {record.get('provider')} "
                   "candidates wait for a pick"]
    if provider_draft and record is not None and record.get("provider") != provider:
        kept = recorded_steps(target, record, cache, reasons)
        if kept:  # drafts never replace candidates a real provider made (and were paid for)
            return kept
    if pin is not None:
        step = plan_one(with_seed(target, int(pin["seed"])))
        if step.state != DRAFT and (step.action != GENERATE or cache is None):
            return [step]
        if step.state == DRAFT:
            reasons = [f"the accepted pick is a draft; the {provider} provider makes new candidates"]
        else:  # pinned by digest: a new generation with that seed may give other bytes
            return [Step(step.target, PENDING, NOTHING, step.key, step.provider,
                         [f"the accepted original (sha256 {str(pin.get('original', ''))[:12]}) is not "
                          "in the cache: restore the cache, or `imgbuild reject` it for new candidates"],
                         candidate=0)]
    elif entry and entry.get("picked_from") and not reasons:
        reasons = explain_change(entry.get("request"), with_seed(target, int(entry.get("seed", 0))).request)
    k = target.candidates
    seeds = current_seeds(target, lock.pending.get(target.name), k)
    reasons = reasons + [f"pending: {k} candidates, run `imgbuild accept {target.name} --pick N`"]
    steps = []
    for i, seed in enumerate(seeds, 1):
        candidate = with_seed(target, seed)
        key = generation_key(provider, candidate.request)
        cached = cache is not None and cache.complete(key, 1)
        steps.append(Step(candidate, PENDING, NOTHING if cached else GENERATE, key, provider,
                          reasons + [f"candidate {i} of {k}: seed {seed}"
                                     + (" (in the cache)" if cached else "")], candidate=i))
    return steps


def recorded_steps(target: Target, record: dict[str, Any], cache: CacheView | None,
                   reasons: list[str]) -> list[Step]:
    """The recorded candidates as they are (none when the cache has lost one of them)."""
    k = len(record["candidates"])
    steps = []
    for i, c in enumerate(record["candidates"], 1):
        if cache is not None and not cache.complete(str(c["key"]), 1):
            return []
        steps.append(Step(with_seed(target, int(c["seed"])), PENDING, NOTHING, str(c["key"]),
                          str(record.get("provider", "")),
                          reasons + [f"pending: {k} candidates, run `imgbuild accept {target.name} --pick N`",
                                     f"candidate {i} of {k}: seed {c['seed']} (made by {record.get('provider')})"],
                          candidate=i))
    return steps


def current_seeds(target: Target, record: dict[str, Any] | None, k: int) -> list[int]:
    """The pending record's seeds while it is for this request and k; else fresh ones."""
    rejected = [int(s) for s in (record or {}).get("rejected", [])]
    if record and len(record.get("candidates", [])) == k and record.get("base_key") == \
            generation_key(str(record.get("provider", "")), target.request):
        return [int(c["seed"]) for c in record["candidates"]]
    return candidate_seeds(target.request.seed, k, rejected)


def record_pending(steps: list[Step], targets: list[Target], lock: Any, cache: Any) -> dict[str, str]:
    """Write `lock.pending` from the plan's candidate steps (those now in the cache), and drop
    the records of targets that are no longer pending (accepted, or without candidates), except
    for the seeds they rejected. Returns {generation key: target name} of the candidates no
    record names any more (new ones replaced them before any pick: `cache prune` keeps them
    a while)."""
    by_name: dict[str, list[Step]] = {}
    for step in steps:
        if step.state == PENDING and step.candidate:
            by_name.setdefault(step.target.name, []).append(step)
    own = {t.name: t for t in targets}  # a build of some targets leaves the others' records
    before = {str(c["key"]): name for name, r in lock.pending.items() if name in own
              for c in r.get("candidates", [])}
    for name in [n for n in lock.pending if n in own and n not in by_name]:
        rejected = lock.pending[name].get("rejected")
        if rejected:
            lock.pending[name] = {"rejected": rejected}  # a pick was accepted: its k is in the entry
        else:
            del lock.pending[name]
    for name, group in by_name.items():
        found = []
        for step in group:
            got = cache.digests(step.key)
            if got:
                found.append({"seed": step.target.request.seed, "key": step.key, "sha256": got[0]})
        old = lock.pending.get(name, {})
        provider = group[0].provider
        # the plan's request (with the identities of the images it reads), at the target's seed
        request = replace(group[0].target.request, seed=own[name].request.seed)
        lock.pending[name] = {
            "provider": provider,
            "base_key": generation_key(provider, request),
            "request": request.pixel_fields(),
            "candidates": found,
            **({"rejected": old["rejected"]} if old.get("rejected") else {}),
        }
    named = {str(c["key"]) for r in lock.pending.values() for c in r.get("candidates", [])}
    return {key: name for key, name in before.items() if key not in named}
