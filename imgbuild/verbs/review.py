"""`imgbuild review`: what a change did to the images, as a static page to look at before merging.

Compares the working tree's lock with the lock at a git revision (`--base`, else the merge base
with the default branch, else HEAD) and writes index.html, webp thumbnails and review.json (and
with `--markdown`, a summary for a pull-request comment). Needs no key and calls no provider:
before-images come from the local cache, the remote cache when one is configured, or the file
as committed at the base; after-images from the output files, else the caches. An image found
nowhere is shown as missing.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgbuild.errors import ImgbuildError
from imgbuild.plan import compare as diff
from imgbuild.store import lockfile
from imgbuild.store.gitref import Repo, Revision
from imgbuild.verbs.common import Where
from imgbuild.verbs.results import ReviewResult

REVIEW_DIR = "review"  # under the project's .imgbuild/

# where an image shown on the page came from
OUTPUT_FILE, LOCAL_CACHE, REMOTE_CACHE = "output file", "local cache", "remote cache"


@dataclass(frozen=True)
class ReviewOptions:
    base: str | None = None
    out_dir: str | None = None
    markdown: str | None = None
    report_url: str | None = None  # where the page will be published (links in the markdown)
    open_browser: bool = False


def review(where: Where, sink: Any, options: ReviewOptions) -> ReviewResult:
    from imgbuild.plan.caches import StatCache
    from imgbuild.spec.project import find_project_file, load_project
    from imgbuild.verbs import review_page

    project = load_project(find_project_file(where.directory, where.file))
    repo = Repo.containing(project.root)
    revision = repo.resolve(options.base)
    base_lock = _lock_at(repo, revision, repo.relative(project.lock_path))
    stats = StatCache(project.state_dir)
    output_dir = str(project.output_dir)
    comparison = diff.compare(base_lock, lockfile.read(project.lock_path),
                              region=project.settings.get("region", "beijing"),
                              file_sha256=lambda o: stats.sha256(os.path.join(output_dir, o)))
    stats.save()
    out = Path(options.out_dir).resolve() if options.out_dir else project.state_dir / REVIEW_DIR
    with Images(project, repo, revision) as images:
        cards = _cards(comparison.changes, images, out / review_page.THUMBS)
        notices = images.notices
    review_page.number(cards)
    for note in notices:
        sink.notice(note)
    result = ReviewResult(project=project.display(project.file), base=revision, comparison=comparison,
                          cards=cards, out_dir=out, notices=notices)
    review_page.write(result, options)
    if options.open_browser:
        import webbrowser

        webbrowser.open(result.index.as_uri())
    return result


def _lock_at(repo: Repo, revision: Revision, path: str) -> lockfile.Lock:
    """The lock as committed at `revision` (empty when the project had none there)."""
    import json

    raw = repo.show(revision.commit, path)
    if raw is None:
        return lockfile.Lock()
    try:
        doc = json.loads(raw)
        outputs = doc["outputs"] if isinstance(doc, dict) else None
        if not isinstance(outputs, dict):
            raise ValueError
    except (ValueError, KeyError):
        raise ImgbuildError(f"{revision.ref}:{path}: not an imgbuild lockfile; "
                            "pass --base with a revision whose lock is intact") from None
    return lockfile.Lock(outputs)


def _cards(changes: list[diff.Change], images: Images, thumbs: Path) -> list[dict[str, Any]]:
    """One card per output, with its images found and thumbnailed (in threads: reading files
    and git blobs waits, and Pillow decodes without holding the GIL)."""
    from imgbuild.verbs.review_page import card

    thumbs.mkdir(parents=True, exist_ok=True)
    workers = min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: card(c, images.pair(c), thumbs), changes))


class Images:
    """Finds the bytes of an output before and after the change, and says where it found them."""

    def __init__(self, project: Any, repo: Repo, revision: Revision) -> None:
        self.output_dir = project.output_dir
        self.repo, self.revision = repo, revision
        self.base_output_dir = repo.relative(project.root) + "/" + _base_output_dir(project, repo, revision)
        self.notices: list[str] = []
        self.cache = _open_cache(project, self.notices)
        self.remote = _open_remote(project, self.notices)

    def __enter__(self) -> Images:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cache is not None:
            self.cache.close()

    def pair(self, change: diff.Change) -> tuple[tuple[bytes, str] | None, tuple[bytes, str] | None]:
        """(before, after), each (bytes, where from) or None when found nowhere."""
        after = self.after(change) if change.after is not None else None
        if change.kind == diff.UNCHANGED:
            return after, after  # same key, same bytes: one lookup serves both
        if change.before is None:
            return None, after
        at_base = self._at_base(change.output)
        if change.kind == diff.MODIFIED and at_base is not None:
            return at_base, after  # a hand edit: compare with the file as it was, not the original
        return self._originals(change.before) or at_base, after

    def after(self, change: diff.Change) -> tuple[bytes, str] | None:
        try:
            return (self.output_dir / change.output).read_bytes(), OUTPUT_FILE
        except OSError:
            assert change.after is not None
            return self._originals(change.after)

    def _originals(self, entry: dict[str, Any]) -> tuple[bytes, str] | None:
        key, index = str(entry.get("key", "")), int(entry.get("index", 1)) - 1
        if self.cache is not None:
            got = self.cache.get(key)
            if got is not None and index < len(got[0]):
                return got[0][index], LOCAL_CACHE
        if self.remote is not None:
            found = self.remote.get(key, index)
            if found is not None:
                return found, REMOTE_CACHE
        return None

    def _at_base(self, output: str) -> tuple[bytes, str] | None:
        import posixpath

        data = self.repo.show(self.revision.commit, posixpath.normpath(f"{self.base_output_dir}/{output}"))
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
