"""The review page in a real browser: headless Chromium opens index.html from disk (file://),
every image loads, the filter hides unchanged cards, the swipe and onion-skin modes and their
slider change the pixels shown, the keys work; a page of 500 targets renders in under 2 s.

The screenshot `review.png` is left in the test's temp folder: the sticky header (counts of
new/changed/modified/removed/unchanged, images paid, the filter and mode controls), and below it
the reworded-bicycle card in swipe mode with the slider at about 20%: the before-image ("a red
bicycle...") on the left fifth, the after-image ("a blue bicycle...") on the rest, then the
prompt with "red" struck out and "blue" inserted, and the key/pixels/bytes/draft/source table.
"""
from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops

from cdp import Chromium, Page, require_chromium
from helpers import run
from test_review import make_chain, make_repo

from imgbuild.plan.compare import compare
from imgbuild.store.gitref import Revision
from imgbuild.store.lockfile import Lock
from imgbuild.verbs.results import ReviewResult
from imgbuild.verbs.review import ReviewOptions
from imgbuild.verbs.review import page as review_page


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    chromium = Chromium(require_chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


STATE = """(() => {
  const shown = (el) => getComputedStyle(el).display !== "none";
  return {
    cards: [...document.querySelectorAll("main > .card")].filter(shown).map((c) => c.id),
    counts: document.querySelector(".counts").innerText.replace(/\\s+/g, " "),
    mode: document.querySelector("input[name=mode]:checked").value,
    active: document.activeElement ? document.activeElement.id : null,
  };
})()"""

# Every <img> is scrolled into view (they are loading="lazy") and awaited.
IMAGES = """(async () => {
  const found = [];
  for (const img of document.querySelectorAll("img")) {
    img.scrollIntoView();
    let error = null;
    try { await img.decode(); } catch (e) { error = String(e); }
    found.push({src: img.getAttribute("src"), naturalWidth: img.naturalWidth, error});
  }
  window.scrollTo(0, 0);
  return found;
})()"""


async def rect(page: Page, selector: str) -> dict[str, float]:
    """The element's box in page coordinates (what a screenshot clip takes)."""
    return await page.eval(f"""(() => {{
      const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();
      return {{x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height,
               left: r.left, top: r.top, right: r.right}};
    }})()""")  # type: ignore[no-any-return]


async def click(page: Page, selector: str, at: float = 0.5) -> None:
    await page.eval(f"document.querySelector({json.dumps(selector)}).scrollIntoView({{block: 'center'}})")
    box = await rect(page, selector)
    await page.click(box["left"] + box["width"] * at, box["top"] + box["height"] / 2)


async def shot(page: Page, selector: str) -> Image.Image:
    return Image.open(io.BytesIO(await page.screenshot(await_clip(await rect(page, selector))))).convert("RGB")


def await_clip(box: dict[str, float]) -> dict[str, float]:
    return {k: box[k] for k in ("x", "y", "width", "height")}


def differ(a: Image.Image, b: Image.Image) -> bool:
    return a.size != b.size or ImageChops.difference(a, b).getbbox() is not None


async def style(page: Page, selector: str, prop: str) -> str:
    return await page.eval(  # type: ignore[no-any-return]
        f"getComputedStyle(document.querySelector({json.dumps(selector)}))[{json.dumps(prop)}]")


async def exercise(chromium: Chromium, url: str, screenshot: Path) -> None:
    card = "#t-reword-png"
    before, after, stage = f"{card} .side.before", f"{card} .side.after", f"{card} .stage"
    async with chromium.page(url) as page:
        state = await page.eval(STATE)
        assert state["cards"] == ["t-fresh-png", "t-gone-png", "t-resize-png", "t-reword-png"], state
        for words in ("1 new", "2 changed", "0 modified", "1 removed", "1 unchanged", "0 images paid"):
            assert words in state["counts"], state

        # "all" shows the unchanged card; then every image on the page has loaded
        await click(page, "label:has(#f-all)")
        assert "t-keep-png" in (await page.eval(STATE))["cards"]
        images = await page.eval(IMAGES)
        assert len(images) == 7, images  # 2 changed pairs, 1 new, 1 removed, 1 unchanged
        assert all(i["naturalWidth"] > 0 and i["error"] is None for i in images), images
        await click(page, "label:has(#f-changed)")
        assert "t-keep-png" not in (await page.eval(STATE))["cards"]
        # nothing to fetch but the report's own thumbnails: styles and script inline, no CDN or font
        links = await page.eval("""({
          urls: [...document.querySelectorAll("[src], [href]")].map((e) => e.getAttribute("src") || e.getAttribute("href")),
          sheets: [...document.styleSheets].map((s) => s.href),
          fonts: [...document.fonts].length,
          imports: [...document.styleSheets].flatMap((s) => [...s.cssRules]).filter((r) => /url\\(|@import/.test(r.cssText)).length,
        })""")
        assert links["urls"] and all(u.startswith("thumbs/") for u in links["urls"]), links
        assert links["sheets"] == [None] and links["fonts"] == 0 and links["imports"] == 0, links

        # side by side: the after-image to the right of the before-image
        await page.eval(f"document.querySelector('{card}').scrollIntoView()")
        side = await shot(page, stage)
        assert (await rect(page, after))["left"] >= (await rect(page, before))["right"]

        # 2: swipe; both in one place, the after clipped at the slider (50%, then where clicked)
        await page.press("2")
        assert (await page.eval(STATE))["mode"] == "swipe"
        b, a = await rect(page, before), await rect(page, after)
        assert (round(a["left"]), round(a["top"])) == (round(b["left"]), round(b["top"]))
        assert await style(page, after, "clipPath") == "inset(0px 0px 0px 50%)"
        half = await shot(page, stage)
        await click(page, f"{card} .slider", at=0.2)
        value = int(await page.eval(f"document.querySelector('{card} .slider').value"))
        assert 10 <= value <= 30 and await style(page, after, "clipPath") == f"inset(0px 0px 0px {value}%)"
        fifth = await shot(page, stage)
        assert differ(side, half) and differ(half, fifth)
        await page.eval(f"document.querySelector('{card}').scrollIntoView()")
        screenshot.write_bytes(await page.screenshot())

        # 3: onion skin; the after-image unclipped, at the slider's opacity
        await page.press("3")
        assert await style(page, after, "clipPath") == "none"
        assert float(await style(page, after, "opacity")) == pytest.approx(value / 100)
        assert differ(fifth, await shot(page, stage))
        await page.press("1")
        assert (await page.eval(STATE))["mode"] == "side"

        # j/k walk the visible cards, from the top when no card is in use
        await page.eval("document.activeElement.blur()")
        walk = []
        for key in "jjjjjkk":
            await page.press(key)
            walk.append((await page.eval(STATE))["active"])
        assert walk == ["t-fresh-png", "t-gone-png", "t-resize-png", "t-reword-png", "t-reword-png",
                        "t-resize-png", "t-gone-png"]


def test_the_review_page_works_in_chromium(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], browser: Chromium) -> None:
    repo = make_repo(tmp_path / "repo", capsys)
    assert run(capsys, "review", "-C", str(repo)).code == 0
    index = repo / ".imgbuild" / "review" / "index.html"
    asyncio.run(asyncio.wait_for(exercise(browser, index.as_uri(), tmp_path / "review.png"), 120))
    with Image.open(tmp_path / "review.png") as image:
        assert image.size == (1280, 900)


