"""`imgbuild cache prune` and candidates (issue 16): the candidates that were not picked, the rejected
ones and a pick replaced by another stay in the cache for `keep_unpicked_days` (default 30) after
the pick or the rejection, then may go; the accepted pick stays while the lock references it.

The time of the pick is recorded in the local cache (never in the committed lock). No test waits
for the clock: `age_cache` makes every row look two hours old (past prune's one-hour grace) and
`age_holds` moves the recorded pick time back by whole days.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import Result, age_cache, age_holds, run

from imgbuild.store.originals import Cache

PROJECT = """\
version: 1
provider: placeholder
images:
  - name: a
    prompt: A lighthouse at dawn.
    candidates: 3
  - name: b
    prompt: A plain grey wall.
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "imgbuild.yaml").write_text(PROJECT, encoding="utf-8")
    return tmp_path


def cli(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> Result:
    verb = 2 if args[0] == "cache" else 1  # `cache prune` takes -C after its own name
    return run(capsys, *args[:verb], "-C", str(root), *args[verb:])


def lock(root: Path) -> dict:
    return json.loads((root / "imgbuild.lock").read_text("utf-8"))


def cache_dir() -> Path:
    return Path(os.environ["IMGBUILD_CACHE_DIR"])


def in_cache() -> set[str]:
    with Cache(cache_dir()) as cache:
        return set(cache.keys())


def candidate_keys(root: Path, name: str = "a") -> list[str]:
    return [c["key"] for c in lock(root)["pending"][name]["candidates"]]


def test_candidates_not_picked_are_kept_30_days_after_the_pick_then_may_go(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, root, "build").code == 0
    keys = candidate_keys(root)
    assert cli(capsys, root, "accept", "a", "--pick", "2").code == 0
    picked, unpicked = keys[1], [keys[0], keys[2]]
    assert lock(root)["outputs"]["a.png"]["key"] == picked
    lock_text = (root / "imgbuild.lock").read_text("utf-8")
    assert "since" not in lock_text and "not picked" not in lock_text  # the lock stays deterministic
    age_cache(cache_dir())  # past the one-hour grace: only the holds keep them now

    r = cli(capsys, root, "cache", "prune", "--json")
    assert r.code == 0 and r.json["entries"] == [] and r.json["blobs"] == [], r
    assert r.json["keep_unpicked_days"] == 30 and r.json["kept_recent"] == 0
    kept = {u["key"]: u for u in r.json["kept_unpicked"]}
    assert sorted(kept) == sorted(unpicked)  # the pick is kept by the lock, not by a hold
    assert all(u["target"] == "a" and u["reason"] == "not picked" for u in kept.values())
    assert all(u["project"] == str(root) for u in kept.values())
    text = cli(capsys, root, "cache", "prune")
    assert f"keeping: entry {unpicked[0]} (a: not picked on " in text.out
    assert "keep_unpicked_days: 30)" in text.out and text.out.rstrip().endswith("nothing to prune"), text

    age_holds(cache_dir(), 29)
    r = cli(capsys, root, "cache", "prune", "--yes", "--json")
    assert r.json["entries"] == [] and len(r.json["kept_unpicked"]) == 2, r  # day 29: still kept

    age_holds(cache_dir(), 2)  # day 31
    r = cli(capsys, root, "cache", "prune", "--json")
    assert r.json["kept_unpicked"] == [] and r.json["entries"] == sorted(unpicked), r
    assert sorted(u["key"] for u in r.json["expired_unpicked"]) == sorted(unpicked)
    assert in_cache() >= set(keys)  # nothing deleted without --yes
    text = cli(capsys, root, "cache", "prune")
    assert f"would delete: entry {unpicked[0]} (a: not picked on " in text.out, text
    r = cli(capsys, root, "cache", "prune", "--yes", "--json")
    assert r.code == 0 and r.json["deleted"] is True and len(r.json["blobs"]) == 2, r
    left = in_cache()
    assert picked in left and not left & set(unpicked)
    with Cache(cache_dir()) as cache:
        assert cache.holds() == {}  # the holds went with their entries

    # The accepted pick is restored from the cache, with no generation.
    (root / "generated" / "a.png").unlink()
    r = cli(capsys, root, "build", "--json")
    assert r.code == 0 and r.json["restored"] == 1, r
    assert cli(capsys, root, "check", "--allow-drafts").code == 0


def test_rejected_candidates_are_kept_and_the_retention_setting_is_honoured(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, root, "build").code == 0
    keys = candidate_keys(root)
    assert cli(capsys, root, "reject", "a").code == 0
    assert "a" not in lock(root)["pending"] or not lock(root)["pending"]["a"].get("candidates")
    age_cache(cache_dir())
    r = cli(capsys, root, "cache", "prune", "--yes", "--json")
    assert r.code == 0 and r.json["entries"] == [], r  # just rejected: kept
    assert sorted(u["key"] for u in r.json["kept_unpicked"]) == sorted(keys)
    assert {u["reason"] for u in r.json["kept_unpicked"]} == {"rejected"}

    # keep_unpicked_days in imgbuild.yaml (valid for `validate` too), then the flag over it
    (root / "imgbuild.yaml").write_text("keep_unpicked_days: 7\n" + PROJECT, encoding="utf-8")
    assert cli(capsys, root, "validate").code == 0
    age_holds(cache_dir(), 6)
    r = cli(capsys, root, "cache", "prune", "--json")
    assert r.json["keep_unpicked_days"] == 7 and r.json["entries"] == [], r
    age_holds(cache_dir(), 2)  # day 8
    r = cli(capsys, root, "cache", "prune", "--json")
    assert r.json["entries"] == sorted(keys) and r.json["kept_unpicked"] == [], r
    r = cli(capsys, root, "cache", "prune", "--keep-unpicked-days", "10", "--json")
    assert r.json["keep_unpicked_days"] == 10 and r.json["entries"] == [], r
    assert len(r.json["kept_unpicked"]) == 3 and all(u["until"] > u["since"] for u in r.json["kept_unpicked"])
    r = cli(capsys, root, "cache", "prune", "--keep-unpicked-days", "0", "--yes", "--json")
    assert r.json["entries"] == sorted(keys), r
    assert not in_cache() & set(keys)
    # the next build asks for new seeds (the rejected ones are remembered in the lock) and pays
    assert cli(capsys, root, "build").code == 0
    assert not set(candidate_keys(root)) & set(keys)


def test_the_accepted_pick_is_never_pruned_while_the_lock_references_it(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, root, "build").code == 0
    first = candidate_keys(root)
    assert cli(capsys, root, "accept", "a", "--pick", "1").code == 0
    # Rejecting the pick marks it too, but the lock still names it until another is accepted.
    assert cli(capsys, root, "reject", "a").code == 0
    age_cache(cache_dir())
    age_holds(cache_dir(), 365)
    r = cli(capsys, root, "cache", "prune", "--keep-unpicked-days", "0", "--yes", "--json")
    assert r.code == 0 and first[0] not in r.json["entries"], r
    assert first[0] in in_cache() and sorted(r.json["entries"]) == sorted(first[1:])

    # New candidates, a new pick: the old pick is now replaced by a pick, kept 30 days from now.
    assert cli(capsys, root, "build").code == 0
    second = candidate_keys(root)
    assert cli(capsys, root, "accept", "a", "--pick", "3").code == 0
    age_cache(cache_dir())
    r = cli(capsys, root, "cache", "prune", "--yes", "--json")
    assert r.json["entries"] == [], r
    kept = {u["key"]: u["reason"] for u in r.json["kept_unpicked"]}
    assert kept == {first[0]: "replaced by a pick", second[0]: "not picked", second[1]: "not picked"}
    age_holds(cache_dir(), 31)
    r = cli(capsys, root, "cache", "prune", "--yes", "--json")
    assert sorted(r.json["entries"]) == sorted([first[0], *second[:2]]), r
    assert second[2] in in_cache() and lock(root)["outputs"]["a.png"]["key"] == second[2]
    # even a hold on the current pick (say, from an older cache) never lets it go
    with Cache(cache_dir()) as cache:
        cache.hold({second[2]: {"target": "a", "reason": "not picked"}}, since=0.0)
    r = cli(capsys, root, "cache", "prune", "--keep-unpicked-days", "0", "--yes", "--json")
    assert r.json["entries"] == [] and r.json["kept_unpicked"] == [] and second[2] in in_cache(), r


@pytest.mark.parametrize("value", ["-1", "soon", "2.5"])
def test_a_bad_retention_setting_is_a_located_error(root: Path, capsys: pytest.CaptureFixture[str],
                                                    value: str) -> None:
    (root / "imgbuild.yaml").write_text(PROJECT + f"keep_unpicked_days: {value}\n", encoding="utf-8")
    assert cli(capsys, root, "build").code == 2  # the schema refuses it
    (root / "imgbuild.lock").write_text('{"version": 1, "outputs": {}}', encoding="utf-8")
    r = cli(capsys, root, "cache", "prune")
    assert r.code == 2 and "imgbuild.yaml:9:21: keep_unpicked_days" in r.err and "Traceback" not in r.err, r
    r = cli(capsys, root, "cache", "prune", "--keep-unpicked-days", "-3")
    assert r.code == 2 and "--keep-unpicked-days" in r.err, r


def test_holds_that_are_not_ours_keep_nothing_and_run_nothing(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hold row written by someone else (garbage, a far-future time, or a pickle from stock
    diskcache) is no hold: prune reads it as data or not at all."""
    import diskcache

    assert cli(capsys, root, "build").code == 0
    keys = candidate_keys(root)
    assert cli(capsys, root, "reject", "a").code == 0
    with Cache(cache_dir()) as cache:
        cache._store.set(f"hold:{keys[0]}", b"not json")
        cache._store.set(f"hold:{keys[1]}", json.dumps({"since": 1e300}).encode())
    stock = diskcache.Cache(str(cache_dir()))
    stock.set(f"hold:{keys[2]}", {"since": 4e9, "reason": "would unpickle"})  # a pickled row
    stock.close()
    age_cache(cache_dir())
    r = cli(capsys, root, "cache", "prune", "--json")
    assert r.code == 0 and r.json["kept_unpicked"] == [] and r.json["entries"] == sorted(keys), r


def test_candidates_replaced_before_any_pick_are_kept_too(
        root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A prompt edit while candidates wait: the new ones take their place in the lock, and the
    old ones (never picked, and paid for) are kept for the retention period like the others."""
    assert cli(capsys, root, "build").code == 0
    old = candidate_keys(root)
    (root / "imgbuild.yaml").write_text(PROJECT.replace("at dawn", "at dusk"), encoding="utf-8")
    assert cli(capsys, root, "build").code == 0
    new = candidate_keys(root)
    assert not set(old) & set(new)
    age_cache(cache_dir())
    r = cli(capsys, root, "cache", "prune", "--yes", "--json")
    assert r.code == 0 and r.json["entries"] == [], r
    assert {u["key"]: u["reason"] for u in r.json["kept_unpicked"]} == {k: "replaced by new candidates" for k in old}
    age_holds(cache_dir(), 31)
    r = cli(capsys, root, "cache", "prune", "--yes", "--json")
    assert r.json["entries"] == sorted(old) and in_cache() >= set(new), r
