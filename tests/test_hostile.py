"""Hostile input (issue 7): whatever a spec holds, `imgbuild validate` answers exit 0 or a located
exit 2, never a traceback; YAML bombs and huge documents are refused in bounded memory;
Jinja sandbox escapes and size bombs fail cleanly; outputs never land outside output_dir;
result downloads are capped.

Result URLs with a non-http(s) scheme, or redirecting to one, are refused by the downloader:
see tests/test_dashscope_provider.py::test_non_http_result_urls_are_refused (not repeated here).

Hypothesis profiles: the default runs 200 examples; HYPOTHESIS_PROFILE=thorough runs 10,000.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import KEY, generated_project, temp_files
from helpers import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgbuild.emulator import Emulator, EmulatorConfig

settings.register_profile("ci", max_examples=200, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.register_profile("thorough", parent=settings.get_profile("ci"), max_examples=10_000)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

LOCATED = re.compile(r"imgbuild\.yaml(:\d+:\d+)?: ")

# --- generated spec documents ---------------------------------------------------------------

SPEC_KEYS = ["name", "prompt", "negative_prompt", "model", "size", "n", "seed", "output",
             "matrix", "vars", "call", "prompt_extend", "watermark", "formats", "widths",
             "crop", "quality", "outputs", "alt"]
TOP_KEYS = ["version", "output_dir", "provider", "region", "defaults", "vars", "include",
            "images", "limits", "timeouts", "manifest", "templates_dir", "base_url"]
JINJA = ["{{ name }}", "{{ brand }}", "{{ x }}", "{{ 1/0 }}", "{% if %}", "{{", "}}", "{% for i in range(3) %}{{ i }}{% endfor %}",
         "{{ name|slug }}", "{{ name|nosuchfilter }}", "{% include 'nope.j2' %}", "{{ ''.__class__ }}",
         "{{ 'x' * 10**9 }}", "{{ 10**10**10 }}", "{{ index }}", "{% set a = 1 %}{{ a ~ a }}",
         "{{ lipsum.__globals__ }}", "{{ range(10**9)|list }}", "{{ model }}", "{#", "{% raw %}"]
# what block prompts (`prompt: |`) and other languages put in a prompt: line breaks anywhere,
# first line empty, no full stop, unicode quotes and line separators
PROSE = ["\n", "\nA red bike\non a hill", "line one\nline two\n", "\r\n", "\u2028", "\t",
         "写真 «Großstadt» 🚲", "“a sign\nthat reads OPEN”", '"two\nlines"', "\x0b\x0c", " ", ""]
MODELS = ["qwen-image-plus", "wan2.6-t2i", "wan2.2-t2i-flash", "qwen-image-2.0", "nope"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(MODELS + ["1328*1328", "16:9", "a.png",
                                                                    "../x.png", "/abs.png", "sync"]))
templated = st.lists(st.one_of(st.sampled_from(JINJA), st.sampled_from(PROSE), st.text(max_size=12)),
                     max_size=5).map("".join)
prose = st.lists(st.one_of(st.sampled_from(PROSE), st.text(max_size=20)), min_size=1, max_size=6).map("".join)
values = st.recursive(st.one_of(scalars, templated),
                      lambda inner: st.one_of(st.lists(inner, max_size=4),
                                              st.dictionaries(st.one_of(st.sampled_from(SPEC_KEYS + TOP_KEYS), st.text(max_size=8)),
                                                              inner, max_size=4)),
                      max_leaves=12)
spec = st.fixed_dictionaries(
    {"name": st.one_of(templated, scalars), "prompt": st.one_of(templated, prose, scalars)},
    optional={k: st.one_of(values, templated) for k in SPEC_KEYS if k not in ("name", "prompt")}
    | {"model": st.sampled_from(MODELS)})
document = st.fixed_dictionaries(
    {"version": st.one_of(st.just(1), scalars), "images": st.one_of(st.lists(spec, max_size=3), values)},
    optional={k: values for k in TOP_KEYS if k not in ("version", "images")})


def _mutate(text: str, cut: int, junk: str) -> str:
    """Sometimes break the YAML text itself (cut it short, or splice in junk)."""
    if cut % 3 == 0:
        return text
    at = cut % (len(text) + 1)
    return text[:at] + (junk if cut % 3 == 1 else "")


@PROFILE
@given(doc=document, cut=st.integers(0, 10**6), junk=st.sampled_from(["", ":", "- [", "&a *a", "\t", "{{", "!!python/object:os.system ''", "\x00", "<<: *x"]))
def test_validate_never_crashes_on_generated_specs(doc: Any, cut: int, junk: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    text = _mutate(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), cut, junk)
    (tmp_path / "imgbuild.yaml").write_text(text, encoding="utf-8")
    r = run(capsys, "validate", "-C", str(tmp_path))  # run() also fails on any traceback
    assert r.code in (0, 2), f"{r}\n--- spec\n{text}"
    if r.code == 2:
        assert LOCATED.search(r.err), f"{r}\n--- spec\n{text}"


# --- YAML bombs and huge documents: refused in bounded memory ---------------------------------

BOMB = "version: 1\nvars:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)) + "images: []\n"


def _limited_validate(root: Path, limit: int = 768 * 2**20) -> subprocess.CompletedProcess[bytes]:
    """`imgbuild validate` in a child whose address space is capped: a MemoryError would end in
    exit 3, not 2."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (%d, %d)); "
            "from imgbuild.cli import main; sys.exit(main(['validate', '-C', %r]))" % (limit, limit, str(root)))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("kind", ["alias-bomb", "flat-8MB", "over-32MB", "deep-nesting"])
