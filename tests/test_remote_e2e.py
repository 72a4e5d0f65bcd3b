"""The shared remote cache end to end (issue 14), with no mock anywhere: the real CLI, the real
aiohttp client against the DashScope emulator, the real obstore client against SeaweedFS, each
on 127.0.0.1. Every machine is a folder with its own local cache; the emulator counts every
provider request, so "0 requests" is measured, not assumed."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import KEY, assert_lock_matches_files, lock_outputs, subprocess_env
from helpers import Result, run

from imgbuild.emulator import Emulator, EmulatorConfig
from imgbuild.store import remote as rm
from s3_support import BUCKET, RO, RW, S3Server

OUT = "out"
EMULATOR = "dashscope@127.0.0.1"


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    # unlimited: the projects raise the models' rates, the emulator need not hold them back
    with Emulator(EmulatorConfig(task_duration=0.02, documented_rate_limits=False), api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        yield server


def project(root: Path, url: str, count: int, *, variants: int = 3, extra: str = "") -> None:
    """`count` quick targets (wan2.2-flash 512*512 and a few sync Qwen), the first `variants`
    with web derivatives; the emulator's images are allowed into this test's remote."""
    lines = ["version: 1", f"output_dir: {OUT}", "remote:", f"  url: {url}",
             f"  upload_providers: [{EMULATOR}]", extra,
             "limits:", "  wan2.2-t2i-flash: {rps: 1000, concurrency: 64}",
             "  qwen-image-plus: {rps: 1000, concurrency: 64}", "images:"]
    for i in range(count):
        model, size = ("qwen-image-plus", "928*1664") if i % 7 == 3 else ("wan2.2-t2i-flash", "512*512")
        lines += [f"  - name: t{i:02d}", f"    model: {model}", f'    size: "{size}"',
                  f"    prompt: Shared cache test image {i}, a pebble on a beach."]
        if i < variants:
            lines += ["    formats: [webp]", "    widths: [128]", f"    alt: Pebble {i}"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "imgbuild.yaml").write_text("\n".join(l for l in lines if l) + "\n", encoding="utf-8")


def clone(source: Path, dest: Path, *, lock: bool = True) -> Path:
    """A fresh clone of a repository that keeps generated images out of git: specs (+ lock)."""
    dest.mkdir(parents=True)
    shutil.copy(source / "imgbuild.yaml", dest)
    if lock:
        shutil.copy(source / "imgbuild.lock", dest)
    return dest


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cache: Path,
        *args: str) -> Result:
    """One run of the CLI on "the machine" whose local cache is `cache`."""
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(cache))
    result = run(capsys, *args)
    assert RW[1] not in result.out + result.err and KEY not in result.out + result.err
    return result


def files(root: Path) -> dict[str, str]:
    base = root / OUT
    return {p.relative_to(base).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}


def remote_line(result: Result) -> str:
    return next(line for line in result.err.splitlines() + result.out.splitlines()
                if line.startswith("imgbuild: remote: "))


def test_machine_b_pulls_what_machine_a_built_without_a_key_or_a_provider_request(
        tmp_path: Path, s3_url: str, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = tmp_path / "a"
    project(a, s3_url, 20)
    built = cli(capsys, monkeypatch, tmp_path / "cache-a", "build", "-C", str(a))
    assert built.code == 0, built
    assert "imgbuild: 20 images built" in built.out and emu.billed == 20
    assert remote_line(built) == "imgbuild: remote: 0 hits, 20 uploaded, 0 already there, 0 errors"

    b = clone(a, tmp_path / "b")
    emu.reset()
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    pulled = cli(capsys, monkeypatch, tmp_path / "cache-b", "pull", "-C", str(b), "--json")
    assert pulled.code == 0, pulled
    assert (pulled.json["restored"], pulled.json["derived"], pulled.json["failed"]) == (20, 3, 0)
    assert pulled.json["remote"]["hits"] == 20
    assert emu.requests == [] and emu.billed == 0  # not one request reached the provider
    assert files(b) == files(a)  # originals, derivatives and manifest, byte for byte
    assert (b / "imgbuild.lock").read_bytes() == (a / "imgbuild.lock").read_bytes()
    # Emulator images count as drafts (only the real service's are final), nothing else is off.
    again = cli(capsys, monkeypatch, tmp_path / "cache-b", "check", "-C", str(b), "--allow-drafts")
    assert again.code == 0, again


def test_two_shards_split_the_work_and_an_assembling_build_pays_nothing(
        tmp_path: Path, s3_url: str, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    specs = tmp_path / "specs"
    project(specs, s3_url, 12, variants=1)
    shard_sets = []
    fragments: dict[str, dict[str, Any]] = {}
    for i in (1, 2):
        before = emu.billed
        root = clone(specs, tmp_path / f"shard{i}", lock=False)
        r = cli(capsys, monkeypatch, tmp_path / f"cache{i}", "build", "-C", str(root),
                "--shard", f"{i}/2", "--json")
        assert r.code == 0, r
        names = {row["name"] for row in r.json["targets"] if row["status"] == "built"}
        assert emu.billed - before == len(names) and r.json["remote"]["uploaded"] == len(names)
        fragment = json.loads((root / ".imgbuild" / f"lock-shard-{i}-of-2.json").read_text())["outputs"]
        assert {e["name"] for e in fragment.values()} == names
        fragments.update(fragment)
        shard_sets.append(names)
    assert shard_sets[0] and shard_sets[1] and not shard_sets[0] & shard_sets[1]
    assert len(shard_sets[0] | shard_sets[1]) == 12 and emu.billed == 12  # each billed once

    emu.reset()
    final = clone(specs, tmp_path / "final", lock=False)
    r = cli(capsys, monkeypatch, tmp_path / "cache3", "build", "-C", str(final), "--json")
    assert r.code == 0, r
    assert (r.json["restored"], r.json["built"], r.json["remote"]["hits"]) == (12, 0, 12)
    assert emu.requests == [] and emu.billed == 0
    # Assembled exactly: every entry as the shard that paid for it recorded it (same request
    # ids, same file hashes), derivatives included, and nothing else.
    assert lock_outputs(final) == fragments
    assert_lock_matches_files(final, OUT)

    single = clone(specs, tmp_path / "single", lock=False)
    single_yaml = single / "imgbuild.yaml"
    single_yaml.write_text(single_yaml.read_text().replace(s3_url, s3_url + "-single"))
    r = cli(capsys, monkeypatch, tmp_path / "cache4", "build", "-C", str(single))
    assert r.code == 0, r
    # Request and task ids differ between two paid runs, and so do the file hashes, because each
    # image embeds its request id; everything else in the lock is the same.
    assert _without_ids(lock_outputs(final)) == _without_ids(lock_outputs(single))


def _without_ids(lock: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    drop = {"request_id", "task_id", "sha256", "source_sha256", "bytes"}  # hashes of files
    return {o: {k: v for k, v in e.items() if k not in drop} for o, e in lock.items()}


def older_lock(root: Path) -> None:
    """The lock as imgbuild wrote it before entries named their original's digest."""
    doc = json.loads((root / "imgbuild.lock").read_text())
    for entry in doc["outputs"].values():
        entry.pop("original", None)
    (root / "imgbuild.lock").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def test_a_lock_naming_the_originals_pulls_them_without_the_records(
        tmp_path: Path, s3_url: str, s3_server: S3Server, emu: Emulator,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """One GET per original: with every ac/v1 record deleted from the server, a pull whose lock
    names each original's sha256 still restores everything; an older lock (no digests) needs
    the records, so the same pull then finds nothing, which shows which path each took."""
    import obstore

    from test_remote_store import raw_store

    a = tmp_path / "a"
    project(a, s3_url, 8, variants=2)
    assert cli(capsys, monkeypatch, tmp_path / "cache-a", "build", "-C", str(a)).code == 0
    store = raw_store(s3_server, s3_url)
    made = {e["key"]: e for e in lock_outputs(a).values() if "derived_from" not in e}
    assert len(made) == 8
    for key, entry in made.items():
        record = json.loads(bytes(obstore.get(store, rm.record_path(key)).bytes()))
        assert record["images"] == [entry["original"]]  # the lock names the object the remote holds
        obstore.delete(store, rm.record_path(key))
    assert all("original" not in e for e in lock_outputs(a).values() if "derived_from" in e)

    monkeypatch.delenv("DASHSCOPE_API_KEY")
    emu.reset()
    b = clone(a, tmp_path / "b")
    pulled = cli(capsys, monkeypatch, tmp_path / "cache-b", "pull", "-C", str(b), "--json")
    assert pulled.code == 0, pulled
    assert (pulled.json["restored"], pulled.json["derived"], pulled.json["remote"]["hits"]) == (8, 2, 8)
    assert files(b) == files(a) and emu.requests == []
    assert (b / "imgbuild.lock").read_bytes() == (a / "imgbuild.lock").read_bytes()

    old = clone(a, tmp_path / "old")
    older_lock(old)
    r = cli(capsys, monkeypatch, tmp_path / "cache-old", "pull", "-C", str(old), "--json")
    assert r.code == 1 and (r.json["restored"], r.json["remote"]["hits"]) == (0, 0), r


def test_an_older_lock_still_pulls_through_the_records(
        tmp_path: Path, s3_url: str, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = tmp_path / "a"
    project(a, s3_url, 5, variants=1)
    assert cli(capsys, monkeypatch, tmp_path / "cache-a", "build", "-C", str(a)).code == 0
    b = clone(a, tmp_path / "b")
    older_lock(b)
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    emu.reset()
    pulled = cli(capsys, monkeypatch, tmp_path / "cache-b", "pull", "-C", str(b), "--json")
    assert pulled.code == 0, pulled
    assert (pulled.json["restored"], pulled.json["remote"]["hits"]) == (5, 5) and emu.requests == []
    assert files(b) == files(a)
    # restored outputs get their entries written again, now naming their originals
    assert (b / "imgbuild.lock").read_bytes() == (a / "imgbuild.lock").read_bytes()


def test_a_lock_naming_another_original_is_refused_and_not_cached(
        tmp_path: Path, s3_url: str, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest in the lock only chooses which object to fetch: a sound original that does not
    render to the file the lock records (here: another target's) is not used."""
    a = tmp_path / "a"
    project(a, s3_url, 3, variants=0)
    assert cli(capsys, monkeypatch, tmp_path / "cache-a", "build", "-C", str(a)).code == 0
    b = clone(a, tmp_path / "b")
    doc = json.loads((b / "imgbuild.lock").read_text())
    other = doc["outputs"]["t02.png"]["original"]
    doc["outputs"]["t01.png"]["original"] = other
    (b / "imgbuild.lock").write_text(json.dumps(doc))
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    pulled = cli(capsys, monkeypatch, tmp_path / "cache-b", "pull", "-C", str(b), "--json")
    assert pulled.code == 1, pulled
    assert f"{rm.blob_path(other)}: does not match the lock" in pulled.err and "t01" in pulled.err
    assert (pulled.json["restored"], pulled.json["failed"]) == (2, 1)
    assert not (b / OUT / "t01.png").exists()
    from imgbuild.store.originals import Cache

    with Cache(tmp_path / "cache-b") as cache:
        assert cache.get(lock_outputs(a)["t01.png"]["key"]) is None


@pytest.mark.parametrize("lock_kind", ["digests", "older"])
def test_a_tampered_original_is_named_and_never_used(
        lock_kind: str, tmp_path: Path, s3_url: str, s3_server: S3Server, emu: Emulator,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import obstore

    from test_remote_store import png, raw_store

    a = tmp_path / "a"
    project(a, s3_url, 4, variants=0)
    assert cli(capsys, monkeypatch, tmp_path / "cache-a", "build", "-C", str(a)).code == 0
    victim = lock_outputs(a)["t01.png"]["key"]
    record = json.loads(bytes(obstore.get(raw_store(s3_server, s3_url), rm.record_path(victim)).bytes()))
    path = rm.blob_path(record["images"][0])
    obstore.put(raw_store(s3_server, s3_url), path, png((255, 0, 0), 512))  # replaced on the server

    b = clone(a, tmp_path / "b")
    if lock_kind == "older":
        older_lock(b)
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    pulled = cli(capsys, monkeypatch, tmp_path / "cache-b", "pull", "-C", str(b), "--json")
    assert pulled.code == 1, pulled
    assert f"{path}: content does not match its sha256 name" in pulled.err and "t01" in pulled.err
    assert pulled.json["failed"] == 1 and pulled.json["restored"] == 3
    assert not (b / OUT / "t01.png").exists()
    from imgbuild.store.originals import Cache

    with Cache(tmp_path / "cache-b") as cache:
        assert cache.get(victim) is None  # not cached locally either

    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    emu.reset()
    built = cli(capsys, monkeypatch, tmp_path / "cache-b", "build", "-C", str(b), "--json")
    assert built.code == 0, built
    assert f"{path}: content does not match" in built.err and "t01 falls back to the next source" in built.err
    assert emu.billed == 1  # only the tampered one is paid again; the lock still pins its bytes
    assert built.json["remote"]["errors"] == 1


@pytest.mark.parametrize("flagged", [True, False], ids=["read-only flag", "identity only"])
def test_a_read_only_identity_builds_and_writes_nothing(
        flagged: bool, tmp_path: Path, s3_url: str, s3_server: S3Server, emu: Emulator,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """With IMGBUILD_REMOTE_READ_ONLY=1 (a pull-request job) no write is tried; a read-only
    identity without the flag (a misconfigured job) is refused once, then not asked again."""
    root = tmp_path / "p"
    project(root, s3_url, 3, variants=0)
    for name, value in s3_server.env(read_only=True).items():
        monkeypatch.setenv(name, value)
    if flagged:
        monkeypatch.setenv(rm.READ_ONLY_ENV, "1")
    r = cli(capsys, monkeypatch, tmp_path / "cache", "build", "-C", str(root),
            *(["--remote-required"] if flagged else []))
    assert r.code == 0, r
    assert "imgbuild: 3 images built" in r.out
    if flagged:
        assert remote_line(r) == ("imgbuild: remote: 0 hits, 0 uploaded, 0 already there, 0 errors "
                                  "(read-only: uploads skipped)")
    else:
        assert remote_line(r) == ("imgbuild: remote: 0 hits, 0 uploaded, 0 already there, 1 error "
                                  "(writes denied: uploads skipped)")
        assert r.err.count("access denied") == 1  # the first refused write, said once
    assert RO[1] not in r.out + r.err
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    writer = rm.Remote(rm.RemoteConfig(BUCKET, s3_url.split("/", 3)[3]))
    assert not any(writer.has(e["key"]) for e in lock_outputs(root).values())


def test_two_builds_uploading_the_same_originals_at_once_write_each_once(
        tmp_path: Path, s3_url: str, emu: Emulator) -> None:
    roots = []
    for i in (1, 2):
        root = tmp_path / f"m{i}"
        project(root, s3_url, 6, variants=0)
        roots.append(root)
    procs = [subprocess.Popen([sys.executable, "-m", "imgbuild", "build", "-C", str(root), "--json",
                               "--remote-required"],
                              env=subprocess_env(IMGBUILD_CACHE_DIR=str(tmp_path / f"cache{i}")),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i, root in enumerate(roots)]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        summaries.append(json.loads(out.decode().strip().splitlines()[-1])["remote"])
    assert [s["errors"] for s in summaries] == [0, 0]
    assert sum(s["uploaded"] for s in summaries) == 6  # each record written by exactly one
    assert sum(s["uploaded"] + s["already_there"] for s in summaries) == 12


@pytest.mark.parametrize("required", [False, True])
def test_the_store_killed_mid_build(required: bool, tmp_path: Path, own_s3_server: S3Server, emu: Emulator,
                                    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "p"
    project(root, f"s3://{BUCKET}/killed", 3, variants=0)
    real_upload = rm.Remote.upload

    def upload_then_kill(self: rm.Remote, *args: Any) -> bool:
        created = real_upload(self, *args)
        own_s3_server.kill()  # held at a known point: right after the first upload
        return created

    monkeypatch.setattr(rm.Remote, "upload", upload_then_kill)
    args = ["build", "-C", str(root), "-j", "1", "--json"] + (["--remote-required"] if required else [])
    r = cli(capsys, monkeypatch, tmp_path / "cache", *args)
    assert r.code == (1 if required else 0), r
    assert r.json["built"] == 3 and r.json["failed"] == 0  # every image is paid once and kept
    assert_lock_matches_files(root, OUT)
    assert r.json["remote"]["uploaded"] == 1 and r.json["remote"]["errors"] == 1
    assert r.err.count("the store did not answer") == 1  # said once, not once per image
    assert "going on with the local cache only" in r.err


def test_a_remote_without_credentials_is_said_and_required_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "p"
    project(root, "s3://team-art/imgbuild", 2, variants=0)
    r = cli(capsys, monkeypatch, tmp_path / "cache", "build", "-C", str(root))
    assert r.code == 0, r  # placeholder drafts: the remote is not needed, but its state is said
    assert "no credentials" in r.err and remote_line(r).endswith("1 error")
    r = cli(capsys, monkeypatch, tmp_path / "cache", "build", "-C", str(root), "--remote-required")
    assert r.code == 1, r


def test_shard_must_be_i_of_n(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "p"
    project(root, "s3://team-art/imgbuild", 1, variants=0)
    for bad in ("0/2", "3/2", "1-2", "x"):
        r = cli(capsys, monkeypatch, tmp_path / "cache", "build", "-C", str(root), "--shard", bad)
        assert r.code == 2 and "--shard" in r.err, r


def test_without_a_remote_no_object_store_code_is_imported(tmp_path: Path) -> None:
    """The no-op build of a project without a remote must not get slower: obstore (and the
    transfer code) is imported only once a remote is opened, which the same probe then shows."""
    root = tmp_path / "p"
    project(root, "s3://unused/x", 2, variants=0)
    text = (root / "imgbuild.yaml").read_text().split("limits:")[1]
    (root / "imgbuild.yaml").write_text(f"version: 1\noutput_dir: {OUT}\nlimits:{text}")
    probe = ("import os, sys; from imgbuild.cli import main\n"
             "remote = lambda: [m for m in sys.modules if m.startswith(('obstore', 'imgbuild.run.transfer'))]\n"
             f"assert main(['build', '-q', '-C', {str(root)!r}]) == 0\n"
             f"assert main(['build', '-q', '-C', {str(root)!r}]) == 0\n"
             "assert not remote(), remote()\n"
             "os.environ['IMGBUILD_REMOTE'] = 's3://team-art/imgbuild'  # no credentials: said, not fatal\n"
             f"assert main(['build', '-q', '-C', {str(root)!r}]) == 0\n"
             "assert 'obstore' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", probe], env=subprocess_env(
        IMGBUILD_CACHE_DIR=str(tmp_path / "cache")), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_push_uploads_what_the_lock_references_once(
        tmp_path: Path, s3_url: str, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a = tmp_path / "a"
    project(a, s3_url, 4, variants=1)
    assert cli(capsys, monkeypatch, tmp_path / "cache-a", "build", "-C", str(a)).code == 0
    monkeypatch.setenv(rm.REMOTE_ENV, s3_url + "-pushed")  # another, empty remote
    pushed = cli(capsys, monkeypatch, tmp_path / "cache-a", "push", "-C", str(a))
    assert pushed.code == 0, pushed
    assert remote_line(pushed) == "imgbuild: remote: 0 hits, 4 uploaded, 0 already there, 0 errors"
    again = cli(capsys, monkeypatch, tmp_path / "cache-a", "push", "-C", str(a))
    assert remote_line(again) == "imgbuild: remote: 0 hits, 0 uploaded, 4 already there, 0 errors"
    b = clone(a, tmp_path / "b")
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    emu.reset()
    pulled = cli(capsys, monkeypatch, tmp_path / "cache-b", "pull", "-C", str(b))
    assert pulled.code == 0 and files(b) == files(a) and emu.requests == [], pulled
    monkeypatch.setenv(rm.READ_ONLY_ENV, "1")
    refused = cli(capsys, monkeypatch, tmp_path / "cache-a", "push", "-C", str(a))
    assert refused.code == 2 and "read-only" in refused.err, refused
