"""The package's shape, checked from the source (ast), so that it stays true: data flows one
way (load → validate → expand → plan → execute → store → report), and only `report` (and `cli`
for usage errors) talks to the terminal."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "imgbuild"


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("imgbuild", *path.relative_to(PACKAGE).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = ast.parse(path.read_text("utf-8"))
    return out


MODULES = modules()


def imports_of(name: str, tree: ast.Module) -> set[str]:
    """Every imgbuild module `name` imports, at any depth (function-level imports included)."""
    found = set()
    package = name if (PACKAGE / Path(*name.split(".")[1:]) / "__init__.py").exists() else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("imgbuild"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("imgbuild"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in MODULES else base)
    return found - {name}


def under(name: str, *stages: str) -> bool:
    return any(name == f"imgbuild.{s}" or name.startswith(f"imgbuild.{s}.") for s in stages)


LOW = ("plan", "spec", "store", "images")
HIGH = ("providers", "run", "verbs", "cli", "report", "api")


@pytest.mark.parametrize("name", sorted(n for n in MODULES if under(n, *LOW)))
def test_lower_stages_never_import_higher_ones(name: str) -> None:
    bad = sorted(m for m in imports_of(name, MODULES[name]) if under(m, *HIGH))
    assert not bad, f"{name} imports {bad}"


def test_the_core_types_import_nothing_of_imgbuild() -> None:
    assert imports_of("imgbuild.spec.types", MODULES["imgbuild.spec.types"]) == set()
    assert imports_of("imgbuild._version", MODULES["imgbuild._version"]) == set()


@pytest.mark.parametrize("name", sorted(n for n in MODULES if under(n, "verbs", "run", "providers")))
def test_nothing_below_the_cli_imports_report_or_cli(name: str) -> None:
    bad = sorted(m for m in imports_of(name, MODULES[name]) if under(m, "cli", "report", "api"))
    assert not bad, f"{name} imports {bad}"


def _writes_to_terminal(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id == "print":
                lines.append(node.lineno)
            elif isinstance(f, ast.Attribute) and f.attr in ("echo", "secho") and \
                    isinstance(f.value, ast.Name) and f.value.id == "click":
                lines.append(node.lineno)
        elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr") and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not under(n, "report", "cli", "emulator")))
def test_only_report_and_cli_write_to_the_terminal(name: str) -> None:
    # the emulator is a program of its own (its server prints where it listens)
    assert _writes_to_terminal(MODULES[name]) == [], f"{name} prints"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_a_hub(name: str) -> None:
    own = {m for m in imports_of(name, MODULES[name]) if not under(m, "errors", "_version")}
    if name == "imgbuild.cli.app":  # the dispatcher imports one verb module per command, and no stage
        assert not [m for m in own if under(m, "plan", "run", "store", "images", "providers")], own
        own = {m for m in own if not under(m, "verbs")}
    assert len(own) <= 9, f"{name} imports {len(own)} imgbuild modules: {sorted(own)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_function_is_over_60_lines(name: str) -> None:
    long = []
    for node in ast.walk(MODULES[name]):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            # the Jinja sandbox's class factory defines its guarded class inside one function
            if length > 60 and node.name != "_guarded_sandbox":
                long.append(f"{node.name} ({length} lines)")
    assert not long, f"{name}: {long}"


def test_commands_hub_is_gone() -> None:
    assert "imgbuild.commands" not in MODULES
