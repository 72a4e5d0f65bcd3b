"""Templates made only of text and `{{ name }}` are rendered without compiling them: the result
must be byte for byte what Jinja renders, and anything else must still go to Jinja."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgbuild.spec.expand import _Renderer, substitution_parts
from imgbuild.spec.project import load_project

CONTEXT: dict[str, Any] = {"a": "teal", "b": 3, "c": None, "d": True, "e": 2.5, "f": "x{{ y }}\r\n",
                           "g": ["l", 1], "h": {"k": "v"}, "big": "z" * 99_999, "name": "n1"}


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> _Renderer:
    root: Path = tmp_path_factory.mktemp("subst")
    (root / "templates").mkdir()
    (root / "templates" / "p.j2").write_text("partial {{ a }}\r\n")
    (root / "templates" / "q.j2").write_text("{{ a|upper }}")
    (root / "templates" / "r.j2").write_text("{% include 'p.j2' %} again")
    (root / "imgbuild.yaml").write_text("version: 1\nimages:\n  - name: a\n    prompt: An apple\n")
    return _Renderer(load_project((root / "imgbuild.yaml").resolve()))


def _jinja(renderer: _Renderer, text: str) -> tuple[str, str]:
    """Jinja's own rendering of `text` (compiled, as before the fast path): (result, error type)."""
    try:
        template = renderer.env.from_string(text)
        return "".join(template.root_render_func(template.new_context(
            {**renderer._globals, **CONTEXT}, shared=True))), ""
    except Exception as e:  # noqa: BLE001 - the comparison is of outcomes
        return "", type(e).__name__


def _fast(renderer: _Renderer, text: str) -> str | None:
    parts = substitution_parts(text)
    return None if parts is None else renderer._substitute(parts, CONTEXT)


SAME = ["An icon of {{ a }} and {{b}} for {{ c }}\n", "{{ a }}", "x {{\n a \n}} y", "{{ d }}{{ e }}",
        "line one\r\nline two\rthree\n{{ a }}\n\n", "{{ a }}\r\n", "{{ g }} and {{ h }}", "{{ f }}",
        "{{ big }}", "{{ name }}-{{ a }}.png", "{{ a }}\n\n\n",
        "{% include 'p.j2' %}\nAn icon of {{ a }}\n", '{%include "p.j2"%}', "{% include 'r.j2' %}"]
TO_JINJA = ["{{ a|upper }}", "{{ a }}}", "{{{ a }}", "{ {{ a }}", "{{- a }}", "{{ a -}}", "{% if d %}y{% endif %}",
            "{# c #}{{ a }}", "{{ none }}", "{{ True }}", "{{ loop }}", "{{ range }}", "{{ missing }}",
            "{{ a.b }}", "{% include 'nope.j2' %}", "{% include 'q.j2' %}",
            "{% include 'p.j2' ignore missing %}", "{%- include 'p.j2' %}", "{% include '../x' %}", "{{ 'a' }}", "{{ a ~ b }}", "{{ nul\x00l }}"]


@pytest.mark.parametrize("text", SAME)
def test_substitution_only_templates_skip_jinja_and_render_the_same(renderer: _Renderer, text: str) -> None:
    fast = _fast(renderer, text)
    assert fast is not None, "this template should not need compiling"
    assert (fast, "") == _jinja(renderer, text)
    assert renderer.render(text, CONTEXT) == fast


@pytest.mark.parametrize("text", TO_JINJA)
def test_everything_else_is_left_to_jinja(renderer: _Renderer, text: str) -> None:
    assert _fast(renderer, text) is None
    expected, error = _jinja(renderer, text)
    if error:
        with pytest.raises(Exception) as raised:
            renderer.render(text, CONTEXT)
        assert type(raised.value).__name__ == error
    else:
        assert renderer.render(text, CONTEXT) == expected


PIECES = ["{{ a }}", "{% include 'p.j2' %}", "{% include 'q.j2' %}", "{{b}}", "{{ c }}", "{{ missing }}", "{{ none }}", "{{ loop }}", "{{ big }}", "{{ f }}",
          "{", "}", "{{", "}}", "{%", "%}", "{#", "#}", "-", " ", "x", "\n", "\r\n", "\r", "{{- a }}",
          "{{ a -}}", "{{ a }}}", "{{{ a }}", "é", "\t"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(PIECES), max_size=8))
def test_any_mix_renders_as_jinja_renders(renderer: _Renderer, pieces: list[str]) -> None:
    text = "".join(pieces)
    fast = _fast(renderer, text)
    if fast is not None:
        assert (fast, "") == _jinja(renderer, text), repr(text)


def test_the_size_limit_holds_on_the_fast_path_too(renderer: _Renderer) -> None:
    from jinja2.exceptions import SecurityError

    assert renderer.render("{{ big }}", CONTEXT) == "z" * 99_999
    with pytest.raises(SecurityError, match="would exceed 100,000 characters"):
        renderer.render("{{ a }}{{ big }}", CONTEXT)


def test_a_partial_read_on_the_fast_path_is_recorded_like_jinjas(tmp_path: Path) -> None:
    import hashlib

    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "p.j2").write_text("partial {{ a }}\n")
    (tmp_path / "imgbuild.yaml").write_text("version: 1\nimages:\n  - name: a\n    prompt: An apple\n")
    project = load_project((tmp_path / "imgbuild.yaml").resolve())
    renderer = _Renderer(project)
    assert renderer.render("{% include 'p.j2' %} and {{ b }}", CONTEXT) == "partial teal and 3"
    assert renderer._compiled == {}  # nothing compiled
    assert project.read_files[str(tmp_path.resolve() / "templates" / "p.j2")] == \
        hashlib.sha256(b"partial {{ a }}\n").hexdigest()
