"""What a plan will cost: images to generate × the model's price per image in the project's
region (§9 of the API notes; CNY), before anything is spent. Restores from the cache are
reported as money saved."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from imgbuild.spec import catalogue as models
from imgbuild.plan.states import GENERATE, RESTORE, Step

DEFAULT_REGION = "beijing"


def unit_price(model: str, region: str, overrides: Mapping[str, Any] | None = None) -> float:
    if overrides and model in overrides:
        return float(overrides[model])
    m = models.get(model)
    if m is None:
        return 0.0
    # A model not sold in the region has no price there; fall back to its first listed price
    # so an estimate is never silently zero.
    return m.price.get(region, next(iter(m.price.values())))


def estimate(steps: Iterable[Step], region: str = DEFAULT_REGION,
             overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    by_model: dict[str, dict[str, Any]] = {}
    saved = 0.0
    for step in steps:
        req = step.target.request
        if step.action == GENERATE:
            row = by_model.setdefault(req.model, {"images": 0, "unit_price": unit_price(req.model, region, overrides)})
            row["images"] += req.n
        elif step.action == RESTORE:
            saved += req.n * unit_price(req.model, region, overrides)
    total = 0.0
    for row in by_model.values():
        row["cost"] = round(row["images"] * row["unit_price"], 6)
        total += row["cost"]
    return {
        "currency": models.CURRENCY,
        "region": region,
        "by_model": dict(sorted(by_model.items())),
        "images": sum(r["images"] for r in by_model.values()),
        "total": round(total, 6),
        "saved_by_cache": round(saved, 6),
    }


def describe(est: dict[str, Any]) -> list[str]:
    lines = [f"  {model}: {row['images']} × {row['unit_price']:.4g} = {row['cost']:.2f} {est['currency']}"
             for model, row in est["by_model"].items()]
    lines.append(f"  total: {est['images']} image(s), {est['total']:.2f} {est['currency']} ({est['region']} prices)")
    return lines
