"""`imgbuild review`: a throwaway git repository holds a built project; a second commit's worth of
changes (a prompt, a size, one target added, one removed) is built, and review compares the two.
It needs no key, no network and no provider: every test here refuses sockets."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from helpers import run

from imgbuild.plan.compare import compare
from imgbuild.plan.cost import unit_price
from imgbuild.store.lockfile import Lock

PROJECT = """\
version: 1
output_dir: out
defaults: {model: qwen-image-2.0, size: "512*512"}
images:
  - name: keep
    prompt: a quiet harbour at dawn, fishing boats
  - name: reword
    prompt: a red bicycle leaning against a white wall
  - name: resize
    prompt: a lighthouse in thick fog
    size: "512*512"
  - name: gone
    prompt: a bowl of lemons on a blue table
"""

CHANGED = """\
version: 1
output_dir: out
defaults: {model: qwen-image-2.0, size: "512*512"}
images:
  - name: keep
    prompt: a quiet harbour at dawn, fishing boats
  - name: reword
    prompt: a blue bicycle leaning against a white wall
  - name: resize
    prompt: a lighthouse in thick fog
    size: "768*512"
  - name: fresh
    prompt: a paper kite over a beach
"""


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.invalid",
                           "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
                          cwd=root, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("review tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def committed_build(root: Path, capsys: pytest.CaptureFixture[str], project: str, message: str) -> Path:
    """A git repository at `root` whose main holds `project`, built (state folder ignored)."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    (root / "imgbuild.yaml").write_text(project)
    (root / ".gitignore").write_text(".imgbuild/\n")
    assert run(capsys, "build", "-C", str(root), "-q").code == 0
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return root


