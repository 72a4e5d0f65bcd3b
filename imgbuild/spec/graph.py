"""Targets that read other targets (`inputs:`) form a graph; this module orders it and finds
its cycles. Pure functions over `Target`s: the expander reports what they find (located), the
plan and the build walk targets in the order they give."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from imgbuild.spec.types import Target, closure

if TYPE_CHECKING:  # the model table is not needed to order or check a graph at start-up
    from imgbuild.spec.catalogue import InputRule

TARGET, FILE = "target", "file"

__all__ = ["TARGET", "FILE", "closure", "find_cycle", "topological", "upstream", "input_problem"]


def upstream(target: Target) -> list[str]:
    """Names of the targets `target` reads, in `inputs:` order."""
    return [i.ref for i in target.inputs if i.kind == TARGET]


def find_cycle(targets: Iterable[Target]) -> list[str] | None:
    """One cycle as names, first repeated last (`a -> b -> a`), or None."""
    by_name = {t.name: t for t in targets}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in by_name:
        if state.get(root):
            continue
        path: list[str] = [root]
        stack = [iter(upstream(by_name[root]))]
        state[root] = 1
        while stack:  # iterative: a long chain must not hit the recursion limit
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt) and nxt in by_name:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(upstream(by_name[nxt])))
    return None


def topological(targets: list[Target]) -> list[Target]:
    """`targets` with every input before the targets that read it; otherwise in the given
    order (stable, so a project without inputs keeps its order). Assumes no cycle."""
    by_name = {t.name: t for t in targets}
    placed: set[str] = set()
    ordered: list[Target] = []

    def place(t: Target) -> None:
        stack = [(t, iter(upstream(t)))]
        visiting = {t.name}  # a cycle (refused by the expander) ends here instead of looping
        while stack:
            node, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                stack.pop()
                if node.name not in placed:
                    placed.add(node.name)
                    ordered.append(node)
            elif dep in by_name and dep not in placed and dep not in visiting:
                visiting.add(dep)
                stack.append((by_name[dep], iter(upstream(by_name[dep]))))

    for t in targets:
        if t.name not in placed:
            place(t)
    return ordered


def image_format(data: bytes) -> str | None:
    """The PIL name of the format `data` is in, from its magic bytes (PNG, JPEG, WEBP only:
    what imgbuild writes and what repositories mostly hold); None otherwise."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:2] == b"\xff\xd8":
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def input_problem(rule: InputRule, data: bytes) -> str | None:
    """None when an edit model accepts `data` as an input image, else the broken limit."""
    from imgbuild.images.header import header_size

    size = header_size(data) or (0, 0)
    return rule.check(image_format(data), size[0], size[1], len(data))
