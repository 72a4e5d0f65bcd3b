"""The no-op fast path must never hide a change: plan cache and stat cache invalidation."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import imgbuild.spec.expand
from helpers import run


@pytest.fixture
def built(site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(site)
    assert run(capsys, "build").code == 0
    assert run(capsys, "check", "--allow-drafts").code == 0  # primes both caches
    return site


def forbid_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*a: object) -> None:
        raise AssertionError("expanded although nothing changed")

    monkeypatch.setattr(imgbuild.spec.expand, "expand", fail)


def test_unchanged_project_uses_the_plan_cache(built: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_expansion(monkeypatch)
    assert run(capsys, "check", "--allow-drafts").code == 0
    assert run(capsys, "build").code == 0


def test_a_new_included_file_invalidates_the_plan(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (built / "specs" / "extra.yaml").write_text("images:\n  - name: extra\n    prompt: one more\n")
    r = run(capsys, "check", "--allow-drafts", "--json")
    assert r.code == 1
    assert {t["output"]: t["status"] for t in r.json["targets"]}["extra.png"] == "stale"


def test_a_changed_data_file_invalidates_the_plan(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = built / "data" / "products.yaml"
    data.write_text(data.read_text().replace("jasmine", "lavender"))
    r = run(capsys, "check", "--allow-drafts", "--json")
    stale = sorted(t["output"] for t in r.json["targets"] if t["status"] != "up_to_date")
    assert stale == sorted(f"products/ethiopia-guji-{bag}{suffix}.webp"
                           for bag in ("kraft-paper", "matte-black") for suffix in ("", "-320", "-640"))


def test_a_damaged_plan_cache_is_ignored(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("plan-cache.json", "stat-cache.json"):
        (built / ".imgbuild" / name).write_text("{garbage")
    assert run(capsys, "check", "--allow-drafts").code == 0


def test_same_size_edit_is_seen_by_the_stat_cache(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = built / "assets/generated/hero.png"
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    r = run(capsys, "check", "--allow-drafts", "--json")
    assert {t["output"]: t["status"] for t in r.json["targets"]}["hero.png"] == "modified"


def test_messages_stay_relative_to_the_working_directory(built: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec = built / "specs" / "poster.yaml"
    monkeypatch.chdir(built.parent)
    r = run(capsys, "plan", "-C", "site", "--json")
    assert r.code == 0
    spec.write_text(spec.read_text().replace("seed: 20261125", "seed: -5"))
    r = run(capsys, "plan", "-C", "site")
    assert r.code == 2 and "site/specs/poster.yaml:" in r.err


def test_the_plan_cache_is_the_projects_not_the_working_directorys(
        built: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`check -C site` from another folder reuses the cache made inside it, and loads the same
    targets as a cold run from there (spec files named relative to the working directory)."""
    from imgbuild.verbs.common import Where, load

    monkeypatch.chdir(built.parent)
    (built / ".imgbuild" / "plan-cache.json").unlink()
    _, cold = load(Where(built.name))
    assert all(t.file.startswith(f"{built.name}/specs/") or t.file == f"{built.name}/imgbuild.yaml"
               for t in cold), {t.file for t in cold}
    monkeypatch.chdir(built)
    assert run(capsys, "check", "--allow-drafts").code == 0  # the cache, rewritten from inside
    assert {t.file for t in load(Where())[1]} == {t.file.removeprefix(f"{built.name}/") for t in cold}
    monkeypatch.chdir(built.parent)
    forbid_expansion(monkeypatch)
    _, warm = load(Where(built.name))
    assert warm == cold
    assert run(capsys, "check", "-C", built.name, "--allow-drafts").code == 0


def test_the_stat_cache_is_saved_in_slices_and_reads_back_whole(tmp_path: Path) -> None:
    """Saved a slice of entries at a time (not one string of the whole document): every entry,
    across slice boundaries, and an empty cache, read back as they were."""
    import json

    from imgbuild.plan import caches

    stats = caches.StatCache(tmp_path)
    count = caches._SLICE * 2 + 7
    for i in range(count):
        stats.entries[f"/out/ünï {i}.png"] = [i, 10**18 + i, i * 3, 10**18 - i, f"{i:064x}"]
    stats.dirty = True
    stats.save()
    assert caches.StatCache(tmp_path).entries == stats.entries
    assert json.loads(stats.path.read_bytes())["format"] == caches._STAT_FORMAT
    stats.entries.clear()
    stats.dirty = True
    stats.save()
    assert caches.StatCache(tmp_path).entries == {}


