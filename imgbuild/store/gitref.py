"""Read files as they were at a git revision (`git show REF:path`), for `imgbuild review`.

Git runs as a subprocess with a fixed, small set of arguments; nothing read from the repository
is executed. Paths are given relative to the repository's top level, with `./` resolved by us,
so a project in a sub-folder works too.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from imgbuild.errors import ImgbuildError, UsageError

# Where a pull request usually merges into, tried in this order when --base is not given.
_DEFAULT_BRANCHES = ("origin/HEAD", "origin/main", "origin/master", "main", "master")


@dataclass(frozen=True)
class Revision:
    ref: str  # as the user named it (or as we chose it)
    commit: str  # full hex
    how: str  # "--base", "merge base with origin/main", "HEAD"


class Repo:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def containing(cls, path: Path) -> Repo:
        """The repository `path` lies in; a located error when it lies in none."""
        try:
            out = _git(path, "rev-parse", "--show-toplevel")
        except _GitFailed:
            raise UsageError(f"{path}: not in a git repository; `imgbuild review` compares the "
                             "working tree with a git revision (commit the project first)") from None
        return cls(Path(out.strip()).resolve())

    def relative(self, path: Path) -> str:
        """`path` as git names it inside this repository (posix, relative to the top level)."""
        return path.resolve().relative_to(self.root).as_posix()

    def resolve(self, ref: str | None) -> Revision:
        """--base REF, else the merge base of HEAD with the default branch, else HEAD."""
        if ref is not None:
            commit = self._commit(ref)
            if commit is None:
                raise UsageError(f"--base {ref}: not a git revision of {self.root}")
            return Revision(ref, commit, "--base")
        for branch in _DEFAULT_BRANCHES:
            if self._commit(branch) is None:
                continue
            try:
                base = _git(self.root, "merge-base", "HEAD", branch).strip()
            except _GitFailed:
                continue  # unrelated histories, or a shallow clone without the fork point
            name = self._symbolic(branch) if branch == "origin/HEAD" else branch
            return Revision(name, base, f"merge base with {name}")
        commit = self._commit("HEAD")
        if commit is None:
            raise UsageError(f"{self.root}: the repository has no commit yet; commit the project "
                             "(or pass --base REF)")
        return Revision("HEAD", commit, "HEAD")

    def show(self, commit: str, path: str) -> bytes | None:
        """The bytes of `path` at `commit`, or None when it did not exist there."""
        try:
            return _git_bytes(self.root, "cat-file", "blob", f"{commit}:{path}")
        except _GitFailed:
            return None

    def _commit(self, ref: str) -> str | None:
        try:
            return _git(self.root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip() or None
        except _GitFailed:
            return None

    def _symbolic(self, ref: str) -> str:
        try:
            return _git(self.root, "rev-parse", "--abbrev-ref", ref).strip() or ref
        except _GitFailed:
            return ref


class _GitFailed(Exception):
    pass


def _git_bytes(cwd: Path, *args: str) -> bytes:
    # No pager, no prompts, no config-driven external helpers for these read-only commands.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C"}
    try:
        done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, env=env,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise ImgbuildError("`imgbuild review` needs git, and no `git` program was found") from None
    if done.returncode != 0:
        raise _GitFailed(done.stderr.decode("utf-8", "replace"))
    return done.stdout


def _git(cwd: Path, *args: str) -> str:
    return _git_bytes(cwd, *args).decode("utf-8", "replace")
