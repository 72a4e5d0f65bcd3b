"""`imgbuild plan` (= `build --dry-run`): each target's state and why, what it would cost.
Reads only: never takes the build mutex, never writes outputs or the lock."""
from __future__ import annotations

from typing import Any

from imgbuild.verbs.common import Where
from imgbuild.verbs.results import PlanResult, Row


def plan(where: Where, sink: Any, options: Any) -> PlanResult:
    from dataclasses import replace

    from imgbuild.verbs.build import build

    result = build(where, sink, replace(options, dry_run=True))
    assert isinstance(result, PlanResult)
    return result


def plan_result(ctx: Any, plan: Any, selected: list[Any], estimate: dict[str, Any]) -> PlanResult:
    from imgbuild.plan import derivatives

    from imgbuild.verbs.common import as_made

    variant_steps = derivatives.plan_variants(as_made(selected, ctx.lock), ctx.lock, ctx.project.output_dir, ctx.stats.sha256)
    rows = []
    for step in plan.steps:
        reason = "; ".join(step.reasons)
        rows.extend(Row(step.target.name, o, step.state, reason, action=step.action) for o in step.target.outputs)
    for v in variant_steps:
        rows.append(Row(v.target.name, v.variant.output, v.state, v.reason,
                        action="none" if v.state == "up_to_date" else "derive"))
    return PlanResult(provider=ctx.identity, plan=plan, variant_steps=variant_steps, estimate=estimate,
                      paid=ctx.choice.name != "placeholder", rows=rows, notices=ctx.notices)
