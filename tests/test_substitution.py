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


def _partial_outcome(root: Path, text: str, fast: bool) -> tuple[str, str, dict[str, str]]:
    """(rendered, error type, files recorded) with a new project and renderer, through the fast
    path or through Jinja's own loader."""
    project = load_project((root / "imgbuild.yaml").resolve())
    renderer = _Renderer(project)
    try:
        if fast:
            out = renderer.render(text, CONTEXT)
        else:
            template = renderer.env.from_string(text)
            out = "".join(template.root_render_func(template.new_context(
                {**renderer._globals, **CONTEXT}, shared=True)))
    except Exception as e:  # noqa: BLE001 - the comparison is of outcomes
        return "", type(e).__name__, dict(project.read_files)
    return out, "", dict(project.read_files)


def test_partials_are_found_refused_and_recorded_as_jinjas_loader_does(tmp_path: Path) -> None:
    """The fast path reads partials itself (so that Jinja need not be imported): every name
    must give what Jinja's loader gives, the same text or the same failure, and record the same
    file with the same digest (the plan cache and `watch` go by that record)."""
    outside = tmp_path / "outside.j2"
    outside.write_text("secret {{ a }}")
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "templates" / "sub").mkdir(parents=True)
    (root / "templates" / "crlf.j2").write_bytes(b"line {{ a }}\r\nnext\r\n")
    (root / "templates" / "sub" / "p.j2").write_text("deep {{ b }}")
    (root / "templates" / "latin1.j2").write_bytes("caf\xe9 {{ a }}".encode("latin-1"))
    (root / "templates" / "link.j2").symlink_to(outside)
    (root / "templates" / "folder.j2").mkdir()
    (root / "imgbuild.yaml").write_text("version: 1\nimages:\n  - name: a\n    prompt: An apple\n")
    names = ["crlf.j2", "sub/p.j2", "./sub//p.j2", "sub/./p.j2", "latin1.j2", "link.j2", "folder.j2",
             "missing.j2", "../outside.j2", "sub/../crlf.j2", "sub\\p.j2", "/crlf.j2"]
    for name in names:
        text = f"{{% include '{name}' %}} and {{{{ a }}}}"
        assert _partial_outcome(root, text, fast=True) == _partial_outcome(root, text, fast=False), name
    # the cases that render did render, and the refused ones were refused
    assert _partial_outcome(root, "{% include 'crlf.j2' %}", fast=True)[0] == "line teal\nnext"
    assert _partial_outcome(root, "{% include 'link.j2' %}", fast=True)[1] == "TemplateNotFound"


def test_a_project_of_plain_substitutions_never_imports_jinja(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "style.j2").write_text("flat, {{ palette }}")
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nvars: {palette: teal}\nimages:\n"
        "  - name: 'i-{{ c }}'\n    prompt: \"{% include 'style.j2' %} icon of {{ c }}\"\n"
        "    matrix: {c: [a, b]}\n")
    probe = ("import sys; from pathlib import Path; from imgbuild.spec.project import load_project; "
             "from imgbuild.spec.expand import expand; "
             "t = expand(load_project(Path(sys.argv[1]))); "
             "print([x.request.prompt for x in t], 'jinja2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "imgbuild.yaml")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['flat, teal icon of a', 'flat, teal icon of b'] False"
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: 'i-{{ c }}'\n    prompt: 'icon of {{ c|upper }}'\n"
        "    matrix: {c: [a, b]}\n")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "imgbuild.yaml")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['icon of A', 'icon of B'] True"