def test_bombs_and_huge_documents_are_refused_in_bounded_memory(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "imgbuild.yaml"
    if kind == "alias-bomb":
        path.write_text(BOMB)
        expect = "document too large"
    elif kind == "flat-8MB":  # composed naively this takes ~1.8 GB
        path.write_text("version: 1\nimages: []\nvars: {big: [" + ",".join(["1"] * 4_000_000) + "]}\n")
        expect = "document too large"
    elif kind == "over-32MB":
        with path.open("w") as f:
            f.write("version: 1\nimages: []\nvars: {big: '")
            f.write("x" * (33 * 2**20))
            f.write("'}\n")
        expect = "the limit is"
    else:
        path.write_text("version: 1\nimages: []\nvars: {deep: " + "[" * 50_000 + "]" * 50_000 + "}\n")
        expect = "imgbuild.yaml"
    proc = _limited_validate(tmp_path)
    assert proc.returncode == 2, proc
    assert expect.encode() in proc.stderr and b"Traceback" not in proc.stderr, proc.stderr[-2000:]


# --- Jinja: sandbox escapes and size bombs fail cleanly (exit 2, located) ----------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ self._TemplateReference__context }}",
    "{% for x in range(10**9) %}x{% endfor %}",
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ ['x'] * 10**9 }}",
    "{{ 2 ** 100000000 }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%*d' % (10**9, 1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ 'x'|center(10**9) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{% set a = 'x' * 60000 %}{{ a ~ a }}",
    "{% set a = 'x' * 60000 %}{{ a + a }}",
    "{{ ('x' * 1000)|replace('x', 'y' * 50000) }}",
    "{% set a = 'x' * 50000 %}{% for i in range(1000) %}{{ a }}{% endfor %}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_jinja_escapes_and_bombs_fail_cleanly(template: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import resource

    (tmp_path / "imgbuild.yaml").write_text(
        f"version: 1\nimages:\n  - name: a\n    prompt: {json.dumps(template)}\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = run(capsys, "validate", "-C", str(tmp_path))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert r.code == 2, r
    assert LOCATED.search(r.err) and "images[a].prompt" in r.err, r
    assert grown_mb < 200, f"{template}: peak memory grew by {grown_mb:.0f} MB"


def test_ordinary_templates_still_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = ("{% set a = 'ab' * 3 %}{{ a ~ '-' ~ name|slug }} {{ '%03d' % 7 }} {{ '{:>4}'.format(1) }}"
              " {{ [1, 2]|join(',') }} {% for i in range(3) %}{{ i }}{% endfor %} {{ 'a b'|replace(' ', '_') }}")
    (tmp_path / "imgbuild.yaml").write_text(
        f"version: 1\nimages:\n  - name: Hello World\n    prompt: {json.dumps(prompt)}\n")
    r = run(capsys, "plan", "-C", str(tmp_path), "--provider", "placeholder", "--json", "-v")
    assert r.code == 0, r
    r = run(capsys, "build", "-C", str(tmp_path), "--provider", "placeholder")
    lock = json.loads((tmp_path / "imgbuild.lock").read_text())["outputs"]
    assert lock["Hello World.png"]["request"]["prompt"] == "ababab-hello-world 007    1 1,2 012 a_b"


# --- the offline placeholder draws any prompt the schema accepts (issue 11, item 0) ------------

@settings(PROFILE, max_examples=min(PROFILE.max_examples, 60))
@given(prompt=prose, quoted=st.booleans(), n=st.integers(1, 2))
def test_placeholder_draws_any_prompt(prompt: str, quoted: bool, n: int) -> None:
    from imgbuild.providers.placeholder import draw
    from imgbuild.spec.types import Request

    text = f'"{prompt}"' if quoted else prompt
    request = Request("wan2.2-t2i-flash", text, "", "512*512", n, 1, False, False)
    assert draw(request, "k" * 64, n)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_block_prompt_builds_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`prompt: |` with two lines, no quote and no full stop on the first: the first thing many
    users try (it exited 3: Pillow cannot measure multi-line text)."""
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: a\n    model: wan2.2-t2i-flash\n    size: 512*512\n"
        "    prompt: |\n      A red bike on a hill\n      at dusk, film grain\n")
    r = run(capsys, "build", "-C", str(tmp_path), "--provider", "placeholder")
    assert r.code == 0, r
    assert (tmp_path / "generated" / "a.png").is_file()


# --- outputs never land outside output_dir ---------------------------------------------------

@pytest.mark.parametrize("output", ["../escape.png", "/tmp/abs.png", "a/../../escape.png", "C:/x.png"])
def test_output_paths_leaving_output_dir_are_refused(output: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imgbuild.yaml").write_text(
        f"version: 1\nimages:\n  - name: a\n    prompt: p\n    output: {json.dumps(output)}\n")
    r = run(capsys, "build", "-C", str(tmp_path), "--provider", "placeholder")
    assert r.code == 2 and "points outside output_dir" in r.err, r
    assert not (tmp_path.parent / "escape.png").exists()


def test_a_symlinked_folder_pointing_outside_is_refused(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root, outside = tmp_path / "p", tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / "imgbuild.yaml").write_text(
        "version: 1\noutput_dir: out\nimages:\n"
        "  - name: inside\n    prompt: p\n    output: ok/inside.png\n"
        "  - name: escape\n    prompt: p\n    output: linked/escape.png\n")
    (root / "out").mkdir()
    (root / "out" / "linked").symlink_to(outside, target_is_directory=True)
    r = run(capsys, "build", "-C", str(root), "--provider", "placeholder", "-k", "-j", "1")
    assert r.code == 1, r
    assert "linked/escape.png" in r.out + r.err and "outside" in r.out + r.err, r
    assert list(outside.iterdir()) == []  # nothing written through the link
    assert (root / "out" / "ok" / "inside.png").is_file()
    assert temp_files(root) == []
    lock = json.loads((root / "imgbuild.lock").read_text())["outputs"]
    assert set(lock) == {"ok/inside.png"}


# --- downloads above the cap are cut and that target fails ------------------------------------

@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(task_duration=0.05, documented_concurrency=False,
                                documented_rate_limits=False), api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        yield server


def test_a_download_above_the_cap_fails_that_target_only(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from imgbuild.providers.dashscope import client as dashscope

    # The cap (64 MiB by default) set below the size of the big images but above the small ones.
    real = dashscope.DashScopeProvider.__init__

    def small_cap(self: Any, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        self.max_download_bytes = 15_000

    monkeypatch.setattr(dashscope.DashScopeProvider, "__init__", small_cap)
    root = tmp_path / "p"
    generated_project(root, 6)  # q000, w001, f002, q003, w004, f005
    r = run(capsys, "build", "-C", str(root), "--provider", "dashscope", "-k", "--json")
    assert r.code == 1, r
    failed = {t["output"] for t in r.json["targets"] if t["status"] == "failed"}
    built = {t["output"] for t in r.json["targets"] if t["status"] == "built"}
    assert built == {"f002.png", "f005.png"}, r  # 512*512 images fit under the cap
    assert failed == {"q000.png", "w001.png", "q003.png", "w004.png"}, r
    assert "DownloadTooLarge" in r.out + r.err and "15,000-byte cap" in r.out + r.err
    assert not any((root / "out" / f).exists() for f in failed)
    assert temp_files(root) == []


def test_the_sandbox_guard_still_lets_prompts_format_real_numbers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The size guards must not refuse ordinary templates: big numbers in prompts are common."""
    (tmp_path / "imgbuild.yaml").write_text(
        'version: 1\nvars: {pop: 2500000}\nimages:\n  - name: city\n'
        '    prompt: "A banner: {{ \\"{:,}\\".format(pop) }} residents, {{ \\"%d\\"|format(150000) }} visitors,'
        ' {{ (pop * 3) // 2 }} trees, {{ \\"-\\" * 20 }}"\n')
    monkeypatch.chdir(tmp_path)
    r = run(capsys, "plan", "--json")
    assert r.code == 0, r
    from imgbuild.verbs.common import Where, load

    _, [target] = load(Where())
    assert target.request.prompt == ("A banner: 2,500,000 residents, 150000 visitors, 3750000 trees, "
                                     "--------------------")
