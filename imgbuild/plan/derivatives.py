"""Plan the derivative step: which web variants are stale and why. Running them is
`run.derivatives`."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgbuild.spec.types import Target, Variant
from imgbuild.store.lockfile import Lock
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
                  hasher: Callable[[str], str | None],
                  regenerated: frozenset[str] = frozenset()) -> list[VariantStep]:
    """`regenerated`: originals a build would generate again first (a dry run): whether their
    variants change depends on the new bytes, so they are WAITING, never up to date."""
    steps = []
    base = str(output_dir)
    for target in targets:
        for v in target.variants:
            source = lock.get(v.source)
            source_key = source.get("key") if source else None
            fresh_source = (source is not None and source_key ==
                            generation_key(source.get("provider", ""), _as_made(target, source)))
            if not fresh_source:
                steps.append(VariantStep(target, v, WAITING, f"its source {v.source} is not built yet", None))
                continue
            if v.source in regenerated:
                steps.append(VariantStep(target, v, WAITING, f"its source {v.source} is generated again first; "
                                         "derived again if its bytes change", None))
                continue
            key = v.key(str(source_key))
            entry = lock.get(v.output)
            if entry is None:
                steps.append(VariantStep(target, v, NEW, "not derived yet", source_key))
            elif entry.get("key") != key:
                steps.append(VariantStep(target, v, CHANGED, "source or derivation options changed", source_key))
            elif entry.get("source_sha256", source.get("sha256")) != source.get("sha256"):
                # Same request, new bytes: the original was generated again (lost from the cache).
                steps.append(VariantStep(target, v, CHANGED, f"its source {v.source} was generated again",
                                         source_key))
            else:
                digest = hasher(os.path.join(base, v.output))
                if digest is None:
                    steps.append(VariantStep(target, v, MISSING, f"{v.output} is missing", source_key))
                elif digest != entry.get("sha256"):
                    steps.append(VariantStep(target, v, MODIFIED, f"{v.output} was modified", source_key))
                else:
                    steps.append(VariantStep(target, v, UP_TO_DATE, "", source_key))
    return steps


def _as_made(target: Target, source: dict[str, Any]) -> Any:
    """The request the locked original was made from. A target without inputs: its request
    as it stands. One with inputs (an edit): its request carries the identities of its input
    images, which only the plan knows (it hashes them in graph order); the lock recorded
    them, so the variants follow the original that is there. Whether that original is itself
    stale (an input changed) is the plan's row for it, not this one's."""
    if not target.inputs:
        return target.request
    from dataclasses import replace

    recorded = (source.get("request") or {}).get("inputs")
    if not isinstance(recorded, list):
        return target.request
    return replace(target.request, inputs=tuple(str(i) for i in recorded))
