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
from imgbuild.verbs.review.sources import Images

REVIEW_DIR = "review"  # under the project's .imgbuild/


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
    from imgbuild.verbs.review import page as review_page

    project = load_project(find_project_file(where.directory, where.file))
    repo = Repo.containing(project.root)
    revision = repo.resolve(options.base)
    base_lock = _lock_at(repo, revision, repo.relative(project.lock_path))
    lock = lockfile.read(project.lock_path)
    stats = StatCache(project.state_dir)
    output_dir = str(project.output_dir)
    comparison = diff.compare(base_lock, lock,
                              region=project.settings.get("region", "beijing"),
                              file_sha256=lambda o: stats.sha256(os.path.join(output_dir, o)))
    stats.save()
    out = Path(options.out_dir).resolve() if options.out_dir else project.state_dir / REVIEW_DIR
    with Images(project, repo, revision, (base_lock, lock)) as images:
        cards = _cards(comparison.changes, images, out / review_page.THUMBS)
        picks = review_page.pending_picks(project, out / review_page.THUMBS, images)
        notices = images.notices
    review_page.number(cards)
    for note in notices:
        sink.notice(note)
    result = ReviewResult(project=repo.relative(project.file), base=revision, comparison=comparison,
                          cards=cards, out_dir=out, notices=notices, picks=picks)
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
    from imgbuild.verbs.review.page import card

    thumbs.mkdir(parents=True, exist_ok=True)
    workers = min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: card(c, images.pair(c), thumbs, images), changes))
