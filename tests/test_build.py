"""The core contract, through the CLI, on the offline placeholder provider."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from helpers import run

OUT = "assets/generated"


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """(inode, mtime_ns, bytes) of every file under root, to prove a no-op touches nothing."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and ".imgbuild" not in path.parts:
            st = path.stat()
            files[path.relative_to(root).as_posix()] = (st.st_ino, st.st_mtime_ns, path.read_bytes())
    return files


def test_first_build_writes_every_output_at_its_exact_size(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "-C", str(site), "--json")
    assert r.code == 0, r
    summary = r.json
    assert summary["built"] == 11 and summary["failed"] == 0 and summary["provider"] == "placeholder"
    assert summary["provider_calls"] == 11
    expected = {
        "hero.png": (1664, 928, "PNG"),  # 16:9 for qwen-image-plus
        "posters/cupping-night.jpg": (1104, 1472, "JPEG"),  # 3:4 for wan2.6-t2i
        "products/ethiopia-guji-kraft-paper.webp": (1328, 1328, "WEBP"),
        "brand/logo.png": (1328, 1328, "PNG"),  # 1:1 for qwen-image-plus
        "brand/poster.png": (1104, 1472, "PNG"),  # edited from the logo (qwen-image-edit-plus)
        "brand/poster-winter.png": (1104, 1472, "PNG"),  # 3:4 for wan2.6-image, from the poster
    }
    for rel, (w, h, fmt) in expected.items():
        with Image.open(site / OUT / rel) as im:
            assert (im.width, im.height, im.format) == (w, h, fmt)
    products = sorted(p.name for p in (site / OUT / "products").glob("*.webp"))
    originals = [p for p in products if not re.search(r"-(320|640)\.webp$", p)]
    assert len(originals) == 6 and len(products) == 6 * 3  # each with 320 and 640 px derivatives
    assert {row["status"] for row in summary["targets"]} == {"built", "derived"}
    assert summary["derived"] == 27


def test_second_build_does_nothing_and_touches_no_file(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "build", "-C", str(site)).code == 0
    before = snapshot(site)
    r = run(capsys, "build", "-C", str(site), "--json")
    assert r.code == 0
    assert r.json["up_to_date"] == 11 and r.json["built"] == 0 and r.json["provider_calls"] == 0
    r = run(capsys, "build", "-C", str(site))
    assert "nothing to do" in r.out
    assert snapshot(site) == before


def test_editing_one_prompt_rebuilds_exactly_that_target(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "build", "-C", str(site)).code == 0
    spec = site / "imgbuild.yaml"
    spec.write_text(spec.read_text().replace('"Roasted this morning"', '"Roasted every Tuesday"'))
    plan = run(capsys, "plan", "-C", str(site))
    assert plan.code == 0
    assert "changed (generate)" in plan.out and "hero -> hero.png" in plan.out
    assert 'prompt: … line reading "Roasted [-this morning".-] {+every Tuesday".+} Burlap sacks of …' in plan.out
    assert "poster" not in plan.out and "product" not in plan.out  # others are up to date
    before = snapshot(site)
    r = run(capsys, "build", "-C", str(site), "--json")
    assert (r.json["built"], r.json["up_to_date"], r.json["provider_calls"]) == (1, 10, 1)
    after = snapshot(site)
    changed = {k for k in after if after[k] != before.get(k)}
    hero_variants = {f"{OUT}/hero-{w}.{ext}" for w in (480, 960, 1600) for ext in ("avif", "webp", "jpg")}
    assert changed == {f"{OUT}/hero.png", "imgbuild.lock", f"{OUT}/manifest.json", *hero_variants}


def test_deleted_output_is_restored_from_cache_with_zero_provider_calls(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "build", "-C", str(site)).code == 0
    hero = site / OUT / "hero.png"
    original = hero.read_bytes()
    hero.unlink()
    plan = run(capsys, "plan", "-C", str(site), "--json")
    [row] = [t for t in plan.json["targets"] if t["output"] == "hero.png"]
    assert (row["status"], row["action"]) == ("missing", "restore")
    r = run(capsys, "build", "-C", str(site), "--json")
    assert (r.json["restored"], r.json["built"], r.json["provider_calls"]) == (1, 0, 0), r
    assert hero.read_bytes() == original


