"""`imgbuild check`: offline, no key, no cache; 0 fresh, 1 stale/missing/modified/draft, 2 bad spec."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from helpers import run

OUT = "assets/generated"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("check tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def built(site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    assert run(capsys, "build", "-C", str(site)).code == 0
    # From here on the cache is unusable: check must not need it.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(blocker / "cache"))
    return site


def statuses(r: object) -> dict[str, str]:
    return {row["output"]: row["status"] for row in r.json["targets"]}  # type: ignore[attr-defined]


def test_fresh_project_passes(built: Path, capsys: pytest.CaptureFixture[str], no_network: None) -> None:
    r = run(capsys, "check", "-C", str(built), "--allow-drafts", "--json")
    assert r.code == 0, r
    assert r.json["up_to_date"] == 11 + 27 + 1 and r.json["stale"] == 0  # originals, derivatives, manifest


def test_drafts_fail_unless_allowed(built: Path, capsys: pytest.CaptureFixture[str], no_network: None) -> None:
    r = run(capsys, "check", "-C", str(built))
    assert r.code == 1
    assert "draft     hero.png (hero)" in r.out


def test_edited_prompt_fails_naming_the_image(built: Path, capsys: pytest.CaptureFixture[str], no_network: None) -> None:
    spec = built / "specs" / "poster.yaml"
    spec.write_text(spec.read_text().replace("Fridays 7pm", "Saturdays 8pm"))
    r = run(capsys, "check", "-C", str(built), "--allow-drafts", "--json")
    assert r.code == 1
    assert statuses(r)["posters/cupping-night.jpg"] == "stale"
    stale = sorted(o for o, s in statuses(r).items() if s != "up_to_date")
    # its derivatives are stale with it, and the manifest because the alt text names the day
    assert stale == ["manifest.json", "posters/cupping-night-1104.avif", "posters/cupping-night-1104.jpg",
                     "posters/cupping-night-600.avif", "posters/cupping-night-600.jpg",
                     "posters/cupping-night.jpg"]
    r = run(capsys, "check", "-C", str(built), "--allow-drafts")
    assert "stale     posters/cupping-night.jpg (poster-cupping-night): prompt:" in r.out
    assert '[-"Fridays 7pm".-] {+"Saturdays 8pm".+}' in r.out


def test_editing_a_shared_partial_makes_every_user_stale(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (built / "templates" / "style.j2").write_text("Bright studio photography.\n")
    r = run(capsys, "check", "-C", str(built), "--allow-drafts", "--json")
    assert r.code == 1
    stale = {o for o, s in statuses(r).items() if s == "stale"}
    assert not any(o.startswith("posters/") for o in stale)  # the poster does not use the partial
    assert {o for o in stale if re.fullmatch(r"hero\.png|products/[a-z-]+-(kraft-paper|matte-black)\.webp", o)} == {
        "hero.png", *(f"products/{p}" for p in [
        "ethiopia-guji-kraft-paper.webp", "ethiopia-guji-matte-black.webp",
        "colombia-huila-kraft-paper.webp", "colombia-huila-matte-black.webp",
        "house-espresso-kraft-paper.webp", "house-espresso-matte-black.webp"])}


def test_deleted_output_fails(built: Path, capsys: pytest.CaptureFixture[str], no_network: None) -> None:
    (built / OUT / "hero.png").unlink()
    r = run(capsys, "check", "-C", str(built), "--allow-drafts", "--json")
    assert r.code == 1 and statuses(r)["hero.png"] == "missing"


def test_hand_modified_output_fails(built: Path, capsys: pytest.CaptureFixture[str], no_network: None) -> None:
    path = built / OUT / "products" / "colombia-huila-matte-black.webp"
    path.write_bytes(path.read_bytes() + b"\0")
    r = run(capsys, "check", "-C", str(built), "--allow-drafts", "--json")
    assert r.code == 1 and statuses(r)["products/colombia-huila-matte-black.webp"] == "modified"


def test_removed_spec_leaves_an_orphaned_lock_entry(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (built / "specs" / "poster.yaml").unlink()
    r = run(capsys, "check", "-C", str(built), "--allow-drafts", "--json")
    assert r.code == 1 and statuses(r)["posters/cupping-night.jpg"] == "orphaned"


def test_bad_spec_exits_2(built: Path, capsys: pytest.CaptureFixture[str], no_network: None) -> None:
    (built / "imgbuild.yaml").write_text((built / "imgbuild.yaml").read_text().replace("size: \"16:9\"", "size: huge"))
    r = run(capsys, "check", "-C", str(built))
    assert r.code == 2 and "images[hero].size: 'huge' is not a size" in r.err


def test_damaged_lockfile_is_a_clear_error(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (built / "imgbuild.lock").write_text("{ not json")
    r = run(capsys, "check", "-C", str(built))
    assert r.code == 1 and "lockfile is damaged" in r.err


def test_yaml_key_order_and_comments_do_not_change_keys(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = built / "specs" / "poster.yaml"
    lines = spec.read_text().splitlines()
    # move `seed:` above `model:` and add comments; the rendered request is unchanged
    reordered = ["# a new comment"] + [l for l in lines if "seed:" not in l]
    idx = next(i for i, l in enumerate(reordered) if "model:" in l)
    reordered.insert(idx, "    seed: 20261125   # pinned")
    spec.write_text("\n".join(reordered) + "\n")
    r = run(capsys, "check", "-C", str(built), "--allow-drafts")
    assert r.code == 0, r
