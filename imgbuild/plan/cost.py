"""What a plan will cost: images to generate × the model's price per image in the project's
region (§9 of the API notes; CNY), before anything is spent. Restores from the cache are
reported as money saved."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from imgbuild.spec import catalogue as models
from imgbuild.plan.states import GENERATE, RESTORE, Step

DEFAULT_REGION = "beijing"


def unit_price(model: str, region: str, overrides: Mapping[str, Any] | None = None) -> float | None:
    """CNY per image from `region`'s own price table; None when it has none. Borrowing another
    region's price would print a number nobody will be billed."""
    if overrides and model in overrides:
        return float(overrides[model])
    m = models.get(model)
    return models.price(m, region) if m is not None else None


def _unverified(model: str, overrides: Mapping[str, Any] | None) -> bool:
    m = models.get(model)
    return m is not None and m.price_unverified and not (overrides and model in overrides)


def estimate(steps: Iterable[Step], region: str = DEFAULT_REGION,
             overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    by_model: dict[str, dict[str, Any]] = {}
    saved = 0.0
    for step in steps:
        req = step.target.request
        price = unit_price(req.model, region, overrides)
        if step.action == GENERATE:
            row = by_model.setdefault(req.model, {"images": 0, "unit_price": price})
            row["images"] += req.n
            if price is not None and _unverified(req.model, overrides):
                row["price_unverified"] = True  # not from an official price page
        elif step.action == RESTORE:
            saved += req.n * (price or 0.0)
    total = 0.0
    for row in by_model.values():
        row["cost"] = None if row["unit_price"] is None else round(row["images"] * row["unit_price"], 6)
        total += row["cost"] or 0.0
    return {
        "currency": models.CURRENCY,
        "region": region,
        "by_model": dict(sorted(by_model.items())),
        "images": sum(r["images"] for r in by_model.values()),
        "total": round(total, 6),
        # models whose price in this region is unknown: `total` leaves them out
        "price_unknown": sorted(m for m, r in by_model.items() if r["unit_price"] is None),
        "saved_by_cache": round(saved, 6),
    }
