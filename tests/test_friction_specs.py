"""Spec mistakes a new user made (issue 11): YAML syntax errors carry a one-line hint; a typo in
a matrix spec is reported once, with the row count, a did-you-mean and the line of the typo;
a target renamed without a seed says how to keep its image."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run

HEAD = "version: 1\noutput_dir: out\nimages:\n"


@pytest.mark.parametrize(("body", "line", "hint"), [
    ("\t- name: x\n    prompt: A cup.\n", 4, "never tabs"),
    ("  - name: x\n    prompt: Title: hello\n", 5, 'must be quoted: prompt: "Title: hello"'),
    ("  - name: x\n   prompt: A cup.\n", 5, "check the indentation"),
])
def test_yaml_syntax_errors_carry_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         body: str, line: int, hint: str) -> None:
    (tmp_path / "imgbuild.yaml").write_text(HEAD + body, encoding="utf-8")
    r = run(capsys, "validate", "-C", str(tmp_path))
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 3 and f"imgbuild.yaml:{line}:" in lines[1], r.err
    assert lines[2].strip().startswith("hint: ") and hint in lines[2], r.err


MATRIX = HEAD + """\
  - name: "bike-{{ bike.kind }}-{{ c }}"
    matrix:
      bike: [{kind: road}, {kind: city}, {kind: cargo}]
      c: [red, blue]
    prompt: |
      A studio photo of a bicycle,
      a {{ bike.knd }} bike in {{ c }}.
"""


def test_a_typo_in_a_matrix_spec_is_reported_once_at_its_own_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imgbuild.yaml").write_text(MATRIX, encoding="utf-8")
    r = run(capsys, "validate", "-C", str(tmp_path), "--json")
    assert r.code == 2, r
    [problem] = r.json["problems"]
    assert (problem["line"], problem["col"]) == (10, 17), problem  # `knd` in the block's 2nd line
    assert problem["where"].endswith("(and 5 more matrix rows)"), problem
    assert "has no attribute 'knd' (did you mean 'kind'?)" in problem["message"], problem
    (tmp_path / "imgbuild.yaml").write_text(MATRIX.replace("bike.knd", "bke.kind"), encoding="utf-8")
    [problem] = run(capsys, "validate", "-C", str(tmp_path), "--json").json["problems"]
    assert (problem["line"], problem["col"]) == (10, 12), problem
    assert "undefined variable 'bke' (did you mean 'bike'?)" in problem["message"], problem


def test_a_rename_without_a_seed_says_to_pin_the_old_seed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = HEAD + "  - name: hero\n    output: hero.png\n    prompt: A lighthouse.\n"
    (tmp_path / "imgbuild.yaml").write_text(project, encoding="utf-8")
    assert run(capsys, "build", "-C", str(tmp_path)).code == 0
    seed = run(capsys, "plan", "-C", str(tmp_path), "-v", "--json").json
    (tmp_path / "imgbuild.yaml").write_text(project.replace("name: hero", "name: banner"), encoding="utf-8")
    r = run(capsys, "plan", "-C", str(tmp_path))
    old = [line for line in r.out.splitlines() if "seed: " in line and "->" in line][0].split()[1]
    assert f"pin `seed: {old}` in the spec to keep the image" in r.out, r.out
    assert seed["by_kind"]["images"] == {"up_to_date": 1}
    # pinning it keeps the image: nothing to generate
    (tmp_path / "imgbuild.yaml").write_text(
        project.replace("name: hero", "name: banner").replace("output: hero.png", f"output: hero.png\n    seed: {old}"),
        encoding="utf-8")
    r = run(capsys, "plan", "-C", str(tmp_path))
    assert "0 images to generate" in r.out and "pin" not in r.out, r.out


def test_a_free_size_off_the_grid_is_rounded_with_a_note_for_every_target_that_writes_it(tmp_path: Path) -> None:
    """The size a matrix repeats is worked out once (and shared), yet every target still gets
    its own rounding note, and a size on the grid gets none."""
    from imgbuild.spec.expand import expand
    from imgbuild.spec.project import load_project

    (tmp_path / "imgbuild.yaml").write_text(HEAD + (
        "  - name: 'a-{{ i }}'\n    model: qwen-image-2.0\n    size: '1000*1000'\n    prompt: A cup {{ i }}.\n"
        "    matrix: {i: [1, 2, 3]}\n"
        "  - name: exact\n    model: qwen-image-2.0\n    size: '1024*1024'\n    prompt: A cup.\n"), encoding="utf-8")
    targets = {t.name: t for t in expand(load_project(tmp_path / "imgbuild.yaml"))}
    rounded = [targets[f"a-{i}"] for i in (1, 2, 3)]
    assert {t.request.size for t in rounded} == {"992*992"}
    assert all(t.notes == ("size 1000*1000 is sent as 992*992: free sizes are rounded to multiples "
                           "of 16, the grid of every documented size",) for t in rounded)
    assert targets["exact"].request.size == "1024*1024" and targets["exact"].notes == ()
