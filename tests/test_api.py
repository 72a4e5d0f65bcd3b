"""The Python API: the same summaries as `--json`, nothing printed, errors as ImgbuildError."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import imgbuild
from helpers import run
from imgbuild.errors import ImgbuildError, SpecError, UsageError

HEAVY = ("yaml", "jinja2", "jsonschema", "aiohttp", "diskcache", "PIL", "click", "imgbuild.api",
         "imgbuild.verbs")


def test_import_is_light_and_the_api_lazy() -> None:
    code = (f"import sys, imgbuild; heavy = {HEAVY!r}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
            "imgbuild.build; print('imgbuild.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "True"]
    assert set(imgbuild.__all__) >= {"build", "check", "load_project"}
    with pytest.raises(AttributeError):
        imgbuild.no_such_thing  # noqa: B018
    from imgbuild.verbs import build as build_verb  # submodules still import past the module __getattr__

    assert build_verb.build is not imgbuild.build


def test_build_returns_the_json_summary_and_prints_nothing(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    summary = imgbuild.build(site, provider="placeholder")
    assert capsys.readouterr() == ("", "")
    assert summary["command"] == "build" and summary["built"] == 11 and summary["failed"] == 0
    assert summary["provider_calls"] == 11
    assert {r["output"] for r in summary["targets"]} >= {"hero.png", "posters/cupping-night.jpg"}
    # A no-op build: the API and `build --json` give the same dict.
    assert imgbuild.build(str(site)) == run(capsys, "build", "-C", str(site), "--json").json


def test_dry_run_equals_plan_json(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = imgbuild.build(site, dry_run=True)
    assert summary["command"] == "plan" and summary["images_to_generate"] == 11
    assert summary == run(capsys, "plan", "-C", str(site), "--json").json
    assert not (site / "imgbuild.lock").exists()


def test_targets_and_force(site: Path) -> None:
    summary = imgbuild.build(site, ["hero"], jobs=1)
    assert summary["built"] == 1 and summary["derived"] == 9
    assert [t["output"] for t in summary["targets"] if t["status"] == "built"] == ["hero.png"]
    summary = imgbuild.build(site, targets=["hero", "poster-*"], force=True, keep_going=True)
    # poster-* is the cupping-night poster and the winter poster, which brings what it is
    # edited from (poster, itself edited from logo); hero was built above: restored
    built = sorted(t["name"] for t in summary["targets"] if t["status"] == "built")
    assert built == ["logo", "poster", "poster-cupping-night", "poster-winter"]
    assert summary["built"] == 4 and summary["restored"] == 1


def test_check_reports_stale_images(site: Path) -> None:
    imgbuild.build(site)
    assert imgbuild.check(site)["draft"] == 11 + 27  # originals and their web derivatives
    fresh = imgbuild.check(site, allow_drafts=True)
    assert fresh["command"] == "check" and fresh["stale"] == 0 and fresh["up_to_date"] == 11 + 27 + 1
    spec = site / "specs" / "poster.yaml"
    spec.write_text(spec.read_text().replace("Fridays 7pm", "Saturdays 8pm"))
    result = imgbuild.check(site, allow_drafts=True)
    stale = [r["output"] for r in result["targets"] if r["status"] == "stale"]
    # the alt text mentions the day too, so the manifest is stale as well
    assert stale == ["manifest.json", "posters/cupping-night-1104.avif", "posters/cupping-night-1104.jpg",
                     "posters/cupping-night-600.avif", "posters/cupping-night-600.jpg",
                     "posters/cupping-night.jpg"]


def test_load_project(site: Path) -> None:
    project = imgbuild.load_project(site)
    assert project.root == site.resolve() and project.settings["output_dir"] == "assets/generated"
    assert [f.path.name for f in project.files] == ["imgbuild.yaml", "brand.yaml", "poster.yaml", "products.yaml"]
    # A project file path works too (like -f).
    (site / "other.yaml").write_text("version: 1\nimages:\n  - name: a\n    prompt: An apple\n")
    assert imgbuild.load_project(site / "other.yaml").file == (site / "other.yaml").resolve()
    assert imgbuild.build(site / "other.yaml")["built"] == 1


def test_errors_are_imgbuild_errors(tmp_path: Path, site: Path) -> None:
    with pytest.raises(UsageError, match="no imgbuild.yaml"):
        imgbuild.build(tmp_path)
    with pytest.raises(UsageError, match="no target matches 'hreo'"):
        imgbuild.build(site, ["hreo"])
    (tmp_path / "imgbuild.yaml").write_text("version: 1\nimages:\n  - name: a\n    promt: x\n")
    for call in (imgbuild.load_project, imgbuild.check, imgbuild.build):
        with pytest.raises(SpecError) as info:
            call(tmp_path)
        assert isinstance(info.value, ImgbuildError) and info.value.exit_code == 2
        assert any("missing required field 'prompt'" in str(p) for p in info.value.problems)
    with pytest.raises(ImgbuildError, match="more than --max-images 2"):
        imgbuild.build(site, max_images=2)
