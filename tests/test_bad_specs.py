"""Every bad spec in tests/data/bad_specs/ ends in exit 2 with the exact located message in its
.expected file, and no traceback. Adding a case = adding a .yaml and its .expected."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import run

CASES = sorted((Path(__file__).parent / "data" / "bad_specs").glob("*.yaml"))


def test_there_are_at_least_twelve_distinct_cases() -> None:
    assert len(CASES) >= 12
    messages = {c.with_suffix(".expected").read_text() for c in CASES}
    assert len(messages) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
@pytest.mark.parametrize("command", ["validate", "build", "check", "plan"])
def test_bad_spec_is_reported_precisely(case: Path, command: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(case, tmp_path / "imgbuild.yaml")
    monkeypatch.chdir(tmp_path)
    r = run(capsys, command)
    assert r.code == 2, r
    expected = case.with_suffix(".expected").read_text().strip()
    assert expected in r.err, r
    assert expected.startswith("imgbuild.yaml:")  # every message is located
    assert not (tmp_path / "generated").exists()  # nothing was generated


def test_all_problems_of_a_run_are_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: a\n    prompt: '{{ nope }}'\n"
        "  - name: b\n    prompt: ok\n    size: '9*9'\n  - name: c\n    prompt: ok\n    colour: red\n")
    monkeypatch.chdir(tmp_path)
    r = run(capsys, "validate")
    assert r.code == 2
    assert "imgbuild.yaml:10:5: images[c]: unknown field 'colour'" in r.err
    # schema problems stop before rendering; fix them and the template/model problems show together
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: a\n    prompt: '{{ nope }}'\n"
        "  - name: b\n    prompt: ok\n    size: '9*9'\n")
    r = run(capsys, "validate")
    assert "2 problems" in r.err
    assert "imgbuild.yaml:4:13: images[a].prompt: undefined variable 'nope'" in r.err
    assert "imgbuild.yaml:7:11: images[b].size: 9*9 is not a legal size for qwen-image-plus" in r.err


def test_errors_in_included_files_name_that_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "imgbuild.yaml").write_text("version: 1\ninclude: ['specs/*.yaml']\n")
    (tmp_path / "specs" / "team.yaml").write_text("images:\n  - name: x\n    prompt: p\n    seed: -1\n")
    monkeypatch.chdir(tmp_path)
    r = run(capsys, "check")
    assert r.code == 2
    assert "specs/team.yaml:4:11: images[x].seed: -1 is below the minimum 0" in r.err


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
@pytest.mark.parametrize("command", ["validate", "build", "check", "plan"])
def test_json_lists_every_located_problem(case: Path, command: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--json on a bad spec: the last line of stdout is one object whose `problems` hold each
    located problem (the same text as the message, field by field), and the exit code is 2."""
    shutil.copy(case, tmp_path / "imgbuild.yaml")
    monkeypatch.chdir(tmp_path)
    r = run(capsys, command, "--json")
    assert r.code == 2, r
    doc = r.json
    assert doc["command"] == command and doc["problems"], r
    expected = case.with_suffix(".expected").read_text().strip()
    rendered = [f"{p['file']}:{p['line']}:{p['col']}: {p['where']}: {p['message']}" if p["where"]
                else f"{p['file']}:{p['line']}:{p['col']}: {p['message']}" for p in doc["problems"]]
    assert any(expected in line for line in rendered), (expected, rendered)


INCLUDED = {
    # an expansion problem (a size) in the first file, a schema problem in the second: the
    # schema's alone are said, as ever, though a build reads and expands the files in turn
    "schema": {"a.yaml": "images:\n  - name: x\n    prompt: p\n    size: '9*9'\n",
               "b.yaml": "images:\n  - name: y\n    prompt: p\n    colour: red\n",
               "c.yaml": "images:\n  - name: z\n    prompt: p\n    seed: -1\n"},
    # no schema problem: every file's expansion problems, a name claimed in another file too
    "expansion": {"a.yaml": "images:\n  - name: x\n    prompt: '{{ nope }}'\n",
                  "b.yaml": "images:\n  - name: y\n    prompt: p\n    size: '9*9'\n  - name: w\n    prompt: p\n",
                  "c.yaml": "images:\n  - name: w\n    prompt: again\n"},
    "yaml": {"a.yaml": "images:\n  - name: x\n    prompt: '{{ nope }}'\n",
             "b.yaml": "images:\n  - name: y\n   prompt: p\n"},
}


@pytest.mark.parametrize("case", sorted(INCLUDED))
def test_a_build_says_of_included_files_what_validate_says(case: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A build reads, checks and expands its spec files one at a time (so that it does not hold
    them all); validate reads them all first. Both find the same problems, in the same order."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "imgbuild.yaml").write_text("version: 1\ninclude: ['specs/*.yaml']\n")
    for name, text in INCLUDED[case].items():
        (tmp_path / "specs" / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    said = {}
    for command in ("validate", "build"):
        r = run(capsys, command, "--json")
        assert r.code == 2, r
        said[command] = r.json["problems"]
    assert said["build"] == said["validate"]
    files = {p["file"] for p in said["build"]}
    assert files == ({"specs/b.yaml", "specs/c.yaml"} if case == "schema" else
                     {"specs/a.yaml", "specs/b.yaml", "specs/c.yaml"} if case == "expansion" else {"specs/b.yaml"})
    assert not (tmp_path / "generated").exists()