def test_modified_output_is_restored_and_reported(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "build", "-C", str(site)).code == 0
    hero = site / OUT / "hero.png"
    original = hero.read_bytes()
    hero.write_bytes(original[:-20] + b"x" * 20)
    r = run(capsys, "build", "-C", str(site), "--json", "hero")
    assert r.json["restored"] == 1 and r.json["provider_calls"] == 0
    assert "modified" in r.json["targets"][0]["reason"]
    assert hero.read_bytes() == original


def test_two_fresh_copies_with_separate_caches_are_byte_identical(tmp_path: Path, site: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other"
    shutil.copytree(site, other)
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "cache-a"))
    assert run(capsys, "build", "-C", str(site), "-j", "1").code == 0
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "cache-b"))
    assert run(capsys, "build", "-C", str(other), "-j", "8").code == 0
    a, b = snapshot(site), snapshot(other)
    assert sorted(a) == sorted(b)
    for rel in a:
        assert a[rel][2] == b[rel][2], rel
    assert (site / "imgbuild.lock").read_bytes() == (other / "imgbuild.lock").read_bytes()


def test_target_globs_select_by_name_or_output(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "-C", str(site), "--json", "product-*-kraft-paper", "posters/*")
    assert r.code == 0 and r.json["built"] == 4
    r = run(capsys, "build", "-C", str(site), "herro")
    assert r.code == 2 and "no target matches 'herro' (did you mean 'hero'?)" in r.err


def test_unknown_project_dir_and_missing_project_file_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "-C", str(tmp_path / "nope"))
    assert r.code == 2 and "no such directory" in r.err
    r = run(capsys, "check", "-C", str(tmp_path))
    assert r.code == 2 and "no imgbuild.yaml" in r.err and "imgbuild init" in r.err


