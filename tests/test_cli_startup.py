"""`imgbuild --version` and `imgbuild --help` are answered before click is imported, and say
exactly what click would say."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from imgbuild.cli.app import render_top_help
from imgbuild.cli.helptext import TOP_HELP

CLICK_MAIN = "import sys; from imgbuild.cli.app import main; sys.exit(main(sys.argv[1:]))"
FAST_MAIN = ("import sys; from imgbuild.cli import main; code = main(sys.argv[1:]); "
             "sys.stderr.write(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('click', 'imgbuild', 'typing', 'jinja2', 'yaml')))); sys.exit(code)")


def _run(code: str, args: list[str], columns: int | None = 80) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          check=False, stdin=subprocess.DEVNULL)


def test_the_stored_help_is_what_click_renders_for_the_real_group() -> None:
    assert TOP_HELP == render_top_help(), (
        "imgbuild/cli/helptext.py is out of date: run\n"
        '    python -c "from imgbuild.cli.app import write_help_module; write_help_module()"')


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["--help"], ["-h"]])
@pytest.mark.parametrize("columns", [80, 200])
def test_version_and_help_match_click_without_importing_it(args: list[str], columns: int) -> None:
    fast = _run(FAST_MAIN, args, columns)
    slow = _run(CLICK_MAIN, args, columns)
    assert (fast.returncode, fast.stdout) == (slow.returncode, slow.stdout) == (0, slow.stdout)
    assert slow.stdout.startswith("imgbuild, version " if args[0] in ("-V", "--version") else "Usage: imgbuild")
    assert set(fast.stderr.split()) <= {"imgbuild", "imgbuild._version", "imgbuild.cli", "imgbuild.cli.helptext"}, \
        fast.stderr


def test_help_on_a_narrow_terminal_goes_to_click() -> None:
    fast = _run(FAST_MAIN, ["--help"], 60)
    slow = _run(CLICK_MAIN, ["--help"], 60)
    assert fast.returncode == 0 and fast.stdout == slow.stdout != TOP_HELP
    assert max(len(line) for line in fast.stdout.splitlines()[:8]) <= 58
    assert "click" in fast.stderr.split()


@pytest.mark.parametrize("args", [["check", "--help"], ["--version", "--help"], ["--help", "build"], []])
def test_anything_else_goes_to_click(args: list[str]) -> None:
    fast = _run(FAST_MAIN, args)
    slow = _run(CLICK_MAIN, args)
    assert (fast.returncode, fast.stdout) == (slow.returncode, slow.stdout)
    assert "click" in fast.stderr.split()


def _imported(importtime: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in importtime.splitlines() if "|" in line}


def test_python_dash_m_and_the_console_script_take_the_fast_path() -> None:
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "imgbuild", "--version"],
                         capture_output=True, text=True, check=True, env=env)
    assert out.stdout.startswith("imgbuild, version ")
    assert "imgbuild.cli" in _imported(out.stderr) and not {"click", "typing"} & _imported(out.stderr)
    script = os.path.join(os.path.dirname(sys.executable), "imgbuild")
    if not os.path.exists(script):
        message = "no console script next to this Python (the package is not pip-installed)"
        if os.environ.get("CI"):  # CI installs it (pip install -e '.[test]'): missing is a failure
            pytest.fail(message)
        pytest.skip(message)
    out = subprocess.run([sys.executable, "-X", "importtime", script, "-h"],
                         capture_output=True, text=True, check=True, env=env)
    assert out.stdout == TOP_HELP
    assert "imgbuild.cli" in _imported(out.stderr) and "click" not in _imported(out.stderr)
