"""The compiled schema check (imgbuild/spec/schemagate.py) may only ever say "fits" where
jsonschema finds nothing wrong: it lets a document skip jsonschema. It must stay the output of
its generator for the schema in the package, and must not touch the document.

Hypothesis profiles: the default runs 400 documents of each kind; HYPOTHESIS_PROFILE=thorough
runs 10,000.
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgbuild.spec import schemagate, yamlio
from imgbuild.spec.project import _validator, schema

REPO = Path(__file__).resolve().parent.parent
settings.register_profile("gate-ci", max_examples=400, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("gate-thorough", parent=settings.get_profile("gate-ci"), max_examples=10_000)
PROFILE = settings.get_profile("gate-thorough" if os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
                               else "gate-ci")
ROOT = schema()
KINDS = {"project": ROOT, "specfile": ROOT["$defs"]["specfile"]}


def _js_valid(kind: str, doc: Any) -> bool:
    return next(iter(_validator(kind).iter_errors(doc)), None) is None


def test_the_compiled_file_is_what_the_generator_makes_of_the_shipped_schema() -> None:
    shipped = (REPO / "imgbuild" / "spec" / schemagate.GENERATED).read_text("utf-8")
    assert shipped == schemagate.generate(), (
        "imgbuild/spec/_schema_compiled.py is stale: run `python -m imgbuild.spec.schemagate`")


def _example_documents() -> list[tuple[str, Path]]:
    found = []
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        if "node_modules" in path.parts or "data" in path.parts:
            continue
        found.append(("project" if path.name == "imgbuild.yaml" else "specfile", path))
    return found


@pytest.mark.parametrize(("kind", "path"), _example_documents(), ids=lambda v: str(v).rsplit("examples/", 1)[-1])
def test_every_example_fits_without_jsonschema_and_is_left_as_read(kind: str, path: Path) -> None:
    doc = yamlio.load_file(path, str(path), {})
    before = copy.deepcopy(doc)
    assert schemagate.fits(kind, doc), f"{path} fell back to jsonschema: the fast path is lost"
    assert _js_valid(kind, doc)
    assert doc == before  # fastjsonschema fills defaults in unless told not to


# One refusal per kind of rule the schema uses: the compiled code refuses each, as jsonschema does.
REFUSED = {
    "unknown key": ("specfile", {"imgaes": []}),
    "required": ("specfile", {"images": [{"name": "a"}]}),
    "type": ("specfile", {"images": [{"name": "a", "prompt": 3}]}),
    "enum": ("specfile", {"images": [{"name": "a", "prompt": "p", "model": "dall-e"}]}),
    "minimum": ("specfile", {"images": [{"name": "a", "prompt": "p", "n": 0}]}),
    "maximum": ("specfile", {"images": [{"name": "a", "prompt": "p", "seed": 2**31}]}),
    "bool is no integer": ("specfile", {"images": [{"name": "a", "prompt": "p", "n": True}]}),
    "minLength": ("specfile", {"images": [{"name": "", "prompt": "p"}]}),
    "pattern": ("specfile", {"images": [{"name": "a", "prompt": "p", "crop": "4x3"}]}),
    "oneOf": ("specfile", {"images": [{"name": "a", "prompt": "p", "crop": {"focus": [0, 0]}}]}),
    "uniqueItems": ("specfile", {"defaults": {"formats": ["webp", "webp"]}}),
    "minItems": ("specfile", {"images": [{"name": "a", "prompt": "p", "inputs": []}]}),
    "maxItems": ("specfile", {"images": [{"name": "a", "prompt": "p", "crop": {"aspect": "1:1", "focus": [0, 0, 0]}}]}),
    "minProperties": ("specfile", {"images": [{"name": "a", "prompt": "p", "matrix": {}}]}),
    "const": ("project", {"version": 2}),
    "exclusiveMinimum": ("project", {"version": 1, "limits": {"default": {"rps": 0}}}),
    "project required": ("project", {"output_dir": "x"}),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_each_kind_of_rule_is_refused_by_both(case: str) -> None:
    kind, doc = REFUSED[case]
    assert not _js_valid(kind, doc), "the case itself is wrong"
    assert not schemagate.fits(kind, doc)


def test_where_the_readings_differ_jsonschema_has_the_last_say(tmp_path: Path) -> None:
    """`$` matches before a final newline in jsonschema's `re.search`, not in the compiled code
    (which anchors at the very end). The document is valid: the gate says "ask", and the project
    still loads, as it did before the gate."""
    from imgbuild.spec.project import load_project

    doc = {"images": [{"name": "a", "prompt": "p", "crop": "4:3\n"}]}
    assert _js_valid("specfile", doc)
    assert not schemagate.fits("specfile", doc)
    (tmp_path / "imgbuild.yaml").write_text(
        'version: 1\nimages:\n  - name: a\n    prompt: p\n    crop: "4:3\\n"\n    model: qwen-image-plus\n')
    project = load_project(tmp_path / "imgbuild.yaml")
    assert project.files[0].data["images"][0]["crop"] == "4:3\n"


# --- generated documents: valid ones from the schema itself, then one node changed -----------

JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2**33, 2**33), st.floats(allow_nan=True),
                 st.just(1.0), st.just(0.5), st.just(-0.0), st.text(max_size=6), st.just(""),
                 st.just("4:3\n"), st.just([]), st.just({}), st.just([1, True]), st.just(["webp", "webp"]),
                 st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = ROOT["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _valid(node: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values the schema node accepts (mostly; the test asks jsonschema anyway)."""
    node = _resolve(node)
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "oneOf" in node:
        return st.one_of(*(_valid(n, depth) for n in node["oneOf"]))
    kind = node.get("type")
    examples = [st.sampled_from(node["examples"])] if "examples" in node else []
    if kind == "object":
        props = node.get("properties", {})
        if not props or depth > 4:
            extra = node.get("additionalProperties")
            inner = _valid(extra, depth + 1) if isinstance(extra, dict) else JUNK
            return st.one_of(*examples, st.dictionaries(st.sampled_from(["a", "b", "brand"]), inner,
                                                        min_size=node.get("minProperties", 0), max_size=3))
        required = {k: _valid(props[k], depth + 1) for k in node.get("required", [])}
        optional = {k: _valid(v, depth + 1) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "array":
        items = _valid(node.get("items", {}), depth + 1) if node.get("items") else JUNK
        return st.one_of(*examples, st.lists(items, min_size=node.get("minItems", 0),
                                             max_size=min(node.get("maxItems", 3), 3),
                                             unique=bool(node.get("uniqueItems"))))
    if kind == "string":
        if "pattern" in node:
            return st.one_of(*examples, st.from_regex(node["pattern"], fullmatch=True))
        return st.one_of(*examples, st.text(min_size=node.get("minLength", 0), max_size=12))
    if kind == "integer":
        return st.integers(node.get("minimum", -2**33), node.get("maximum", 2**33))
    if kind == "number":
        low = node.get("minimum", node.get("exclusiveMinimum", -1e9))
        return st.floats(low, node.get("maximum", 1e9), exclude_min="exclusiveMinimum" in node)
    if kind == "boolean":
        return st.booleans()
    if isinstance(kind, list):
        return st.one_of(*(_valid({**node, "type": t}, depth) for t in kind))
    return st.one_of(*examples, JUNK)


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _nodes(v, (*path, i))
    return out


@st.composite
def _documents(draw: st.DrawFn, kind: str) -> Any:
    doc = copy.deepcopy(draw(_valid(KINDS[kind])))  # examples are the schema's own objects
    change = draw(st.sampled_from(["none", "replace", "delete", "add"]))
    paths = _nodes(doc)
    path = draw(st.sampled_from(paths))
    if change == "none" or not path and change != "add":
        return doc
    parent = doc
    for step in path[:-1] if path else ():
        parent = parent[step]
    if change == "replace" and path:
        parent[path[-1]] = copy.deepcopy(draw(JUNK))
    elif change == "delete" and path and isinstance(parent, dict):
        del parent[path[-1]]
    elif change == "add":
        target = parent[path[-1]] if path else doc
        if isinstance(target, dict):
            target[draw(st.sampled_from(["nope", "n", "seed", "crop", "images", "version", "1"]))] = copy.deepcopy(draw(JUNK))
        elif isinstance(target, list):
            target.append(copy.deepcopy(draw(JUNK)))
    return doc


def _same_values(a: Any, b: Any) -> bool:
    """Equality that counts NaN as equal to itself (a float the document may hold)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_values(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_values(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_gate_never_lets_through_what_jsonschema_refuses(kind: str) -> None:
    seen = {"fits": 0, "refused by both": 0}

    @settings(PROFILE)
    @given(doc=_documents(kind))
    def one(doc: Any) -> None:
        before = copy.deepcopy(doc)
        fits = schemagate.fits(kind, doc)
        assert _same_values(doc, before), "the compiled check changed the document"
        if fits:
            assert _js_valid(kind, doc), f"the gate let through a document jsonschema refuses: {doc!r}"
            seen["fits"] += 1
        elif not _js_valid(kind, doc):
            seen["refused by both"] += 1

    one()
    # both answers were exercised, or the property above proved nothing
    assert seen["fits"] >= 20 and seen["refused by both"] >= 20, seen
