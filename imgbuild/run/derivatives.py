"""Run the derivative step: derive each stale web variant from the cached original (or,
without a cache, from the original output on disk after checking its hash). Local work in
threads after generation; never calls a provider."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgbuild.images.derive import derive
from imgbuild.plan.derivatives import UP_TO_DATE, WAITING, VariantStep
from imgbuild.store.atomic import atomic_write_bytes
from imgbuild.store.lockfile import Lock
from imgbuild.store.outputs import safe_destination


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
        "source_sha256": source_entry.get("sha256"),
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


def derive_fresh(ctx: Any, targets: list[Any], jobs: int) -> tuple[list[VariantOutcome], int]:
    """Derive every stale variant whose original is fresh; progress goes to `ctx.sink`.
    Returns the outcomes and how many variants were already up to date (those waiting for an
    original that failed or was not built are neither)."""
    from imgbuild.plan import derivatives as plan
    from imgbuild.store.atomic import sweep_temp_files

    output_dir = ctx.project.output_dir
    steps = plan.plan_variants(targets, ctx.lock, output_dir, ctx.stats.sha256)
    fresh = sum(1 for s in steps if s.state == plan.UP_TO_DATE)
    todo = [s for s in steps if s.state not in (plan.UP_TO_DATE, plan.WAITING)]
    if not todo:
        return [], fresh
    sweep_temp_files({(output_dir / s.variant.output).parent for s in todo})
    done: list[VariantOutcome] = []

    def record(outcome: VariantOutcome) -> None:
        done.append(outcome)
        if outcome.entry is not None:
            ctx.stats.remember(output_dir / outcome.step.variant.output, outcome.entry["sha256"])
        status = "derived" if outcome.error is None else "failed"
        ctx.sink.variant_progress(len(done), len(todo), status, outcome.step, outcome.error)

    run(todo, ctx.lock, output_dir, ctx.cache, jobs, record)
    return done, fresh
