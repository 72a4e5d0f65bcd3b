"""One unit per count, the same in every verb and in --json (issue 11, item 8): originals are
counted in images, derivatives and the manifest in files; build's progress counter and its
summary agree; plan says derivatives are up to date only when build would not re-derive them."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from helpers import run
from PIL import Image

PROJECT = """\
version: 1
output_dir: out
images:
  - name: pair
    model: qwen-image-2.0
    size: "512*512"
    n: 2
    output: "pair-{{ index }}.png"
    prompt: Two cups on a table.
  - name: hero
    size: "1:1"
    prompt: A lighthouse at dusk.
    formats: [webp]
    widths: [128, 256]
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "imgbuild.yaml").write_text(PROJECT, encoding="utf-8")
    return tmp_path


def test_progress_counts_images_like_the_summary_and_every_verb_names_its_units(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "-C", str(root))
    assert r.code == 0, r
    counters = re.findall(r"^\[\s*(\d+)/(\d+) images\] built", r.out, re.M)
    # pair (n=2) and hero: 3 images over 2 targets; the last line reads [3/3 images]
    assert counters[-1] == ("3", "3") and len(counters) == 2, r.out
    assert "imgbuild: 3 images built, 0 restored from cache, 0 failed; 2 files derived;" in r.out, r.out
    derived = re.findall(r"^\[(\d+)/(\d+) files\] derived", r.out, re.M)
    assert derived[-1] == ("2", "2"), r.out

    noop = run(capsys, "build", "-C", str(root), "--json")
    plan = run(capsys, "plan", "-C", str(root), "--json")
    check = run(capsys, "check", "-C", str(root), "--allow-drafts", "--json")
    for result in (noop, plan, check):
        assert result.code == 0, result
        kinds = result.json["by_kind"]
        assert kinds["images"] == {"up_to_date": 3} and kinds["derived_files"] == {"up_to_date": 2}, result
    assert check.json["by_kind"]["manifest"] == {"up_to_date": 1}
    assert "imgbuild: nothing to do (3 images and 2 derived files up to date)" in run(
        capsys, "build", "-C", str(root)).out
    assert "; 3 images and 2 derived files up to date" in run(capsys, "plan", "-C", str(root)).out
    assert ("all 6 files are up to date (3 images, 2 derived files, the manifest)"
            in run(capsys, "check", "-C", str(root), "--allow-drafts").out)


def test_plan_never_calls_derivatives_of_an_original_to_generate_up_to_date(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "build", "-C", str(root)).code == 0
    shutil.rmtree(os.environ["IMGBUILD_CACHE_DIR"])  # the original is gone from the cache: generated again
    (root / "out" / "hero.png").unlink()
    r = run(capsys, "plan", "-C", str(root), "--json")
    states = {t["output"]: t["status"] for t in r.json["targets"] if t["kind"] == "derived"}
    assert set(states.values()) == {"waiting"}, states
    assert r.json["by_kind"]["derived_files"] == {"waiting": 2}
    text = run(capsys, "plan", "-C", str(root)).out
    assert "2 derived files waiting on their original" in text, text


def _replace_original(root: Path) -> None:
    """As if hero.png were generated again with the same request and came back different."""
    path = root / "out" / "hero.png"
    buf = io.BytesIO()
    with Image.open(path) as old:
        size = old.size
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    lock_path = root / "imgbuild.lock"
    lock = json.loads(lock_path.read_text("utf-8"))
    lock["outputs"]["hero.png"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    lock_path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def test_derivatives_of_an_original_with_new_bytes_are_derived_again(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "build", "-C", str(root)).code == 0
    _replace_original(root)
    plan = run(capsys, "plan", "-C", str(root), "--json")
    assert plan.json["by_kind"]["derived_files"] == {"changed": 2}, plan
    check = run(capsys, "check", "-C", str(root), "--allow-drafts")
    assert check.code == 1 and "was generated again" in check.out, check
    shutil.rmtree(os.environ["IMGBUILD_CACHE_DIR"])  # the cache would hold the new bytes
    r = run(capsys, "build", "-C", str(root), "--json")
    assert r.code == 0 and r.json["derived"] == 2, r
    with Image.open(root / "out" / "hero-128.webp") as im:
        assert im.convert("RGB").getpixel((5, 5))[0] > 150  # made from the new red original
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0
