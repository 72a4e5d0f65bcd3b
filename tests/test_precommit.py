"""This repository's .pre-commit-hooks.yaml, run for real by pre-commit in a scratch git repo.

pre-commit installs the hook from a git repository into its own virtualenv (pip needs the package
index for the dependencies; the hooks themselves never touch the network). The hook repository is
a clone of this one with the working tree's package files laid over it and committed, so the
hooks tested are the code under test. One PRE_COMMIT_HOME per module: the env is built once.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import imgbuild

REPO = Path(__file__).resolve().parent.parent
# What `pip install .` of the hook repository needs from the working tree.
PACKAGE_PATHS = ("imgbuild", "schemas", "pyproject.toml", "README.md", ".pre-commit-hooks.yaml")

# in CI (.ci/run installs git) a missing git fails the tests instead of skipping them
pytestmark = pytest.mark.skipif(shutil.which("git") is None and not os.environ.get("CI"),
                                reason="git is not installed (pre-commit needs it)")

PROJECT = {
    "imgbuild.yaml": (
        "version: 1\n"
        "output_dir: img\n"
        "defaults:\n  model: qwen-image-plus\n  size: '1:1'\n"
        "include: ['specs/*.yaml']\n"
        "images:\n"
        "  - name: hero\n"
        "    size: '16:9'\n"
        "    output: hero.png\n"
        "    prompt: |\n"
        "      {% include 'style.j2' %}\n"
        "      A banner that reads \"Open today\".\n"),
    "specs/icons.yaml": (
        "images:\n"
        "  - name: 'icon-{{ fruit }}'\n"
        "    output: 'icons/{{ fruit }}.webp'\n"
        "    matrix:\n      fruit: [apple, pear]\n"
        "    prompt: A flat icon of one {{ fruit }}.\n"),
    "templates/style.j2": "Clean flat illustration.\n",
}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DASHSCOPE_API_KEY", "IMGBUILD_PROVIDER", "DASHSCOPE_HTTP_BASE_URL", "PRE_COMMIT")}
    env.update(PRE_COMMIT_HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull,
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com", GIT_TERMINAL_PROMPT="0")
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _git(cwd: Path, env: dict[str, str], *args: str) -> str:
    r = _run(["git", *args], cwd, env)
    assert r.returncode == 0, f"git {' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout.strip()


class Hooks:
    def __init__(self, home: Path, repo: Path, rev: str) -> None:
        self.env = _env(home)
        self.repo = repo
        self.rev = rev

    def config(self, *, extra: str = "") -> str:
        return (f"repos:\n  - repo: {self.repo}\n    rev: {self.rev}\n    hooks:\n"
                f"      - id: imgbuild-check\n        args: [--allow-drafts]\n{extra}"
                f"      - id: imgbuild-validate\n")

    def pre_commit(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([sys.executable, "-m", "pre_commit", *args], cwd, self.env)


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooks]:
    try:
        import pre_commit  # noqa: F401
    except ImportError:
        pytest.fail("pre-commit is not installed: pip install -e '.[test]'")
    base = tmp_path_factory.mktemp("precommit")
    env = _env(base / "home")
    repo = base / "imgbuild-hooks"
    _git(base, env, "clone", "--quiet", str(REPO), str(repo))
    for name in PACKAGE_PATHS:  # the working tree, uncommitted changes included
        source, dest = REPO / name, repo / name
        if source.is_dir() and not source.is_symlink():
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(source, dest, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dest.unlink(missing_ok=True)
            shutil.copy2(source, dest, follow_symlinks=False)
    _git(repo, env, "add", "-A", "--", *PACKAGE_PATHS)
    _git(repo, env, "commit", "--quiet", "--allow-empty", "-m", "working tree under test")
    found = Hooks(base / "home", repo, _git(repo, env, "rev-parse", "HEAD"))
    # Build the hook env once, in a repo of its own, so a failure here is clearly about installing.
    warmup = base / "warmup"
    warmup.mkdir()
    _git(warmup, env, "init", "--quiet")
    (warmup / ".pre-commit-config.yaml").write_text(found.config())
    r = found.pre_commit(warmup, "install-hooks")
    assert r.returncode == 0, f"pre-commit could not install the hooks:\n{r.stdout}\n{r.stderr}"
    yield found


@pytest.fixture
def project(tmp_path: Path, hooks: Hooks) -> Path:
    """A git repo holding a small imgbuild project built with the placeholder, and the hooks config."""
    root = tmp_path / "proj"
    for name, text in PROJECT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    summary = imgbuild.build(root, provider="placeholder")
    assert summary["built"] == 3 and summary["failed"] == 0, summary
    (root / ".pre-commit-config.yaml").write_text(hooks.config())
    (root / ".gitignore").write_text(".imgbuild/\n")
    _git(root, hooks.env, "init", "--quiet")
    _git(root, hooks.env, "add", "-A")
    _git(root, hooks.env, "commit", "--quiet", "-m", "images")
    return root


def run_hooks(hooks: Hooks, root: Path) -> subprocess.CompletedProcess[str]:
    return hooks.pre_commit(root, "run", "--all-files", "--color", "never")


def test_fresh_project_passes(hooks: Hooks, project: Path) -> None:
    r = run_hooks(hooks, project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "imgbuild check (images match their specs)" in r.stdout
    assert "imgbuild validate (specs are valid)" in r.stdout
    assert "Failed" not in r.stdout and "Skipped" not in r.stdout


def test_edited_prompt_not_rebuilt_fails(hooks: Hooks, project: Path) -> None:
    spec = project / "specs" / "icons.yaml"
    spec.write_text(spec.read_text().replace("flat icon", "glossy icon"))
    r = run_hooks(hooks, project)
    assert r.returncode != 0
    assert "stale     icons/apple.webp (icon-apple)" in r.stdout, r.stdout
    assert "stale     icons/pear.webp (icon-pear)" in r.stdout
    assert "hero.png" not in r.stdout


def test_deleted_output_fails(hooks: Hooks, project: Path) -> None:
    (project / "img" / "hero.png").unlink()
    r = run_hooks(hooks, project)
    assert r.returncode != 0
    assert "missing   hero.png (hero): the file is missing" in r.stdout, r.stdout


def test_hand_modified_output_fails(hooks: Hooks, project: Path) -> None:
    path = project / "img" / "icons" / "pear.webp"
    path.write_bytes(path.read_bytes() + b"\0")
    r = run_hooks(hooks, project)
    assert r.returncode != 0
    assert "modified  icons/pear.webp (icon-pear)" in r.stdout, r.stdout


def test_bad_spec_fails_validate(hooks: Hooks, project: Path) -> None:
    (project / "imgbuild.yaml").write_text((project / "imgbuild.yaml").read_text().replace("prompt:", "promt:", 1))
    r = run_hooks(hooks, project)
    assert r.returncode != 0
    assert "imgbuild.yaml" in r.stdout and "unknown field 'promt'" in r.stdout, r.stdout


def test_the_installed_hook_blocks_a_commit(hooks: Hooks, project: Path) -> None:
    r = hooks.pre_commit(project, "install")
    assert r.returncode == 0, r.stdout + r.stderr
    head = _git(project, hooks.env, "rev-parse", "HEAD")
    (project / "templates" / "style.j2").write_text("Watercolour illustration.\n")
    _git(project, hooks.env, "add", "templates/style.j2")
    r = _run(["git", "commit", "-m", "restyle without rebuilding"], project, hooks.env)
    assert r.returncode != 0 and "stale     hero.png (hero)" in r.stdout + r.stderr
    assert _git(project, hooks.env, "rev-parse", "HEAD") == head
    # Rebuild, stage the new images and lock: the same commit goes through.
    assert imgbuild.build(project, provider="placeholder")["built"] == 1
    _git(project, hooks.env, "add", "-A")
    r = _run(["git", "commit", "-m", "restyle"], project, hooks.env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_commit_that_only_deletes_an_image_is_caught(hooks: Hooks, project: Path) -> None:
    # pre-commit passes no deleted paths to `files`; the hook is always_run so this still fails.
    assert hooks.pre_commit(project, "install").returncode == 0
    _git(project, hooks.env, "rm", "--quiet", "img/icons/apple.webp")
    r = _run(["git", "commit", "-m", "drop an image"], project, hooks.env)
    assert r.returncode != 0 and "missing   icons/apple.webp (icon-apple)" in r.stdout + r.stderr
