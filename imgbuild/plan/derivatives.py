"""Plan and run the derivative step: which variants are stale, and deriving them from the
cached original (or, without a cache, from the original output on disk after checking its hash).
Runs after generation, locally, in threads; never calls a provider."""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgbuild.images.derive import Variant, derive
from imgbuild.spec.expand import Target
from imgbuild.store.atomic import atomic_write_bytes
from imgbuild.store.lockfile import Lock
from imgbuild.store.outputs import safe_destination
from imgbuild.plan.states import generation_key

UP_TO_DATE, NEW, CHANGED, MISSING, MODIFIED, WAITING = (
    "up_to_date", "new", "changed", "missing", "modified", "waiting")


@dataclass
class VariantStep:
    target: Target
    variant: Variant
    state: str
    reason: str
    source_key: str | None  # None while the source itself is stale (WAITING)


def plan_variants(targets: list[Target], lock: Lock, output_dir: Path,
                  hasher: Callable[[str], str | None]) -> list[VariantStep]:
    steps = []
    base = str(output_dir)
    for target in targets:
        for v in target.variants:
            source = lock.get(v.source)
            source_key = source.get("key") if source else None
            fresh_source = (source is not None and source_key ==
                            generation_key(source.get("provider", ""), target.request))
            if not fresh_source:
                steps.append(VariantStep(target, v, WAITING, f"its source {v.source} is not built yet", None))
                continue
            key = v.key(str(source_key))
            entry = lock.get(v.output)
            if entry is None:
                steps.append(VariantStep(target, v, NEW, "not derived yet", source_key))
            elif entry.get("key") != key:
                steps.append(VariantStep(target, v, CHANGED, "source or derivation options changed", source_key))
            else:
                digest = hasher(os.path.join(base, v.output))
                if digest is None:
                    steps.append(VariantStep(target, v, MISSING, f"{v.output} is missing", source_key))
                elif digest != entry.get("sha256"):
                    steps.append(VariantStep(target, v, MODIFIED, f"{v.output} was modified", source_key))
                else:
                    steps.append(VariantStep(target, v, UP_TO_DATE, "", source_key))
    return steps


@dataclass
class VariantOutcome:
    step: VariantStep
    entry: dict[str, Any] | None
    error: str | None = None


def run(steps: list[VariantStep], lock: Lock, output_dir: Path, cache: Any, jobs: int,
        on_outcome: Callable[[VariantOutcome], None]) -> list[VariantOutcome]:
    """Derive every step whose source is fresh; sources are read once per original."""
    todo = [s for s in steps if s.state not in (UP_TO_DATE, WAITING)]
    sources: dict[str, bytes | None] = {}

    def source_bytes(step: VariantStep) -> bytes | None:
        v = step.variant
        if v.source not in sources:
            sources[v.source] = _load_source(step, lock, output_dir, cache)
        return sources[v.source]

    def one(step: VariantStep) -> VariantOutcome:
        try:
            original = source_bytes(step)
            if original is None:
                return VariantOutcome(step, None, f"the original of {step.variant.source} is neither in the cache "
                                      "nor intact on disk; run `imgbuild build` for it first")
            entry = _write(step, original, lock, output_dir)
            return VariantOutcome(step, entry)
        except OSError as e:
            return VariantOutcome(step, None, f"cannot write {step.variant.output}: {e}")
        except Exception as e:  # a decoder/encoder error is this variant's failure, not a crash
            return VariantOutcome(step, None, f"cannot derive {step.variant.output}: {type(e).__name__}: {e}")

    # load each source once, up front, so threads never race to read the same original
    for step in todo:
        source_bytes(step)
    outcomes = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for outcome in pool.map(one, todo):
            if outcome.entry is not None:
                lock.outputs[outcome.step.variant.output] = outcome.entry
            outcomes.append(outcome)
            on_outcome(outcome)
    return outcomes


def _load_source(step: VariantStep, lock: Lock, output_dir: Path, cache: Any) -> bytes | None:
    v = step.variant
    index = step.target.outputs.index(v.source)
    if cache is not None and step.source_key:
        found = cache.get(step.source_key)
        if found is not None and len(found[0]) > index:
            return found[0][index]  # the provider's own bytes: better than a re-encoded output
    entry = lock.get(v.source) or {}
    try:
        data = safe_destination(output_dir, v.source).read_bytes()
    except OSError:
        return None
    import hashlib

    return data if hashlib.sha256(data).hexdigest() == entry.get("sha256") else None


def _write(step: VariantStep, original: bytes, lock: Lock, output_dir: Path) -> dict[str, Any]:
    v, target = step.variant, step.target
    source_entry = lock.get(v.source) or {}
    meta: dict[str, Any] = {"name": target.name, "key": str(step.source_key),
                            "provider": source_entry.get("provider", ""), **target.request.pixel_fields(),
                            "derived_from": v.source}
    for extra in ("request_id", "actual_prompt"):
        if source_entry.get(extra):
            meta[extra] = source_entry[extra]
    data = derive(original, v, meta)
    digest = atomic_write_bytes(safe_destination(output_dir, v.output), data)
    entry: dict[str, Any] = {
        "name": target.name,
        "derived_from": v.source,
        "source_key": step.source_key,
        "key": v.key(str(step.source_key)),
        "sha256": digest,
        "bytes": len(data),
        "format": v.format,
        "width": v.width,
        "height": v.height,
        "quality": v.quality,
        "draft": bool(source_entry.get("draft")),
    }
    if v.crop:
        entry["crop"] = list(v.crop)
    return entry
