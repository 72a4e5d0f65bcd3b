"""`imgbuild accept` and `imgbuild reject`: pin one candidate of a pending target, or ask for
new ones. Accept writes the output from the cache (never a provider call), records the pick in
the lock (`picked_from`, `base_key`, the original's sha256) and then runs the build for those
targets, which derives their web variants and rewrites the manifest."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from imgbuild.errors import ImgbuildError, UsageError
from imgbuild.plan.candidates import pin_of, with_seed
from imgbuild.plan.states import generation_key
from imgbuild.store import lockfile
from imgbuild.verbs.common import Where, adopt, hold_unpicked, load, named, open_cache, project_lock
from imgbuild.verbs.results import BuildResult, DataResult, Row


@dataclass(frozen=True)
class Choice:
    pick: int | None = None  # 1-based
    digest: str | None = None  # a prefix of the candidate's sha256
    all_first: bool = False


def accept(where: Where, sink: Any, patterns: tuple[str, ...], choice: Choice) -> BuildResult | DataResult:
    with project_lock(where, sink.notice, False):
        project, targets = load(where)
        lock = lockfile.read(project.lock_path)
        targets = adopt(targets, lock)
        chosen = _pending(named(targets, patterns) if patterns else targets, lock, strict=bool(patterns))
        if not chosen:
            raise UsageError("no target is pending: nothing to accept")
        if choice.pick is None and choice.digest is None and not choice.all_first:
            with open_cache(project) as cache:
                return listing(chosen, lock, cache, project.state_dir / "candidates")
        accepted: list[Row] = []
        unpicked: dict[str, dict[str, str]] = {}
        keyed = _keyed(project, targets, lock) if any(t.inputs for t in chosen) else {}
        with open_cache(project) as cache:
            for target in chosen:
                if target.name in keyed:
                    target = replace(target, request=keyed[target.name])
                accepted.extend(_accept_one(project, target, lock, cache, choice, unpicked))
            lockfile.write(project.lock_path, lock)
            picked = {lock.outputs[o]["key"] for t in chosen for o in t.outputs if o in lock.outputs}
            hold_unpicked(cache, unpicked, picked, sink.notice)
        from imgbuild.verbs.build import BuildOptions, _build

        # derivatives and the manifest, exactly as a build makes them (no generation: every
        # accepted target is now pinned and its output written)
        names = tuple(t.name for t in chosen)
        result = _build(where, sink, BuildOptions(patterns=names, provider="placeholder"))
        assert isinstance(result, BuildResult)
        result.command = "accept"
        result.changed = accepted + [r for r in result.changed if r.status != "pending"]
        result.nothing_to_do = False
        return result


def _keyed(project: Any, targets: list[Any], lock: lockfile.Lock) -> dict[str, Any]:
    """The requests of targets that read images, with the identities of those images as they
    are now (offline: an input that changed since the candidates were made makes them stale)."""
    from imgbuild.plan.states import make_plan

    copy = lockfile.Lock(dict(lock.outputs))  # planning may drop a shared lock's other entries
    copy.pending = dict(lock.pending)
    plan = make_plan(targets, copy, project.output_dir, provider="placeholder", provider_draft=True,
                     cache=None, root=project.root)
    return plan.requests


def _pending(targets: list[Any], lock: lockfile.Lock, strict: bool) -> list[Any]:
    chosen = []
    for t in targets:
        if t.candidates > 1 and lock.pending.get(t.name, {}).get("candidates"):
            chosen.append(t)
        elif strict:
            why = ("it has no `candidates:`" if t.candidates == 1 else
                   "it has no candidates yet: run `imgbuild build` first" if pin_of(t, lock.get(t.outputs[0])) is None
                   else "its pick is already accepted")
            raise UsageError(f"{t.name} is not pending: {why}")
    return chosen


def _candidate(name: str, record: dict[str, Any], choice: Choice) -> tuple[int, dict[str, Any]]:
    candidates = record["candidates"]
    if choice.all_first:
        return 1, candidates[0]
    if choice.pick is not None:
        if not 1 <= choice.pick <= len(candidates):
            raise UsageError(f"{name}: --pick {choice.pick} is out of range (1..{len(candidates)})")
        return choice.pick, candidates[choice.pick - 1]
    prefix = (choice.digest or "").lower()
    hits = [(i, c) for i, c in enumerate(candidates, 1) if str(c.get("sha256", "")).startswith(prefix)]
    if len(hits) != 1:
        raise UsageError(f"{name}: --digest {prefix} matches {len(hits)} of its candidates (need exactly 1)")
    return hits[0]


def _accept_one(project: Any, target: Any, lock: lockfile.Lock, cache: Any, choice: Choice,
                unpicked: dict[str, dict[str, str]]) -> list[Row]:
    """Pin one candidate; note in `unpicked` the others and the pick this one replaces."""
    from imgbuild.store.outputs import write_target

    record = lock.pending[target.name]
    if record.get("base_key") != generation_key(str(record.get("provider", "")), target.request):
        raise UsageError(f"{target.name}: its spec or an image it reads changed since these candidates were made; "
                         "run `imgbuild build` for new ones")
    number, cand = _candidate(target.name, record, choice)
    found = cache.get(cand["key"])
    if found is None or hashlib.sha256(found[0][0]).hexdigest() != cand["sha256"]:
        raise ImgbuildError(f"{target.name}: candidate {number} (sha256 {cand['sha256'][:12]}) is not in "
                            "the image cache; run `imgbuild build` to make the candidates again")
    images, meta = found
    picked = with_seed(target, int(cand["seed"]))
    k = len(record["candidates"])
    note = {"target": target.name, "project": str(project.root)}
    for old in (lock.outputs.get(o) for o in target.outputs):
        if old and old.get("key") != cand["key"]:
            unpicked[old["key"]] = {**note, "reason": "replaced by a pick"}
    for i, other in enumerate(record["candidates"], 1):
        if i != number:
            unpicked[other["key"]] = {**note, "reason": "not picked"}
    entries = write_target(project.output_dir, picked, images[:1], cand["key"], record["provider"], meta)
    for entry in entries.values():
        entry.update(picked_from=k, base_key=record["base_key"], original=cand["sha256"],
                     candidate_seeds=[int(c["seed"]) for c in record["candidates"]])
    lock.outputs.update(entries)
    rejected = record.get("rejected")
    if rejected:  # still never asked for again, should the pick be rejected later
        lock.pending[target.name] = {"rejected": rejected}
    else:
        del lock.pending[target.name]
    return [Row(target.name, o, "accepted", f"candidate {number} of {k} (seed {cand['seed']}, "
                                            f"sha256 {cand['sha256'][:12]})") for o in entries]


def listing(targets: list[Any], lock: lockfile.Lock, cache: Any, folder: Any) -> DataResult:
    """What `accept TARGET` without a choice shows: each candidate, a copy of its original to
    look at (.imgbuild/candidates/NAME/N.png, local and disposable) and the command to pick it."""
    from imgbuild.store.atomic import atomic_write_bytes

    rows = []
    for t in targets:
        for i, c in enumerate(lock.pending[t.name]["candidates"], 1):
            found = cache.get(c["key"])
            path = None
            if found is not None and hashlib.sha256(found[0][0]).hexdigest() == c["sha256"]:
                dest = folder / t.name.replace("/", "_") / f"{i}.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(dest, found[0][0])
                path = str(dest)
            rows.append({"name": t.name, "pick": i, "seed": c["seed"], "sha256": c["sha256"], "key": c["key"],
                         "file": path, "command": f"imgbuild accept {t.name} --pick {i}"})
    return DataResult("accept-list", {"candidates": rows}, exit_code=2)


def reject(where: Where, sink: Any, patterns: tuple[str, ...]) -> DataResult:
    """Forget the candidates (or the accepted pick) of each target: the next build asks for k
    new seeds, never one of those seen before."""
    with project_lock(where, sink.notice, False):
        project, targets = load(where)
        lock = lockfile.read(project.lock_path)
        targets = adopt(targets, lock)
        done = []
        unwanted: dict[str, dict[str, str]] = {}  # for `cache prune`: when and why
        for t in named(targets, patterns):
            if t.candidates == 1:
                raise UsageError(f"{t.name} has no `candidates:`: nothing to reject")
            record = lock.pending.get(t.name, {})
            seen = {int(s) for s in record.get("rejected", [])}
            seen |= {int(c["seed"]) for c in record.get("candidates", [])}
            note = {"target": t.name, "project": str(project.root)}
            unwanted.update({c["key"]: {**note, "reason": "rejected"} for c in record.get("candidates", [])})
            for output in t.outputs:
                entry = lock.outputs.get(output)
                if entry and entry.get("picked_from"):
                    seen |= {int(entry["seed"]), *map(int, entry.get("candidate_seeds", []))}
                    lock.outputs[output] = {k: v for k, v in entry.items() if k not in ("picked_from", "base_key")}
                    unwanted[entry["key"]] = {**note, "reason": "pick rejected"}
            lock.pending[t.name] = {"rejected": sorted(seen), "k": t.candidates}
            done.append({"name": t.name, "rejected_seeds": sorted(seen)})
        lockfile.write(project.lock_path, lock)
        if unwanted:
            with open_cache(project) as cache:
                hold_unpicked(cache, unwanted, set(), sink.notice)
    return DataResult("reject", {"targets": done})