INPUTS = """(async () => {
  document.getElementById("f-all").checked = true;
  const found = [];
  for (const img of document.querySelectorAll(".inputs img")) {
    img.scrollIntoView();
    let error = null;
    try { await img.decode(); } catch (e) { error = String(e); }
    found.push({alt: img.alt, naturalWidth: img.naturalWidth, error});
  }
  return found;
})()"""


async def input_thumbnails(chromium: Chromium, url: str, screenshot: Path) -> list[dict[str, Any]]:
    async with chromium.page(url) as page:
        found = await page.eval(INPUTS)
        await page.eval("document.getElementById('t-poster-png').scrollIntoView()")
        screenshot.write_bytes(await page.screenshot())
        return found  # type: ignore[no-any-return]


def test_a_dependant_shows_its_input_thumbnails_in_chromium(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], browser: Chromium) -> None:
    """The screenshot `inputs.png` (left in the test's temp folder) shows the poster card: the
    before and after posters, "input logo changed", and under "reads" the logo as it was and as
    it is now, then brand/mark.png (a flat blue square, unchanged)."""
    repo = make_chain(tmp_path / "chain", capsys)
    assert run(capsys, "review", "-C", str(repo)).code == 0
    index = repo / ".imgbuild" / "review" / "index.html"
    found = asyncio.run(asyncio.wait_for(input_thumbnails(browser, index.as_uri(), tmp_path / "inputs.png"), 60))
    assert sorted(i["alt"] for i in found) == [
        "input brand/mark.png", "input logo after", "input logo before", "input poster after",
        "input poster before"], found
    assert all(i["naturalWidth"] > 0 and i["error"] is None for i in found), found


