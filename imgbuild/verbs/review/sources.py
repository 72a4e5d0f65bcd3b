"""Where `imgbuild review` finds the bytes of an image before and after a change: the output
file in the working tree, the local cache of originals, the team's remote cache (when this
imgbuild has one and the project configures it), or the file as committed at the base revision.
Each image found says where it came from; one found nowhere is None, never an error.
"""
from __future__ import annotations

import posixpath
from typing import Any

from imgbuild.errors import ImgbuildError
from imgbuild.plan import compare as diff
from imgbuild.store.gitref import Repo, Revision

# where an image shown on the page came from
OUTPUT_FILE, LOCAL_CACHE, REMOTE_CACHE = "output file", "local cache", "remote cache"

Found = tuple[bytes, str]  # the bytes and where they came from


class Images:
    """Finds the bytes of an output before and after the change, and says where it found them."""

    def __init__(self, project: Any, repo: Repo, revision: Revision, locks: tuple[Any, Any] | None = None) -> None:
        self.output_dir = project.output_dir
        self.root = project.root
        self.repo, self.revision = repo, revision
        self.project_dir = repo.relative(project.root)
        self.locks = locks  # (base, working tree): where an input's key names an output file
        self.base_output_dir = repo.relative(project.root) + "/" + _base_output_dir(project, repo, revision)
        self.notices: list[str] = []
        self.cache = _open_cache(project, self.notices)
        self.remote = _open_remote(project, self.notices)

    def __enter__(self) -> Images:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cache is not None:
            self.cache.close()

    def pair(self, change: diff.Change) -> tuple[Found | None, Found | None]:
        """(before, after), each (bytes, where from) or None when found nowhere."""
        after = self.after(change) if change.after is not None else None
        if change.kind == diff.UNCHANGED:
            return after, after  # same key, same bytes: one lookup serves both
        if change.before is None:
            return None, after
        if change.kind == diff.MODIFIED:  # a hand edit: compare with the file as it was, not the original
            return self._at_base(change.output) or self._originals(change.before), after
        return self._originals(change.before) or self._at_base(change.output), after

    def after(self, change: diff.Change) -> Found | None:
        from imgbuild.store.outputs import safe_destination

        try:  # a lock names its outputs: never read one that resolves outside output_dir
            return safe_destination(self.output_dir, change.output).read_bytes(), OUTPUT_FILE
        except (OSError, ImgbuildError):
            assert change.after is not None
            return self._originals(change.after)

    def input_image(self, kind: str, ref: str, digest: str) -> Found | None:
        """One input image of an edit, as it was used (see review/inputs.py)."""
        from imgbuild.verbs.review.inputs import find

        return find(self, kind, ref, digest)

    def originals(self, entry: dict[str, Any]) -> Found | None:
        return self._originals(entry)

    def output_with_key(self, name: str, key: str) -> Found | None:
        """The first output of target `name` that a lock records with generation key `key`:
        the working tree's file, else the file as committed at the base."""
        from imgbuild.store.outputs import safe_destination

        for lock, at_base in zip(reversed(self.locks or ()), (False, True)):  # the working tree first
            for output, entry in lock.outputs.items():
                if not isinstance(entry, dict) or entry.get("name") != name or entry.get("key") != key \
                        or entry.get("index", 1) != 1 or "derived_from" in entry:
                    continue
                if at_base:
                    found = self._at_base(output)
                else:
                    try:
                        found = safe_destination(self.output_dir, output).read_bytes(), OUTPUT_FILE
                    except (OSError, ImgbuildError):
                        found = None
                if found is not None:
                    return found
        return None

    def project_file(self, path: str) -> bytes | None:
        """A file of the project by its posix path, only if it resolves inside the project."""
        try:
            resolved = (self.root / path).resolve()
            resolved.relative_to(self.root.resolve())
            return resolved.read_bytes()
        except (OSError, ValueError):
            return None

    def revisions(self) -> list[tuple[str, str]]:
        """(commit, label) where a repository file may be found: the base, then HEAD."""
        return [(self.revision.commit, self.revision.ref), ("HEAD", "HEAD")]

    def _originals(self, entry: dict[str, Any]) -> Found | None:
        position = entry.get("index", 1)  # 1-based among the n images of one request
        if not isinstance(position, int) or position < 1:
            return None
        key, index = str(entry.get("key", "")), position - 1
        if self.cache is not None:
            got = self.cache.get(key)
            if got is not None and index < len(got[0]):
                return got[0][index], LOCAL_CACHE
        if self.remote is not None:
            found = self.remote.get(key, index)
            if found is not None:
                return found, REMOTE_CACHE
        return None

    def _at_base(self, output: str) -> Found | None:
        path = posixpath.normpath(f"{self.base_output_dir}/{output}")
        if path.startswith("../") or posixpath.isabs(path):
            return None
        data = self.repo.show(self.revision.commit, path)
        return None if data is None else (data, f"git {self.revision.ref}")


def _base_output_dir(project: Any, repo: Repo, revision: Revision) -> str:
    """output_dir as the project file at the base revision had it (a change may move it)."""
    from imgbuild.spec import yamlio

    raw = repo.show(revision.commit, repo.relative(project.file))
    try:
        settings = yamlio.load_text(raw.decode("utf-8"), project.file.name) if raw else None
        value = settings.get("output_dir") if isinstance(settings, dict) else None
    except (yamlio.YamlError, UnicodeDecodeError):
        value = None
    return value if isinstance(value, str) else str(project.settings.get("output_dir", "generated"))


def _open_cache(project: Any, notices: list[str]) -> Any:
    """The local cache of originals, if there is one: a review never creates or requires it."""
    from imgbuild.store.originals import Cache, default_dir

    configured = project.settings.get("cache_dir")
    directory = default_dir(project.root / configured if configured else None)
    if not (directory / "cache.db").is_file():
        return None
    try:
        return Cache(directory)
    except ImgbuildError as e:
        notices.append(f"{e}; looking for images in git only")
        return None


def _open_remote(project: Any, notices: list[str]) -> Any:
    """The team's remote cache (issue 14, imgbuild/store/remote.py) when this imgbuild has it
    and the project configures one; otherwise None, and before-images come from git."""
    import importlib.util

    if importlib.util.find_spec("imgbuild.store.remote") is None:
        return None
    from imgbuild.store import remote

    config = remote.configure(project.settings)
    if config is None:
        return None
    try:
        return RemoteImages(remote.Remote(config))
    except (ImportError, ImgbuildError) as e:
        notices.append(f"remote cache {config.url} unavailable ({e}); looking in the local cache and git")
        return None


class RemoteImages:
    """Originals of one generation key from a remote cache; any fault there means not found."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def get(self, key: str, index: int) -> bytes | None:
        try:
            found = self.store.fetch(key)
        except ImgbuildError:
            return None
        if found is None or index >= len(found[0]):
            return None
        return bytes(found[0][index])
