"""`imgbuild init`: a starter project that validates, a schema modeline, .imgbuild/ ignored once."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run

REPO = Path(__file__).resolve().parent.parent


def test_init_writes_a_valid_project_and_gitignore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "new" / "proj"  # -C DIR is created when missing
    r = run(capsys, "init", "-C", str(target), "--json")
    assert r.code == 0, r
    assert r.json == {"command": "init", "project_file": str(target / "imgbuild.yaml"), "gitignore": "created",
                      "schema_file": str(target / "imgbuild.schema.json")}
    text = (target / "imgbuild.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=./imgbuild.schema.json"
    local = json.loads((target / "imgbuild.schema.json").read_text())
    assert local == json.loads((REPO / "schemas" / "imgbuild.schema.json").read_text())
    assert "\nversion: 1\n" in text and "#   - name: hero" in text
    assert (target / ".gitignore").read_text() == ".imgbuild/\n"
    r = run(capsys, "validate", "-C", str(target), "--json")
    assert r.code == 0 and r.json["targets"] == 0, r
    assert run(capsys, "check", "-C", str(target)).code == 0


def test_uncommented_example_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "init", "-C", str(tmp_path)).code == 0
    path = tmp_path / "imgbuild.yaml"
    lines = path.read_text().splitlines()
    start = lines.index("# images:")
    lines = [ln for ln in lines[:start] if ln != "images: []"] + [ln[2:] for ln in lines[start:]]
    path.write_text("\n".join(lines) + "\n")
    r = run(capsys, "build", "-C", str(tmp_path), "--json")
    assert r.code == 0, r
    assert r.json["built"] == 1 and (tmp_path / "generated" / "hero.png").is_file()
    assert run(capsys, "check", "-C", str(tmp_path), "--allow-drafts").code == 0


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imgbuild.yaml").write_text("version: 1\n")
    r = run(capsys, "init", "-C", str(tmp_path))
    assert r.code == 2
    assert "imgbuild.yaml already exists; init never overwrites it" in r.err
    assert (tmp_path / "imgbuild.yaml").read_text() == "version: 1\n"
    assert not (tmp_path / ".gitignore").exists()


@pytest.mark.parametrize(("before", "after", "state"), [
    ("node_modules/\n", "node_modules/\n.imgbuild/\n", "updated"),
    ("node_modules/", "node_modules/\n.imgbuild/\n", "updated"),  # no final newline
    ("", ".imgbuild/\n", "updated"),
    ("a\n.imgbuild/\nb\n", "a\n.imgbuild/\nb\n", "unchanged"),
    ("/.imgbuild\n", "/.imgbuild\n", "unchanged"),
])
def test_gitignore_line_added_once(tmp_path: Path, capsys: pytest.CaptureFixture[str], before: str,
                                   after: str, state: str) -> None:
    (tmp_path / ".gitignore").write_text(before)
    r = run(capsys, "init", "-C", str(tmp_path), "--json")
    assert r.code == 0 and r.json["gitignore"] == state
    assert (tmp_path / ".gitignore").read_text() == after


def test_init_in_the_current_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run(capsys, "init")
    assert r.code == 0 and "created imgbuild.yaml" in r.out
    assert (tmp_path / "imgbuild.yaml").is_file()


def test_init_rejects_a_file_as_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("")
    r = run(capsys, "init", "-C", str(tmp_path / "f"))
    assert r.code == 2 and "not a directory" in r.err
