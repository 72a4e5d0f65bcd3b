"""The static-site recipes, executed: each examples/ site is built with imgbuild (offline drafts)
and then with its real generator (Hugo, Eleventy, MkDocs), served from 127.0.0.1 and opened in
headless Chromium, which must load every image from an avif or webp source, with width and
height attributes that match the files. A screenshot of each page is left in the test's temp
folder. Without its generator a test skips locally and fails in CI (`CI` set): .ci/run
installs them all.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image

from browser import Browser, chromium_path, serve
from conftest import REPO
from e2e_support import wait_for
from helpers import run

from imgbuild.store import manifest

EXAMPLES = REPO / "examples"
ELEVENTY = EXAMPLES / "eleventy" / "node_modules" / "@11ty" / "eleventy" / "cmd.cjs"
HERO_SIZES = "(max-width: 960px) 100vw, 960px"
BEANS_SIZES = "(max-width: 640px) 100vw, 640px"
BUILT = ("generated", "imgbuild.lock", ".imgbuild", "node_modules", "public", "_site", "site",
         "resources", ".hugo_build.lock")


def require(found: bool, what: str, install: str) -> None:
    """Fail in CI, where .ci/run must have installed it; skip with a reason elsewhere."""
    if found:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, but .ci/run installs it ({install})")
    pytest.skip(f"{what} is not installed ({install})")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    executable = chromium_path()
    require(executable is not None, "chromium", "apt-get install chromium")
    chromium = Browser(str(executable), tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def _generate(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    project = tmp_path / name
    shutil.copytree(EXAMPLES / name, project, ignore=shutil.ignore_patterns(*BUILT))
    result = run(capsys, "build", "-C", str(project), "-q")
    assert result.code == 0, result
    return project


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command} exited {done.returncode}\n{done.stdout}\n{done.stderr}"


# (page path, [(image name, sizes, base URL of the generated folder on that page)])
ROOT_PAGE = [("", [("hero", HERO_SIZES, "/img/generated/"), ("beans", BEANS_SIZES, "/img/generated/")])]
MKDOCS_PAGES = [("", [("hero", HERO_SIZES, "img/generated/")]),
                ("beans/", [("beans", BEANS_SIZES, "../img/generated/")])]


def test_hugo_site_serves_every_generated_image_as_avif_or_webp(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], browser: Browser) -> None:
    hugo = shutil.which("hugo")
    require(hugo is not None, "hugo", "apt-get install hugo")
    project = _generate("hugo", tmp_path, capsys)
    _run([str(hugo), "--quiet", "--destination", "public"], project)
    _check_site(browser, project / "public", project / "generated", ROOT_PAGE, tmp_path / "hugo")


def test_eleventy_site_serves_every_generated_image_as_avif_or_webp(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], browser: Browser) -> None:
    node = shutil.which("node")
    require(node is not None and ELEVENTY.is_file(), "Eleventy (node and examples/eleventy/node_modules)",
            "npm ci --prefix examples/eleventy")
    project = _generate("eleventy", tmp_path, capsys)
    (project / "node_modules").symlink_to(ELEVENTY.parents[2], target_is_directory=True)
    _run([str(node), str(project / "node_modules" / "@11ty" / "eleventy" / "cmd.cjs"), "--quiet"], project)
    _check_site(browser, project / "_site", project / "generated", ROOT_PAGE, tmp_path / "eleventy")


def test_mkdocs_site_serves_every_generated_image_as_avif_or_webp(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], browser: Browser) -> None:
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        require(False, "mkdocs", "pip install -e '.[test]'")
    project = _generate("mkdocs", tmp_path, capsys)
    _run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"], project)
    _check_site(browser, project / "site", project / "docs" / "img" / "generated", MKDOCS_PAGES,
                tmp_path / "mkdocs")


def test_hugo_server_serves_what_imgbuild_watch_regenerates_without_a_restart(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The documented dev loop, `imgbuild watch & hugo server`: edit a prompt, and the running
    server serves the new image."""
    hugo = shutil.which("hugo")
    require(hugo is not None, "hugo", "apt-get install hugo")
    project = _generate("hugo", tmp_path, capsys)
    server = subprocess.Popen([str(hugo), "server", "--bind", "127.0.0.1", "--port", str(_free_port()),
                               "--disableLiveReload"], cwd=project, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watcher = subprocess.Popen([sys.executable, "-m", "imgbuild", "watch", "-C", str(project), "--json"],
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ready = _first_line(server, lambda line: "Web Server is available at" in line)
        url = "http://127.0.0.1:" + ready.split("//localhost:")[1].split("/")[0] + "/img/generated/hero-960.avif"
        image = project / "generated" / "hero-960.avif"
        old = image.read_bytes()
        assert _get(url) == old
        assert '"command": "build"' in _first_line(watcher, lambda line: '"command"' in line)
        (project / "imgbuild.yaml").write_text(
            (project / "imgbuild.yaml").read_text("utf-8").replace("morning light", "evening light"), "utf-8")
        rebuilt = _first_line(watcher, lambda line: '"command"' in line)
        assert '"status": "built"' in rebuilt and image.read_bytes() != old
        wait_for(lambda: _get(url) == image.read_bytes(), 30, "hugo server to serve the new image")
        assert server.poll() is None, "the same server process, never restarted"
    finally:
        for proc in (watcher, server):
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            finally:
                proc.kill()
                assert proc.stdout is not None
                proc.stdout.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _first_line(proc: subprocess.Popen[str], wanted: Any, timeout: float = 120) -> str:
    """The next line of proc's stdout that `wanted` accepts (read in a thread, so a silent
    process fails the test after `timeout` instead of hanging it)."""
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if wanted(line):
                found.put(line)
                return
        found.put("")

    threading.Thread(target=read, daemon=True).start()
    line = found.get(timeout=timeout)
    assert line, f"{proc.args[0]} exited ({proc.poll()}) before printing the line awaited"
    return line


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def _check_site(browser: Browser, site: Path, generated: Path, pages: list[Any], shots: Path) -> None:
    images = _manifest(generated)
    seen = []
    with serve(site) as base_url:
        for page, expected in pages:
            html = (site / page / "index.html").read_text("utf-8")
            # the generator wrote the same <picture> as `imgbuild html NAME`
            assert _pictures(html) == [_pictures(manifest.picture(images[name], sizes=sizes, base_url=base))[0]
                                       for name, sizes, base in expected]
            shot = shots.with_name(f"{shots.name}-{page.strip('/') or 'index'}.png")
            found = browser.inspect(base_url + page, screenshot=shot)
            assert [i["alt"] for i in found] == [images[name]["alt"] for name, _, _ in expected]
            for image in found:
                _check_image(image, site, base_url + page)
            with Image.open(shot) as im:
                assert im.format == "PNG" and im.width > 0 and im.height > 0
            seen += [name for name, _, _ in expected]
    assert sorted(seen) == sorted(images), "every image in the manifest is on some page"


def _check_image(image: dict[str, Any], site: Path, page_url: str) -> None:
    what = f"{page_url}: <img alt={image['alt']!r}>"
    assert image["error"] is None and image["complete"] and image["naturalWidth"] > 0, (what, image)
    chosen = image["currentSrc"].rsplit(".", 1)[-1]
    assert chosen in ("avif", "webp"), (what, image["currentSrc"])
    # Chromium decodes both, so it must take the first <source>: the spec's first preference
    assert image["sources"] and image["sources"][0]["type"] == f"image/{chosen}", (what, image)
    assert image["currentSrc"] in [_absolute(page_url, u) for u, _ in _candidates(image["sources"][0]["srcset"])]
    # width/height are the fallback file's own, and every candidate has the same shape
    width, height = int(image["width"]), int(image["height"])
    assert _size(site, page_url, image["src"]) == (width, height), what
    for srcset in [s["srcset"] for s in image["sources"]] + [image["srcset"]]:
        for url, descriptor in _candidates(srcset):
            w, h = _size(site, page_url, url)
            assert w == descriptor and abs(w / h - width / height) < 0.01, (what, url, (w, h))
    assert abs(image["naturalWidth"] / image["naturalHeight"] - width / height) < 0.01, what
    box_w, box_h = image["box"]
    assert box_w > 0 and abs(box_w / box_h - width / height) < 0.01, (what, image["box"])


def _manifest(generated: Path) -> dict[str, Any]:
    import json

    return json.loads((generated / "manifest.json").read_text("utf-8"))["images"]


def _candidates(srcset: str) -> list[tuple[str, int]]:
    found = []
    for item in srcset.split(","):
        url, descriptor = item.split()
        assert descriptor.endswith("w"), srcset
        found.append((url, int(descriptor[:-1])))
    return found


def _absolute(page_url: str, url: str) -> str:
    from urllib.parse import urljoin

    return urljoin(page_url, url)


def _size(site: Path, page_url: str, url: str) -> tuple[int, int]:
    path = site / unquote(urlsplit(_absolute(page_url, url)).path).lstrip("/")
    with Image.open(path) as im:
        return im.size


class _PictureParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.pictures: list[list[tuple[str, dict[str, str | None]]]] = []
        self.inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "picture":
            self.inside = True
            self.pictures.append([])
        elif self.inside and tag in ("source", "img"):
            self.pictures[-1].append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag == "picture":
            self.inside = False


def _pictures(html: str) -> list[list[tuple[str, dict[str, str | None]]]]:
    """Each <picture> as its (tag, attributes) sequence: markup compared by meaning, not spacing."""
    parser = _PictureParser()
    parser.feed(html)
    return parser.pictures
