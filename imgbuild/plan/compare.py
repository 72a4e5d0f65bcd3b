"""Compare two lockfiles, output by output: what a change to the specs did to the images.

Only originals are compared (entries with a `request`); web derivatives follow their original
and would only repeat it. Kinds:

* new / removed — the output is only in the later / earlier lock;
* changed — its generation key differs (prompt, size, model, seed, provider...);
* modified — same key, but other bytes: an edit by hand, in the later lock or on disk;
* unchanged — same key, same bytes.

Images paid between the locks are the later lock's real (non-draft) images whose key the
earlier lock does not hold; their price is the model's in the project's region.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imgbuild.plan.cost import unit_price
from imgbuild.plan.states import input_changes, word_diff
from imgbuild.spec import catalogue
from imgbuild.spec.types import PIXEL_FIELDS
from imgbuild.store.lockfile import Lock

NEW, CHANGED, MODIFIED, REMOVED, UNCHANGED = "new", "changed", "modified", "removed", "unchanged"
KINDS = (NEW, CHANGED, MODIFIED, REMOVED, UNCHANGED)
PROMPTS = ("prompt", "negative_prompt")
# what the parameter table compares besides the prompts: the pixel fields, then provenance
PARAMS = tuple(f for f in PIXEL_FIELDS if f not in PROMPTS) + ("provider", "draft")


@dataclass
class Change:
    output: str
    name: str
    kind: str
    before: dict[str, Any] | None  # lock entry in the earlier lock
    after: dict[str, Any] | None  # lock entry in the later lock
    params: list[dict[str, Any]] = field(default_factory=list)  # {field, before, after}
    prompts: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> before/after/diff/ops
    paid: bool = False  # the later image was bought between the two locks
    price: float = 0.0
    on_disk: str | None = None  # "modified" when the file differs from the later lock
    inputs: list[str] = field(default_factory=list)  # "input logo changed": the plan's reasons

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "name": self.name, "kind": self.kind,
                "params": self.params, "prompts": {k: {x: v[x] for x in ("before", "after", "diff")}
                                                   for k, v in self.prompts.items()},
                "paid": self.paid, "price": round(self.price, 6), "on_disk": self.on_disk,
                "input_changes": self.inputs}


@dataclass
class Comparison:
    changes: list[Change]
    images_paid: int
    spent: float
    currency: str

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(KINDS, 0)
        for c in self.changes:
            counts[c.kind] += 1
        return counts


def compare(before: Lock, after: Lock, *, region: str,
            file_sha256: Callable[[str], str | None] | None = None) -> Comparison:
    """`file_sha256(output)` hashes the working tree's file (None if absent), so a hand edit
    not yet rebuilt shows as modified."""
    old, new = _originals(before), _originals(after)
    old_keys = {e.get("key") for e in old.values()}
    changes = []
    for output in sorted(old.keys() | new.keys()):
        change = _change(output, old.get(output), new.get(output), file_sha256)
        entry = change.after
        if entry is not None and change.kind in (NEW, CHANGED) and not entry.get("draft") \
                and entry.get("key") not in old_keys:
            change.paid = True
            change.price = unit_price(str(entry.get("model", "")), region)
        changes.append(change)
    paid = [c for c in changes if c.paid]
    return Comparison(changes, len(paid), round(sum(c.price for c in paid), 6), catalogue.CURRENCY)


def _originals(lock: Lock) -> dict[str, dict[str, Any]]:
    return {o: e for o, e in lock.outputs.items()
            if isinstance(e, dict) and "derived_from" not in e and "key" in e}


def _change(output: str, old: dict[str, Any] | None, new: dict[str, Any] | None,
            file_sha256: Callable[[str], str | None] | None) -> Change:
    entry = new if new is not None else old
    assert entry is not None
    name = str(entry.get("name", ""))
    if old is None or new is None:
        kind = NEW if old is None else REMOVED
        return Change(output, name, kind, old, new, prompts=_prompts(old, new))
    on_disk = None
    if file_sha256 is not None:
        digest = file_sha256(output)
        if digest is not None and digest != new.get("sha256"):
            on_disk = MODIFIED
    if old.get("key") != new.get("key"):
        kind = CHANGED
    elif old.get("sha256") != new.get("sha256") or on_disk:
        kind = MODIFIED
    else:
        kind = UNCHANGED
    return Change(output, name, kind, old, new, params=_params(old, new),
                  prompts=_prompts(old, new), on_disk=on_disk, inputs=_inputs(old, new))


def _inputs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why an edit changed because an image it reads changed, as the plan says it."""
    a, b = _request(old).get("inputs") or [], _request(new).get("inputs") or []
    if a == b or not isinstance(b, list) or not b:
        return []
    return input_changes(a, [str(i) for i in b])


def _request(entry: dict[str, Any] | None) -> dict[str, Any]:
    request = entry.get("request") if entry else None
    return request if isinstance(request, dict) else {}


def _params(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    a, b = {**_request(old), **old}, {**_request(new), **new}
    return [{"field": f, "before": a.get(f), "after": b.get(f)} for f in PARAMS
            if a.get(f) != b.get(f)]


def _prompts(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each rendered prompt that differs: both texts, the word diff as text, and as ops."""
    a, b = _request(old), _request(new)
    found = {}
    for name in PROMPTS:
        x, y = a.get(name), b.get(name)
        if x == y or not (x or y) or (old is not None and new is not None and not isinstance(x, str)):
            continue
        x, y = str(x or ""), str(y or "")
        found[name] = {"before": x if old else None, "after": y if new else None,
                       "diff": word_diff(x, y), "ops": word_ops(x, y)}
    return found


def word_ops(old: str, new: str) -> list[tuple[str, str]]:
    """The whole later text as ("equal" | "delete" | "insert", words) runs, for a page to mark
    up; unlike `word_diff`, nothing is elided."""
    a, b = old.split(), new.split()
    ops: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            ops.append(("equal", " ".join(a[i1:i2])))
            continue
        if i2 > i1:
            ops.append(("delete", " ".join(a[i1:i2])))
        if j2 > j1:
            ops.append(("insert", " ".join(b[j1:j2])))
    return ops


def describe(change: Change) -> str:
    """One line: what changed, for the terminal and the PR summary."""
    parts = list(change.inputs) if change.kind == CHANGED else []
    parts += [f"{name}: {p['diff']}" for name, p in change.prompts.items()
              if change.kind in (CHANGED, MODIFIED)]
    parts += [f"{p['field']}: {json.dumps(p['before'])} -> {json.dumps(p['after'])}" for p in change.params]
    if change.kind == MODIFIED:
        parts.insert(0, "same request, other bytes (edited by hand?)")
    elif change.kind == NEW:
        parts = ["not in the base lock"]
    elif change.kind == REMOVED:
        parts = ["no longer produced"]
    return "; ".join(parts)
