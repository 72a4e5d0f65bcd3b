"""The emulator stands alone: it imports nothing from the rest of imgbuild, so the client's
model table is tested against the emulator's own tables instead of being shared with them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import imgbuild.emulator

EMULATOR = Path(imgbuild.emulator.__file__).parent


def _foreign_imports(path: Path) -> list[str]:
    """Every import in `path` (top level or nested) that reaches imgbuild outside emulator/."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level >= 2:  # `from .. import x` leaves the emulator package
                what = node.module or ", ".join(alias.name for alias in node.names)
                found.append(f"{path.name}:{node.lineno}: from {'.' * node.level} {what}")
                continue
            if node.level == 1:
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            if (name == "imgbuild" or name.startswith("imgbuild.")) and not (
                    name == "imgbuild.emulator" or name.startswith("imgbuild.emulator.")):
                found.append(f"{path.name}:{node.lineno}: {name}")
    return found


def test_nothing_under_emulator_imports_the_rest_of_imgbuild() -> None:
    files = sorted(EMULATOR.glob("*.py"))
    assert len(files) >= 8, files  # the walk really sees the package
    offenders = [hit for path in files for hit in _foreign_imports(path)]
    assert offenders == []


def test_the_checker_sees_the_imports_it_must_refuse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import imgbuild.spec.catalogue\n"
                   "def f():\n    from imgbuild.providers import base\n"
                   "from .. import commands\n"
                   "from imgbuild.emulator import tables\nfrom . import faults\n", "utf-8")
    assert sorted(hit.split(": ", 1)[1] for hit in _foreign_imports(bad)) == [
        "from .. commands", "imgbuild.providers", "imgbuild.spec.catalogue"]


def test_running_the_emulator_loads_no_other_imgbuild_module() -> None:
    code = ("import sys, imgbuild.emulator.server, imgbuild.emulator.runner\n"
            "print(sorted(m for m in sys.modules if m.startswith('imgbuild')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = eval(out)  # a list literal printed just above
    assert [m for m in loaded if not m.startswith("imgbuild.emulator")] == [
        "imgbuild", "imgbuild._version"]