# --- 500 targets ---------------------------------------------------------------------------------

def fake_entry(output: str, key: str) -> dict[str, Any]:
    return {"name": output.rsplit(".", 1)[0], "key": key, "sha256": key, "provider": "placeholder",
            "draft": True, "model": "qwen-image-2.0", "size": "512*512", "seed": 7,
            "request": {"model": "qwen-image-2.0", "prompt": f"a study of shape number {key}",
                        "size": "512*512"}}


def big_review(out: Path, targets: int = 500) -> Path:
    """A review page of `targets` outputs, every other one changed. Every picture is distinct:
    a browser shows an image it already has at once, lazy or not."""
    pictures = []
    for i in range(2 * targets):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (i % 256, i // 256 * 40, 90)).save(buffer, "PNG")
        pictures.append(buffer.getvalue())
    outputs = [f"set/{i:03d}.png" for i in range(targets)]
    before = Lock({o: fake_entry(o, f"{i}") for i, o in enumerate(outputs)})
    after = Lock({o: fake_entry(o, f"{i}" if i % 2 else f"{i}b") for i, o in enumerate(outputs)})
    comparison = compare(before, after, region="beijing")
    folder = out / review_page.THUMBS
    folder.mkdir(parents=True)
    cards = []
    for i, change in enumerate(comparison.changes):
        pair = ((pictures[2 * i], "local cache"), (pictures[2 * i + 1], "output file"))
        cards.append(review_page.card(change, pair, folder))
    review_page.number(cards)
    result = ReviewResult(project="imgbuild.yaml", base=Revision("main", "0" * 40, "--base"),
                          comparison=comparison, cards=cards, out_dir=out)
    review_page.write(result, ReviewOptions())
    return out / "index.html"


# Time from navigation to the second animation frame after the load event: the page is laid
# out and painted by then. Also how many images have loaded: lazy loading keeps that small.
RENDERED = """new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => done({
  ms: performance.now(),
  cards: document.querySelectorAll("main > .card").length,
  images: document.images.length,
  loaded: [...document.images].filter((i) => i.complete && i.naturalWidth > 0).length,
}))))"""


async def measure(chromium: Chromium, url: str) -> dict[str, Any]:
    async with chromium.page(url) as page:
        return await page.eval(RENDERED)  # type: ignore[no-any-return]


def test_a_page_of_500_targets_renders_in_under_2_seconds(tmp_path: Path, browser: Chromium) -> None:
    index = big_review(tmp_path / "review")
    timing = asyncio.run(asyncio.wait_for(measure(browser, index.as_uri()), 60))
    assert timing["cards"] == 500 and timing["images"] == 250 * 2 + 250
    assert timing["ms"] < 2000, timing
    assert timing["loaded"] < timing["images"] / 4, f"thumbnails are not lazy-loaded: {timing}"


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import cdp

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is missing"):
        cdp.require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        cdp.require_chromium()
