"""The README's pick-workflow session (issue 16) is the real one: its `imgbuild.yaml` is built in a
fresh git repository and each command of the session is run as a user would run it (a separate
process, stderr and stdout in one stream); the text must match, except the 12-hex-digit digests and
the commit id, which depend on the image encoder and the clock."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
VARIABLE = re.compile(r"\b[0-9a-f]{10,12}\b")


def section() -> tuple[str, list[tuple[str, list[str]]]]:
    text = README.read_text("utf-8")
    part = text[text.index("## Picking among candidates"):]
    part = part[:part.index("\n## ", 5)]
    spec = re.search(r"```yaml\n(.*?)```", part, re.S)
    session = re.search(r"```console\n(.*?)```", part, re.S)
    assert spec and session, "the README's pick-workflow section has lost its spec or its session"
    steps: list[tuple[str, list[str]]] = []
    for line in session.group(1).splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return spec.group(1), steps


@pytest.mark.skipif(shutil.which("git") is None and not os.environ.get("CI"), reason="needs git")
def test_the_readme_pick_session_is_what_imgbuild_prints(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec, steps = section()
    assert [c.split()[:2] for c, _ in steps[:5]] == [["imgbuild", "build"], ["imgbuild", "check"],
                                                    ["imgbuild", "review"], ["imgbuild", "accept"],
                                                    ["imgbuild", "accept"]]
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # the two streams in the order they were written
    for name, value in (("GIT_AUTHOR_NAME", "t"), ("GIT_AUTHOR_EMAIL", "t@example.com"),
                        ("GIT_COMMITTER_NAME", "t"), ("GIT_COMMITTER_EMAIL", "t@example.com")):
        monkeypatch.setenv(name, value)
    root = tmp_path / "site"
    root.mkdir()
    (root / "imgbuild.yaml").write_text(spec, encoding="utf-8")
    for git in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "spec"]):
        subprocess.run(git, cwd=root, check=True)
    imgbuild = [sys.executable, "-c", "import sys; from imgbuild.cli import main; sys.exit(main())"]
    for command, expected in steps:
        if command.startswith("imgbuild "):
            argv = imgbuild + command.split()[1:]
            done = subprocess.run(argv, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=120)
        else:
            done = subprocess.run(command, shell=True, cwd=root, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, timeout=60)
        got = [VARIABLE.sub("#", line) for line in done.stdout.splitlines()]
        assert got == [VARIABLE.sub("#", line) for line in expected], (command, done.stdout)
    status = subprocess.run(["git", "status", "--porcelain", "--", "imgbuild.lock", "generated"],
                            cwd=root, stdout=subprocess.PIPE, text=True, check=True)
    assert status.stdout == ""  # the pick is committed
