"""Static-site outputs: derivatives, no upscaling, determinism, zero provider calls when only
derivation options change, manifest, check/clean integration and <picture> markup."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from helpers import run

OUT = "assets/generated"


@pytest.fixture
def built(site: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    r = run(capsys, "build", "-C", str(site), "--json")
    assert r.code == 0, r
    return site


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_variants_have_their_names_sizes_and_formats(built: Path) -> None:
    expected = {
        "hero-480.avif": (480, 268, "AVIF"),
        "hero-960.webp": (960, 535, "WEBP"),
        "hero-1600.jpg": (1600, 892, "JPEG"),
        "products/colombia-huila-kraft-paper-320.webp": (320, 320, "WEBP"),
        "posters/cupping-night-600.avif": (600, 750, "AVIF"),  # cropped to 4:5
        "posters/cupping-night-1104.jpg": (1104, 1380, "JPEG"),
    }
    for rel, (w, h, fmt) in expected.items():
        with Image.open(built / OUT / rel) as im:
            assert (im.width, im.height, im.format) == (w, h, fmt), rel
            xmp = im.info.get("xmp", b"")
            assert b"trainedAlgorithmicMedia" in (xmp if isinstance(xmp, bytes) else xmp.encode()), rel


def test_widths_above_the_source_are_capped_and_plan_says_so(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "plan", "-C", str(site))
    assert "note: width(s) 1200 capped to 1104: the source is only 1104 px wide (no upscaling)" in r.out
    run(capsys, "build", "-C", str(site))
    posters = sorted(p.name for p in (site / OUT / "posters").iterdir())
    assert posters == ["cupping-night-1104.avif", "cupping-night-1104.jpg", "cupping-night-600.avif",
                       "cupping-night-600.jpg", "cupping-night.jpg"]


def test_two_builds_give_identical_variants_and_manifest(tmp_path: Path, site: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    shutil.copytree(site, other)
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "ca"))
    assert run(capsys, "build", "-C", str(site), "-j", "1").code == 0
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "cb"))
    assert run(capsys, "build", "-C", str(other), "-j", "6").code == 0
    files = sorted(p.relative_to(site / OUT) for p in (site / OUT).rglob("*") if p.is_file())
    assert len(files) == 39  # 11 originals, 27 web derivatives, the manifest
    for rel in files:
        assert (site / OUT / rel).read_bytes() == (other / OUT / rel).read_bytes(), rel


def test_changing_only_derivation_options_calls_no_provider(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(built / "imgbuild.yaml", "widths: [480, 960, 1600]", "widths: [640, 1280]")
    edit(built / "imgbuild.yaml", "formats: [avif, webp, jpeg]", "formats: [webp, png]")
    plan = run(capsys, "plan", "-C", str(built), "--json")
    assert plan.json["images_to_generate"] == 0
    r = run(capsys, "build", "-C", str(built), "--json")
    assert r.code == 0 and r.json["provider_calls"] == 0 and r.json["derived"] == 4
    assert (built / OUT / "hero-1280.png").exists()
    # the old variants are orphans now: clean lists them, build pruned their lock entries
    lock = json.loads((built / "imgbuild.lock").read_text())["outputs"]
    assert "hero-480.avif" not in lock and "hero-1280.png" in lock
    r = run(capsys, "clean", "-C", str(built), "--json")
    assert f"{OUT}/hero-480.avif" in r.json["files"] and f"{OUT}/hero.png" not in r.json["files"]
    assert run(capsys, "check", "-C", str(built), "--allow-drafts").code == 0


def test_quality_or_crop_change_rederives(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(built / "specs" / "poster.yaml", "focus: [0.5, 0.4]", "focus: [0.5, 0.9]")
    r = run(capsys, "build", "-C", str(built), "--json")
    assert r.json["provider_calls"] == 0 and r.json["derived"] == 4


def test_prompt_change_regenerates_then_rederives(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(built / "imgbuild.yaml", "Roasted this morning", "Roasted today")
    r = run(capsys, "build", "-C", str(built), "--json")
    assert (r.json["built"], r.json["provider_calls"], r.json["derived"]) == (1, 1, 9)


def test_derivation_works_from_the_original_on_disk_without_a_cache(
        built: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "empty-cache"))
    edit(built / "specs" / "products.yaml", "widths: [320, 640]", "widths: [256]")
    r = run(capsys, "build", "-C", str(built), "--json")
    assert r.code == 0 and r.json["provider_calls"] == 0 and r.json["derived"] == 6


def test_check_knows_variants_and_the_manifest(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (built / OUT / "hero-960.webp").unlink()
    avif = built / OUT / "hero-480.avif"
    avif.write_bytes(avif.read_bytes() + b"\0")
    manifest = built / OUT / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"alt": "Cupping', '"alt": "Hacked'))
    r = run(capsys, "check", "-C", str(built), "--allow-drafts", "--json")
    assert r.code == 1
    status = {t["output"]: t["status"] for t in r.json["targets"]}
    assert status["hero-960.webp"] == "missing"
    assert status["hero-480.avif"] == "modified"
    assert status["manifest.json"] == "stale"
    r = run(capsys, "build", "-C", str(built), "--json")
    assert r.json["provider_calls"] == 0 and r.json["derived"] == 2
    assert run(capsys, "check", "-C", str(built), "--allow-drafts").code == 0


def test_manifest_describes_every_image(built: Path) -> None:
    doc = json.loads((built / OUT / "manifest.json").read_text())
    hero = doc["images"]["hero"]
    assert hero["alt"].startswith("Northwind Roasters banner")
    assert hero["original"]["path"] == "hero.png" and hero["original"]["width"] == 1664
    assert [v["path"] for v in hero["variants"]][:3] == ["hero-480.avif", "hero-960.avif", "hero-1600.avif"]
    for v in hero["variants"]:
        data = (built / OUT / v["path"]).read_bytes()
        assert v["bytes"] == len(data)
        with Image.open(built / OUT / v["path"]) as im:
            assert (im.width, im.height) == (v["width"], v["height"])
    assert doc["images"]["product-ethiopia-guji-kraft-paper"]["alt"] == "Ethiopia Guji in a kraft paper bag"


def test_html_prints_a_picture(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "html", "-C", str(built), "hero", "--sizes", "(max-width: 960px) 100vw, 960px",
            "--base-url", "/img/")
    assert r.code == 0
    out = r.out
    assert out.startswith("<picture>") and out.strip().endswith("</picture>")
    assert '<source type="image/avif" srcset="/img/hero-480.avif 480w, /img/hero-960.avif 960w, /img/hero-1600.avif 1600w"' in out
    assert '<source type="image/webp"' in out
    assert ('<img src="/img/hero-1600.jpg" srcset="/img/hero-480.jpg 480w, /img/hero-960.jpg 960w, '
            '/img/hero-1600.jpg 1600w" sizes="(max-width: 960px) 100vw, 960px" width="1600" height="892" '
            'alt="Northwind Roasters banner: burlap coffee sacks and a drum roaster in morning light" '
            'loading="lazy" decoding="async">') in out
    r = run(capsys, "html", "-C", str(built), "heros")
    assert r.code == 2 and "did you mean 'hero'" in r.err


def test_bad_derivative_outputs_are_spec_errors(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(site / "imgbuild.yaml", "    alt:", '    outputs: "{{ stem }}.{{ ext }}"\n    alt:')
    r = run(capsys, "validate", "-C", str(site))
    assert r.code == 2 and "images[hero].outputs: derivative 'hero.avif' is also written by" in r.err