def test_stamps_kept_packed_read_and_save_as_the_lists_they_stand_for(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """What a run stamps is held in 64 bytes: it answers, is saved and is read back exactly as
    the [size, mtime_ns, inode, ctime_ns, sha256] list; a changed file is hashed again."""
    import hashlib

    from imgbuild.plan import caches

    image = tmp_path / "a.png"
    image.write_bytes(b"pixels")
    digest = hashlib.sha256(b"pixels").hexdigest()
    stats = caches.StatCache(tmp_path)
    stats.remember(str(image), digest)
    st = os.stat(image)
    assert stats.entry(str(image)) == [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest]
    assert isinstance(stats.entries[str(image)], bytes)
    monkeypatch.setattr(caches, "sha256_file", lambda path: pytest.fail("hashed although the stamp holds"))
    assert stats.sha256(str(image)) == digest
    stats.save()
    again = caches.StatCache(tmp_path)
    assert again.entries[str(image)] == stats.entry(str(image))
    monkeypatch.undo()
    image.write_bytes(b"edited")
    assert stats.sha256(str(image)) == hashlib.sha256(b"edited").hexdigest()


def _stamped(path: Path, data: bytes) -> tuple[str, str, list[object]]:
    import hashlib

    path.write_bytes(data)
    st = os.stat(path)
    digest = hashlib.sha256(data).hexdigest()
    return str(path), digest, [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest]


def test_what_a_run_stamps_waits_on_disk_until_asked_or_saved(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A first build stamps every image it writes: those stamps are not held in memory, yet
    a lookup answers them and `save` writes them, across the reads of the spill file."""
    from imgbuild.plan import caches

    monkeypatch.setattr(caches, "_SPILL_READ", 300)  # records cross read boundaries
    monkeypatch.setattr(caches, "_SLICE", 7)  # and slices
    (tmp_path / "state").mkdir()
    files = [_stamped(tmp_path / f"{'n' * (i % 40)}{i}.png", b"x" * i) for i in range(50)]
    stats = caches.StatCache(tmp_path / "state")
    for path, digest, _ in files:
        stats.remember(path, digest)
    assert stats.entries == {}  # nothing per image in memory
    stats.save()
    again = caches.StatCache(tmp_path / "state")
    assert again.entries == {path: stamp for path, _, stamp in files}
    # a lookup brings them in, once
    assert stats.entry(files[3][0]) == files[3][2]
    assert {p: caches._unpacked(v) for p, v in stats.entries.items()} == again.entries
    # what is stamped after that waits on disk again, and is saved beside what came back
    late = _stamped(tmp_path / "late.png", b"late")
    stats.remember(late[0], late[1])
    assert late[0] not in stats.entries
    stats.save()
    assert caches.StatCache(tmp_path / "state").entries == {**again.entries, late[0]: late[2]}


def test_a_path_stamped_twice_keeps_its_last_stamp(tmp_path: Path) -> None:
    from imgbuild.plan import caches

    image = tmp_path / "a.png"
    path, first, _ = _stamped(image, b"one")
    stats = caches.StatCache(tmp_path)
    stats.remember(path, first)
    _, second, stamp = _stamped(image, b"second")
    stats.remember(path, second)
    stats.save()
    assert caches.StatCache(tmp_path).entries == {path: stamp}  # saved: the last one
    assert stats.entry(path) == stamp  # looked up: the last one
    # a stamp that cannot be packed is held in memory, and still comes after the spilled one
    stats = caches.StatCache(tmp_path)
    stats.remember(path, first)
    stats.remember(path, "not-a-sha256")
    assert stats.entry(path)[4] == "not-a-sha256"  # type: ignore[index]


def test_with_no_folder_to_spill_to_stamps_stay_in_memory(tmp_path: Path) -> None:
    from imgbuild.plan import caches

    path, digest, stamp = _stamped(tmp_path / "a.png", b"pixels")
    stats = caches.StatCache(tmp_path / "missing")
    stats.remember(path, digest)
    assert caches._unpacked(stats.entries[path]) == stamp
    assert stats.entry(path) == stamp
