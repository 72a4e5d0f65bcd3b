"""`imgbuild cache info | verify | prune`: counts, damage found by re-hashing, pruning only what no
kept lockfile references (and only with --yes)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import age_cache, run
from imgbuild.store.originals import Cache


@pytest.fixture
def built(site: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run(capsys, "build", "-C", str(site)).code == 0
    return site


def cache_dir() -> Path:
    return Path(os.environ["IMGBUILD_CACHE_DIR"])


def test_info_counts_entries_blobs_and_bytes(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "cache", "info", "-C", str(built), "--json")
    assert r.code == 0, r
    assert r.json["directory"] == str(cache_dir())
    assert r.json["entries"] == 11 and r.json["images"] == 11 and r.json["blobs"] == 11
    assert r.json["bytes"] > 11 * 1000
    r = run(capsys, "cache", "info", "-C", str(built))
    assert f"directory: {cache_dir()}" in r.out and "entries:   11 generation(s)" in r.out


def test_info_outside_a_project_uses_the_default_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run(capsys, "cache", "info", "--json")
    assert r.code == 0 and r.json["entries"] == 0 and r.json["directory"] == str(cache_dir())


def test_project_cache_dir_setting_is_used(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMGBUILD_CACHE_DIR")
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\ncache_dir: .cache/img\nimages:\n  - name: a\n    prompt: A red apple\n")
    assert run(capsys, "build", "-C", str(tmp_path)).code == 0
    r = run(capsys, "cache", "info", "-C", str(tmp_path), "--json")
    assert r.json["directory"] == str(tmp_path / ".cache" / "img") and r.json["entries"] == 1


def test_verify_finds_a_damaged_blob(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "cache", "verify", "--json")
    assert r.code == 0 and r.json["blobs"] == 11 and r.json["damaged"] == [], r
    with Cache(cache_dir()) as cache:
        lock_key = next(iter(cache.entries()))
        digest = cache.entries()[lock_key][0]
        cache._store.set(f"blob:{digest}", b"not the image")  # bit rot, as the store sees it
    r = run(capsys, "cache", "verify")
    assert r.code == 1, r
    assert f"damaged    blob {digest}" in r.out
    r = run(capsys, "cache", "verify", "--json")
    assert r.code == 1 and r.json["damaged"] == [digest]


def test_verify_finds_a_record_whose_blob_is_gone(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Cache(cache_dir()) as cache:
        key, digests = next(iter(cache.entries().items()))
        cache._store.delete(f"blob:{digests[0]}")
    r = run(capsys, "cache", "verify", "--json")
    assert r.code == 1 and r.json["incomplete"] == [key] and r.json["damaged"] == []


def _edit_poster(site: Path) -> None:
    spec = site / "specs" / "poster.yaml"
    spec.write_text(spec.read_text().replace("Fridays 7pm", "Saturdays 8pm"))


def test_prune_lists_then_deletes_only_unreferenced(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Cache(cache_dir()) as cache:
        before = cache.entries()
    _edit_poster(built)
    assert run(capsys, "build", "-C", str(built)).code == 0
    with Cache(cache_dir()) as cache:
        (old_key,) = [k for k in before if k not in _lock_keys(built)]
        old_blobs = before[old_key]
        assert len(cache.entries()) == 12

    r = run(capsys, "cache", "prune", "-C", str(built), "--json")
    assert r.code == 0 and r.json["entries"] == [] and r.json["kept_recent"] == 1, r  # within the grace period
    age_cache(cache_dir())
    r = run(capsys, "cache", "prune", "-C", str(built), "--json")
    assert r.code == 0, r
    assert r.json["entries"] == [old_key] and r.json["blobs"] == old_blobs and r.json["deleted"] is False
    r = run(capsys, "cache", "prune", "-C", str(built))
    assert f"would delete: entry {old_key}" in r.out and "run with --yes to delete" in r.out
    with Cache(cache_dir()) as cache:
        assert len(cache.entries()) == 12  # nothing deleted without --yes

    r = run(capsys, "cache", "prune", "-C", str(built), "--yes")
    assert r.code == 0 and f"deleted: entry {old_key}" in r.out
    with Cache(cache_dir()) as cache:
        assert sorted(cache.entries()) == sorted(_lock_keys(built)) and len(cache.blobs()) == 11
    assert run(capsys, "cache", "verify").code == 0
    assert run(capsys, "cache", "prune", "-C", str(built)).out.strip() == "imgbuild: nothing to prune"
    # Every output can still be restored from the cache without a provider call.
    for out in (built / "assets" / "generated").rglob("*.*"):
        out.unlink()
    r = run(capsys, "build", "-C", str(built), "--json")
    assert r.json["restored"] == 11 and r.json["provider_calls"] == 0


def _lock_keys(site: Path) -> set[str]:
    from imgbuild.store import lockfile

    # generation keys only: web derivatives have derivation keys, which the cache never holds
    return {e["key"] for e in lockfile.read(site / "imgbuild.lock").outputs.values() if "derived_from" not in e}


def test_prune_keeps_every_given_lockfile(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "imgbuild.yaml").write_text("version: 1\nimages:\n  - name: a\n    prompt: A red apple\n")
    assert run(capsys, "build", "-C", str(other)).code == 0
    age_cache(cache_dir())
    r = run(capsys, "cache", "prune", "-C", str(built), "--json")
    assert len(r.json["entries"]) == 1  # the shared cache: the other project's original is at risk
    assert "may be shared by other projects" in r.err
    r = run(capsys, "cache", "prune", "--keep-lock", str(built / "imgbuild.lock"),
            "--keep-lock", str(other / "imgbuild.lock"), "--yes", "--json")
    assert r.code == 0 and r.json["entries"] == [] and r.json["blobs"] == []
    with Cache(cache_dir()) as cache:
        assert len(cache.entries()) == 12


def test_prune_refuses_to_guess(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = run(capsys, "cache", "prune", "--yes")
    assert r.code == 2 and "--keep-lock PATH" in r.err
    r = run(capsys, "cache", "prune", "--keep-lock", "nope.lock")
    assert r.code == 2 and "nope.lock: no such lockfile" in r.err
    (tmp_path / "imgbuild.yaml").write_text("version: 1\n")  # a project never built: no lock yet
    r = run(capsys, "cache", "prune", "--yes")
    assert r.code == 2 and "imgbuild.lock: no such lockfile" in r.err
