"""`imgbuild review` shows each pending target (issue 16) as a grid of its candidates with the
exact accept command under each, and the page works in headless Chromium: every candidate's
thumbnail loads, and the command copied from the page accepts that candidate."""
from __future__ import annotations

import asyncio
import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
from cdp import Chromium, require_chromium
from helpers import run
from test_review import committed_build, git

PROJECT = """\
version: 1
provider: placeholder
images:
  - name: hero
    prompt: A lighthouse at dawn
    size: "1664*928"
    candidates: 3
  - name: plain
    prompt: A plain wall
"""

GRID = """(async () => {
  const found = [];
  for (const li of document.querySelectorAll("#p-hero .candidate")) {
    const img = li.querySelector("img");
    img.scrollIntoView();
    let error = null;
    try { await img.decode(); } catch (e) { error = String(e); }
    const box = img.getBoundingClientRect();
    found.push({width: img.naturalWidth, error, left: Math.round(box.left), top: Math.round(box.top),
                command: li.querySelector("code.command").innerText});
  }
  return found;
})()"""


def pending_repo(root: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    return committed_build(root, capsys, PROJECT, "three candidates")


def test_review_json_lists_the_pending_candidates_with_their_commands(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    root = pending_repo(tmp_path / "repo", capsys)
    r = run(capsys, "review", "-C", str(root), "--json")
    assert r.code == 0 and r.json["pending"] == ["hero"], r
    doc = json.loads((root / ".imgbuild" / "review" / "review.json").read_text())
    record = json.loads((root / "imgbuild.lock").read_text())["pending"]["hero"]
    shown = doc["pending"][0]["candidates"]
    assert [c["sha256"] for c in shown] == [c["sha256"] for c in record["candidates"]]
    assert [c["command"] for c in shown] == [f"imgbuild accept hero --pick {i}" for i in (1, 2, 3)]
    assert all((root / ".imgbuild" / "review" / c["thumb"]).is_file() for c in shown)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    chromium = Chromium(require_chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def test_the_pick_grid_works_in_chromium_and_its_command_accepts_that_candidate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], browser: Chromium,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    root = pending_repo(tmp_path / "repo", capsys)
    assert run(capsys, "review", "-C", str(root)).code == 0
    index = root / ".imgbuild" / "review" / "index.html"

    async def look() -> list[dict[str, Any]]:
        async with browser.page(index.as_uri()) as page:
            await page.eval("window.scrollTo(0, 0)")
            return await page.eval(GRID)  # type: ignore[no-any-return]

    grid = asyncio.run(asyncio.wait_for(look(), 60))
    assert len(grid) == 3 and all(c["width"] > 0 and c["error"] is None for c in grid), grid
    assert grid[0]["top"] == grid[1]["top"] and grid[0]["left"] < grid[1]["left"], grid  # a grid, not a list
    record = json.loads((root / "imgbuild.lock").read_text())["pending"]["hero"]
    command = shlex.split(grid[1]["command"])
    assert command[:2] == ["imgbuild", "accept"]
    assert run(capsys, *command[1:], "-C", str(root)).code == 0
    entry = json.loads((root / "imgbuild.lock").read_text())["outputs"]["hero.png"]
    assert entry["original"] == record["candidates"][1]["sha256"]


def test_the_candidates_of_an_edit_show_the_image_they_were_made_from(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from imgbuild.store.originals import Cache

    monkeypatch.delenv("CI", raising=False)
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "imgbuild.yaml").write_text(
        "version: 1\nprovider: placeholder\nimages:\n  - name: logo\n    prompt: A round logo\n"
        "  - name: poster\n    model: qwen-image-edit-plus\n    size: \"512*512\"\n"
        "    prompt: A poster around this logo\n    inputs: [logo]\n    candidates: 2\n")
    (root / ".gitignore").write_text(".imgbuild/\n")
    assert run(capsys, "build", "-C", str(root), "-q").code == 0
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "two candidates of an edit")
    assert run(capsys, "review", "-C", str(root)).code == 0
    report = root / ".imgbuild" / "review"
    (pick,) = json.loads((report / "review.json").read_text())["pending"]
    (logo,) = pick["inputs"]
    assert (logo["ref"], logo["kind"], logo["image"]["source"]) == ("logo", "target", "local cache")
    key = json.loads((root / "imgbuild.lock").read_text())["outputs"]["logo.png"]["key"]
    with Cache(Path(os.environ["IMGBUILD_CACHE_DIR"])) as cache:
        found = cache.get(key)
    assert found is not None
    assert logo["image"]["thumb"] == f"thumbs/{hashlib.sha256(found[0][0]).hexdigest()[:32]}.webp"
    assert (report / logo["image"]["thumb"]).is_file()
    assert 'alt="input logo"' in (report / "index.html").read_text()
