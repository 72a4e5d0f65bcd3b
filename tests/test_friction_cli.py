"""Friction a new user met (issue 11): projects found from a subfolder, target names completed
by the shell, help that offers only what the verb does, init naming every file it writes."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.shell_completion import BashComplete
from click.testing import CliRunner
from helpers import run

from imgbuild.cli import cli

PROJECT = """\
version: 1
output_dir: out
images:
  - name: hero
    prompt: A lighthouse.
  - name: "card-{{ c }}"
    matrix: {c: [red, blue]}
    prompt: A {{ c }} card.
"""


def test_a_subfolder_finds_the_project_in_a_parent_up_to_the_repository_root(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    deep = repo / "site" / "assets"
    deep.mkdir(parents=True)
    (repo / ".git").mkdir()
    (repo / "site" / "imgbuild.yaml").write_text(PROJECT, encoding="utf-8")
    r = run(capsys, "plan", "-C", str(deep))
    assert r.code == 0 and "3 images to generate" in r.out, r
    assert run(capsys, "validate", "-C", str(repo / "site")).code == 0
    # a project file above the repository root is never picked up
    (tmp_path / "imgbuild.yaml").write_text(PROJECT, encoding="utf-8")
    (repo / "site" / "imgbuild.yaml").unlink()
    r = run(capsys, "plan", "-C", str(deep))
    assert r.code == 2 and "no imgbuild.yaml" in r.err, r


def _complete(args: list[str], incomplete: str) -> list[str]:
    completer = BashComplete(cli, {}, "imgbuild", "_IMGBUILD_COMPLETE")
    return [item.value for item in completer.get_completions(args, incomplete)]


@pytest.mark.parametrize("verb", ["build", "plan", "html"])
def test_shell_completion_offers_target_names(tmp_path: Path, verb: str) -> None:
    (tmp_path / "imgbuild.yaml").write_text(PROJECT, encoding="utf-8")
    assert _complete([verb, "-C", str(tmp_path)], "card-") == ["card-red", "card-blue"]
    assert _complete([verb, "-C", str(tmp_path)], "h") == ["hero"]
    (tmp_path / "imgbuild.yaml").write_text("images: [", encoding="utf-8")
    assert _complete([verb, "-C", str(tmp_path)], "") == []  # a broken project completes nothing


def test_help_offers_only_what_the_verb_does() -> None:
    runner = CliRunner()
    plan_help = runner.invoke(cli, ["plan", "--help"]).output
    assert "--keep-going" not in plan_help and "-k," not in plan_help
    assert "-k, --keep-going" in runner.invoke(cli, ["build", "--help"]).output
    for verb in ("check", "plan", "validate", "clean", "html"):
        text = " ".join(runner.invoke(cli, [verb, "--help"]).output.split())
        assert "state-change" not in text and "JSON for scripts: one summary object" in text, verb
    assert "state-change object per line" in " ".join(runner.invoke(cli, ["build", "--help"]).output.split())


def test_init_lists_the_schema_it_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "init", "-C", str(tmp_path / "new"))
    assert r.code == 0, r
    assert "imgbuild.schema.json (the schema, for editors)" in r.out, r
    assert (tmp_path / "new" / "imgbuild.schema.json").is_file()