def test_minus_f_selects_another_project_file(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (site / "imgbuild.yaml").rename(site / "images.yaml")
    r = run(capsys, "build", "-C", str(site), "-f", "images.yaml", "--json")
    assert r.code == 0 and r.json["built"] == 11


def test_n_greater_than_one_writes_indexed_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: icon\n    model: qwen-image-2.0\n    size: '512*512'\n    n: 3\n    prompt: an icon\n")
    r = run(capsys, "build", "-C", str(tmp_path), "--json")
    assert r.code == 0 and r.json["built"] == 3 and r.json["provider_calls"] == 1
    files = sorted(p.name for p in (tmp_path / "generated").iterdir())
    assert files == ["icon-1.png", "icon-2.png", "icon-3.png"]
    blobs = {(tmp_path / "generated" / f).read_bytes() for f in files}
    assert len(blobs) == 3  # three different images, not one copied


def test_metadata_is_embedded_in_png_jpeg_and_webp(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "build", "-C", str(site)).code == 0
    with Image.open(site / OUT / "hero.png") as im:
        text = im.text  # type: ignore[attr-defined]
    assert "Northwind Roasters" in text["prompt"]
    assert text["model"] == "qwen-image-plus" and text["size"] == "1664*928"
    assert text["negative_prompt"] == "blurry text, misspelled words, watermark"
    assert len(text["key"]) == 64 and text["seed"].isdigit()
    assert "Negative prompt: blurry text" in text["parameters"] and "Seed: " in text["parameters"]
    for rel in ("posters/cupping-night.jpg", "products/house-espresso-matte-black.webp"):
        with Image.open(site / OUT / rel) as im:
            xmp = im.info.get("xmp", b"")
        assert b"trainedAlgorithmicMedia" in (xmp if isinstance(xmp, bytes) else xmp.encode()), rel


def test_no_temp_files_are_left(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "build", "-C", str(site)).code == 0
    leftovers = [p for p in site.rglob("*") if p.name.startswith(".imgbuild-tmp-")]
    assert leftovers == []


def test_dashscope_without_key_fails_before_any_work(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "-C", str(site), "--provider", "dashscope")
    assert r.code == 2 and "DASHSCOPE_API_KEY" in r.err
    assert not (site / OUT).exists() and not (site / "imgbuild.lock").exists()


def test_placeholder_notice_is_one_line_on_stderr(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "-C", str(site), "--json")
    notices = [line for line in r.err.splitlines() if "placeholder" in line]
    assert len(notices) == 1 and "DASHSCOPE_API_KEY" in notices[0]


def test_provider_env_overrides_project_and_cli_overrides_env(site: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGBUILD_PROVIDER", "dashscope")
    r = run(capsys, "build", "-C", str(site))
    assert r.code == 2 and "DASHSCOPE_API_KEY" in r.err  # env chose dashscope, which needs a key
    assert not (site / "assets").exists()
    r = run(capsys, "plan", "-C", str(site), "--json")  # plan sends nothing: it needs no key
    assert r.code == 0 and r.json["provider"].startswith("dashscope"), r
    r = run(capsys, "plan", "-C", str(site), "--provider", "placeholder", "--json")
    assert r.code == 0 and r.json["provider"] == "placeholder"
    monkeypatch.setenv("IMGBUILD_PROVIDER", "bogus")
    r = run(capsys, "plan", "-C", str(site))
    assert r.code == 2 and "IMGBUILD_PROVIDER" in r.err


def test_internal_error_exits_3_with_a_log(site: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import imgbuild.verbs.validate

    def boom(*a: object, **k: object) -> int:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(imgbuild.verbs.validate, "validate", boom)
    monkeypatch.chdir(site)
    from imgbuild.cli import main

    code = main(["validate"])
    err = capsys.readouterr().err
    assert code == 3 and "internal error" in err
    log = Path(err.split("traceback is in ")[1].split(";")[0])
    assert "simulated bug" in log.read_text()


def test_lock_is_written_atomically_and_survives_a_failed_run(site: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure part-way keeps every finished target in the lock (no paid image forgotten)."""
    import imgbuild.store.outputs

    real = imgbuild.store.outputs.encode
    calls = {"n": 0}

    def flaky(original: bytes, fmt: str, meta: dict) -> bytes:  # type: ignore[type-arg]
        calls["n"] += 1
        if meta["name"] == "hero":
            raise OSError(28, "No space left on device")
        return real(original, fmt, meta)

    monkeypatch.setattr(imgbuild.store.outputs, "encode", flaky)
    r = run(capsys, "build", "-C", str(site), "-k", "-j", "1", "--json")
    assert r.code == 1
    # a write error (disk full) stops the build even with -k: every other write would fail too
    assert (r.json["failed"], r.json["skipped"]) == (1, 10)
    lock = (site / "imgbuild.lock").read_text()
    assert "hero.png" not in lock
    assert not (site / OUT / "hero.png").exists()
    monkeypatch.setattr(imgbuild.store.outputs, "encode", real)
    r = run(capsys, "build", "-C", str(site), "--json")
    # the hero original reached the cache before the write failed: restored, not paid again
    assert (r.json["restored"], r.json["built"], r.json["provider_calls"]) == (1, 10, 10), r
    [hero] = [t for t in r.json["targets"] if t["output"] == "hero.png"]
    assert hero["status"] == "restored"
    assert len(os.listdir(site / OUT / "products")) == 6 * 3  # originals and their derivatives


def test_temp_files_left_by_a_killed_build_are_swept(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An atomic write killed before its rename leaves a temp file: the next build removes it."""
    assert run(capsys, "build", "-C", str(site)).code == 0
    leftovers = [site / OUT / "products" / ".imgbuild-tmp-abc.webp", site / OUT / ".imgbuild-tmp-x.json",
                 site / ".imgbuild-tmp-y.lock", site / ".imgbuild" / "journal" / ".tmp-z.json"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    (site / OUT / "products" / "house-espresso-kraft-paper.webp").unlink()  # what was being written
    r = run(capsys, "build", "-C", str(site), "--json")
    assert r.code == 0 and r.json["restored"] == 1
    assert [p for p in leftovers if p.exists()] == []
    keep = site / OUT / "posters" / ".imgbuild-tmp-other.jpg"  # a folder this build does not write
    keep.write_bytes(b"half")
    assert run(capsys, "build", "-C", str(site)).code == 0
    assert keep.exists()  # only folders about to be written are swept (no-op builds stay cheap)
