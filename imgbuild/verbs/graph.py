"""`imgbuild graph [TARGET_GLOB...]`: which targets read which images (`inputs:`), from the
specs alone (offline, no key, no cache). The selection brings what it reads, as `build` does."""
from __future__ import annotations

from imgbuild.spec import graph
from imgbuild.verbs.common import Where, load, select
from imgbuild.verbs.results import GraphNode, GraphResult


def graph_of(where: Where, patterns: tuple[str, ...] = (), *, style: str = "text") -> GraphResult:
    _, targets = load(where)
    chosen = graph.topological(select(targets, patterns))
    nodes = [GraphNode(t.name, t.request.model, list(t.outputs),
                       [(i.kind, i.ref) for i in t.inputs]) for t in chosen]
    return GraphResult(nodes, style)