def make_repo(root: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """main: the project built and committed; working tree: the four changes, built."""
    committed_build(root, capsys, PROJECT, "images")
    (root / "imgbuild.yaml").write_text(CHANGED)
    assert run(capsys, "build", "-C", str(root), "-q").code == 0
    return root


@pytest.fixture
def repo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    return make_repo(tmp_path / "repo", capsys)


def review_doc(root: Path) -> dict[str, Any]:
    return json.loads((root / ".imgbuild" / "review" / "review.json").read_text())


def by_output(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["output"]: t for t in doc["targets"]}


def test_review_lists_exactly_the_four_changes_with_their_kinds_and_diffs(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "review", "-C", str(repo), "--markdown", str(repo / "summary.md"), "--json")
    assert r.code == 0, r
    assert r.json["base"]["ref"] == "main" and r.json["base"]["how"] == "merge base with main"
    doc = review_doc(repo)
    targets = by_output(doc)
    assert {o: t["kind"] for o, t in targets.items()} == {
        "keep.png": "unchanged", "reword.png": "changed", "resize.png": "changed",
        "fresh.png": "new", "gone.png": "removed"}
    assert doc["counts"] == {"new": 1, "changed": 2, "modified": 0, "removed": 1, "unchanged": 1}
    assert {(t["kind"], t["output"]) for t in r.json["targets"]} == {
        ("changed", "reword.png"), ("changed", "resize.png"), ("new", "fresh.png"), ("removed", "gone.png")}

    reword = targets["reword.png"]
    assert reword["prompts"]["prompt"]["diff"] == "a [-red-] {+blue+} bicycle leaning against a white wall"
    assert reword["params"] == []
    resize = targets["resize.png"]
    assert resize["prompts"] == {}
    assert resize["params"] == [{"field": "size", "before": "512*512", "after": "768*512"}]
    assert (resize["before"]["width"], resize["after"]["width"]) == (512, 768)
    assert resize["before"]["key"] != resize["after"]["key"]
    # drafts: nothing was paid between the locks
    assert (doc["images_paid"], doc["spent"]) == (0, 0)
    assert all(t["after"]["draft"] for t in targets.values() if t["after"])

    # before-images from the cache of originals, after-images from the output files
    assert {o: (t["before"] or {}).get("source") for o, t in targets.items()} == {
        "keep.png": "output file", "reword.png": "local cache", "resize.png": "local cache",
        "fresh.png": None, "gone.png": "local cache"}
    assert targets["fresh.png"]["after"]["source"] == "output file"
    assert targets["gone.png"]["after"] is None
    report = repo / ".imgbuild" / "review"
    for t in targets.values():
        for side in (t["before"], t["after"]):
            if side is not None:
                with Image.open(report / side["thumb"]) as thumb:
                    assert thumb.format == "WEBP" and max(thumb.size) <= 384

    summary = (repo / "summary.md").read_text()
    assert "### imgbuild review: 1 new, 2 changed, 1 removed, 1 unchanged" in summary
    assert "**0 image(s) paid, 0.00 CNY**" in summary
    assert "| changed | [reword](.imgbuild/review/index.html#t-reword-png) | `reword.png` |" in summary
    assert "a <del>red</del> <ins>blue</ins> bicycle" in summary
    assert "| removed | [gone](" in summary and "| new | [fresh](" in summary
    assert "keep.png" not in summary

    text = run(capsys, "review", "-C", str(repo))
    assert text.code == 0
    assert "changed    reword.png (reword): prompt: a [-red-] {+blue+} bicycle" in text.out
    assert "1 new, 2 changed, 0 modified, 1 removed, 1 unchanged; 0 image(s) paid, 0.00 CNY" in text.out


def test_before_images_come_from_git_when_the_cache_is_empty_and_are_missing_when_nowhere(
        repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert run(capsys, "review", "-C", str(repo)).code == 0
    targets = by_output(review_doc(repo))
    assert targets["reword.png"]["before"]["source"] == "git main"
    assert targets["gone.png"]["before"]["source"] == "git main"
    assert not (tmp_path / "empty-cache").exists(), "review created a cache it had no use for"

    # Outputs that were never committed, and no cache: the before-image is missing, not an error.
    git(repo, "rm", "-q", "--cached", "out/reword.png")
    git(repo, "commit", "-q", "-m", "untrack")
    r = run(capsys, "review", "-C", str(repo), "--base", "HEAD", "-o", str(tmp_path / "r2"))
    assert r.code == 0, r
    reword = by_output(json.loads((tmp_path / "r2" / "review.json").read_text()))["reword.png"]
    assert reword["kind"] == "changed"
    assert reword["before"]["source"] is None and reword["before"]["thumb"] is None
    assert reword["after"]["source"] == "output file"
    assert reword["prompts"]["prompt"]["diff"].startswith("a [-red-] {+blue+} bicycle")
    assert "not found in the caches or git" in (tmp_path / "r2" / "index.html").read_text()


def test_a_hand_edit_shows_as_modified_with_a_pixel_difference(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = repo / "out" / "keep.png"
    with Image.open(path) as image:
        edited = image.convert("RGB")
    for x in range(10, 74):
        for y in range(20, 52):
            edited.putpixel((x, y), (255, 0, 0))
    edited.save(path)
    assert run(capsys, "review", "-C", str(repo)).code == 0
    keep = by_output(review_doc(repo))["keep.png"]
    assert keep["kind"] == "modified" and keep["on_disk"] == "modified"
    assert keep["before"]["source"] == "git main" and keep["after"]["source"] == "output file"
    assert keep["diff"]["box"] == [10, 20, 74, 52]
    assert keep["diff"]["changed"] == pytest.approx(64 * 32 / (512 * 512), rel=0.05)
    assert (repo / ".imgbuild" / "review" / keep["diff"]["thumb"]).is_file()


def test_a_second_review_reuses_thumbnails_and_drops_unused_ones(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "review", "-C", str(repo)).code == 0
    thumbs = repo / ".imgbuild" / "review" / "thumbs"
    first = {p.name: p.stat().st_mtime_ns for p in thumbs.iterdir()}
    stale = thumbs / ("0" * 32 + ".webp")
    stale.write_bytes(b"old")
    assert run(capsys, "review", "-C", str(repo)).code == 0
    assert {p.name: p.stat().st_mtime_ns for p in thumbs.iterdir()} == first


def test_errors_are_located_and_never_tracebacks(
        tmp_path: Path, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "review", "-C", str(repo), "--base", "no-such-branch")
    assert r.code == 2 and "--base no-such-branch: not a git revision" in r.err
    plain = tmp_path / "plain"
    shutil.copytree(repo, plain, ignore=shutil.ignore_patterns(".git"))
    r = run(capsys, "review", "-C", str(plain), "--json")
    assert r.code == 2 and "not in a git repository" in r.err and r.json["exit_code"] == 2


def test_review_never_loads_a_provider_or_the_http_client(repo: Path) -> None:
    code = ("import sys\nfrom imgbuild.cli import main\n"
            f"assert main(['review', '-C', {str(repo)!r}, '-q']) == 0\n"
            "loaded = sorted(m for m in sys.modules if m.startswith(('imgbuild.providers', 'aiohttp')))\n"
            "assert not loaded, loaded\n")
    env = {**os.environ, "DASHSCOPE_API_KEY": "sk-review-must-not-use-this"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "sk-review" not in (repo / ".imgbuild" / "review" / "index.html").read_text()


def entry(key: str, *, model: str = "qwen-image-2.0", draft: bool = False) -> dict[str, Any]:
    return {"name": key, "key": key, "sha256": key * 2, "provider": "placeholder" if draft else "dashscope",
            "draft": draft, "model": model, "size": "512*512", "seed": 1,
            "request": {"model": model, "prompt": f"p {key}", "size": "512*512"}}


def test_images_paid_count_real_images_whose_key_is_new_at_the_regions_price() -> None:
    before = Lock({"a.png": entry("a"), "b.png": entry("b"), "moved.png": entry("m")})
    after = Lock({"a.png": entry("a"), "b.png": entry("b2"), "c.png": entry("c", model="qwen-image-2.0-pro"),
                  "d.png": entry("d", draft=True), "moved-here.png": entry("m"),
                  "a-480.webp": {"name": "a", "derived_from": "a.png", "key": "x", "sha256": "y"}})
    result = compare(before, after, region="beijing")
    kinds = {c.output: c.kind for c in result.changes}
    assert kinds == {"a.png": "unchanged", "b.png": "changed", "c.png": "new", "d.png": "new",
                     "moved-here.png": "new", "moved.png": "removed"}
    # b2 (0.20) and c (0.50) were bought; the draft cost nothing; m was already paid for
    assert (result.images_paid, result.spent) == (2, 0.7)
    singapore = compare(before, after, region="singapore")
    expected = unit_price("qwen-image-2.0", "singapore") + unit_price("qwen-image-2.0-pro", "singapore")
    assert singapore.spent == pytest.approx(expected) and singapore.spent > result.spent


def test_open_hands_the_page_to_the_web_browser(
        repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda uri, *a, **k: opened.append(uri) or True)
    assert run(capsys, "review", "-C", str(repo), "--open").code == 0
    assert opened == [(repo / ".imgbuild" / "review" / "index.html").as_uri()]


class StandInRemote:
    """What review uses of store.remote.Remote (issue 14): fetch(key) -> (images, record) | None,
    raising an ImgbuildError for anything it holds but cannot vouch for."""

    def __init__(self, held: dict[str, list[bytes]]) -> None:
        self.held = held

    def fetch(self, key: str) -> tuple[list[bytes], dict[str, Any]] | None:
        if key == "tampered":
            from imgbuild.errors import ImgbuildError

            raise ImgbuildError("remote: content does not match its sha256 name")
        images = self.held.get(key)
        return None if images is None else (images, {"key": key})


def test_remote_originals_are_found_by_key_and_index_and_faults_mean_not_found() -> None:
    from imgbuild.verbs.review.sources import RemoteImages

    remote = RemoteImages(StandInRemote({"k": [b"one", b"two"]}))
    assert (remote.get("k", 0), remote.get("k", 1), remote.get("k", 2)) == (b"one", b"two", None)
    assert remote.get("absent", 0) is None and remote.get("tampered", 0) is None


def test_a_lock_naming_paths_outside_output_dir_is_not_read_through(
        repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    secret = repo / "secret.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(secret)
    lock_path = repo / "imgbuild.lock"
    lock = json.loads(lock_path.read_text())
    lock["outputs"]["../secret.png"] = {**lock["outputs"]["fresh.png"], "key": "f" * 64, "index": "x"}
    lock_path.write_text(json.dumps(lock))
    # A lock is untrusted input: one naming a path outside output_dir is refused outright (the
    # lock reader does that for every verb), so nothing is read through it and no page is made.
    r = run(capsys, "review", "-C", str(repo))
    assert r.code == 1 and "imgbuild.lock" in r.err and "Traceback" not in r.err, r
    assert not (repo / ".imgbuild" / "review" / "review.json").exists()


def test_a_damaged_lock_at_the_base_is_a_located_error(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "imgbuild.lock").write_text("{not json")
    git(repo, "commit", "-q", "-am", "break the lock")
    (repo / "imgbuild.lock").write_text(json.dumps({"version": 1, "generator": "imgbuild", "outputs": {}}))
    r = run(capsys, "review", "-C", str(repo), "--base", "HEAD")
    assert r.code == 1 and "HEAD:imgbuild.lock: not an imgbuild lockfile" in r.err


CHAIN = """\
version: 1
output_dir: out
defaults: {model: qwen-image-edit-plus, size: "512*512"}
images:
  - name: logo
    model: qwen-image-2.0
    prompt: a round logo with a thin ring
  - name: poster
    prompt: a poster built around this logo and mark
    inputs: [logo, brand/mark.png]
  - name: winter
    prompt: the same poster in winter
    inputs: [poster]
  - name: other
    model: qwen-image-2.0
    prompt: an unrelated grey wall
"""


def cached(key: str) -> bytes:
    from imgbuild.store.originals import Cache

    with Cache(Path(os.environ["IMGBUILD_CACHE_DIR"])) as cache:
        found = cache.get(key)
    assert found is not None
    return found[0][0]


def make_chain(root: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """main: logo -> poster (also reading brand/mark.png) -> winter, built and committed;
    working tree: the logo's prompt changed, built (so both edits below it are rebuilt)."""
    (root / "brand").mkdir(parents=True)
    Image.new("RGB", (400, 400), (20, 120, 200)).save(root / "brand" / "mark.png")
    committed_build(root, capsys, CHAIN, "chain")
    (root / "imgbuild.yaml").write_text(CHAIN.replace("a thin ring", "a thick ring"))
    assert run(capsys, "build", "-C", str(root), "-q").code == 0
    return root


def test_a_changed_chain_root_shows_the_dependants_with_their_inputs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    root = tmp_path / "chain"
    make_chain(root, capsys)
    before = json.loads(git(root, "show", "HEAD:imgbuild.lock"))["outputs"]
    after = json.loads((root / "imgbuild.lock").read_text())["outputs"]

    r = run(capsys, "review", "-C", str(root), "--markdown", str(root / "summary.md"))
    assert r.code == 0, r
    assert "changed    poster.png (poster): input logo changed" in r.out
    assert "changed    winter.png (winter): input poster changed" in r.out
    targets = by_output(review_doc(root))
    assert {o: t["kind"] for o, t in targets.items()} == {
        "logo.png": "changed", "poster.png": "changed", "winter.png": "changed", "other.png": "unchanged"}
    assert targets["poster.png"]["input_changes"] == ["input logo changed"]
    assert targets["winter.png"]["input_changes"] == ["input poster changed"]
    assert targets["logo.png"]["input_changes"] == [] and targets["other.png"]["inputs"] == []

    logo, mark = targets["poster.png"]["inputs"]
    assert (logo["ref"], logo["kind"], logo["changed"]) == ("logo", "target", True)
    assert (mark["ref"], mark["kind"], mark["changed"], mark["before"]) == ("brand/mark.png", "file", False, None)
    assert mark["image"]["source"] == "repository file"
    # each thumbnail shows the very bytes the edit was sent: the logo's original, new and old
    report = root / ".imgbuild" / "review"
    for side, entry in ((logo["image"], after["logo.png"]), (logo["before"], before["logo.png"])):
        assert side["source"] == "local cache"
        assert side["thumb"] == f"thumbs/{hashlib.sha256(cached(entry['key'])).hexdigest()[:32]}.webp"
        with Image.open(report / side["thumb"]) as thumb:
            assert thumb.format == "WEBP"
    (poster,) = targets["winter.png"]["inputs"]
    assert poster["ref"] == "poster" and poster["changed"] and poster["image"]["thumb"]
    page = (report / "index.html").read_text()
    assert 'alt="input logo after"' in page and 'alt="input brand/mark.png"' in page
    assert "input poster changed" in page
    summary = (root / "summary.md").read_text()
    assert "| changed | [winter](" in summary and "input poster changed; reads `poster` (changed)" in summary

    # No cache: the inputs come from the output files the locks record with their keys; an
    # image found nowhere is shown as missing, and says where it was looked for.
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert run(capsys, "review", "-C", str(root)).code == 0
    logo = by_output(review_doc(root))["poster.png"]["inputs"][0]
    assert (logo["image"]["source"], logo["before"]["source"]) == ("output file", "git main")
    (root / "out" / "logo.png").unlink()
    assert run(capsys, "review", "-C", str(root)).code == 0
    logo = by_output(review_doc(root))["poster.png"]["inputs"][0]
    assert logo["image"]["thumb"] is None
    assert logo["image"]["missing"] == "not in the caches, the output tree or git"
    assert "not in the caches, the output tree or git" in (report / "index.html").read_text()
