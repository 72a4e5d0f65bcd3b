"""Hostile repositories and damaged state (issue 12): a cloned repository must not be able to run
code or delete files through imgbuild, and damaged or surprising local state (cache, lock,
journal, .imgbuild/) degrades to a clear message or a warning, never to exit 3, wrong pixels
or a paid image thrown away.

Every adversarial input here is made with the tools an attacker or an accident would use: stock
diskcache writing pickles, sqlite rewriting rows, a real file-size limit (RLIMIT_FSIZE) making
the cache's writes fail in a child process, a DashScope emulator on 127.0.0.1 counting what it
bills.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import KEY, posts, subprocess_env
from helpers import age_cache, run

from imgbuild.emulator import Emulator, EmulatorConfig
from imgbuild.store.originals import Cache

PROJECT = "version: 1\noutput_dir: out\n{extra}images:\n  - name: apple\n    prompt: A red apple\n"


def project(root: Path, extra: str = "", text: str = PROJECT) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "imgbuild.yaml").write_text(text.format(extra=extra), encoding="utf-8")
    return root


def key_of(root: Path, name: str = "apple", provider: str = "placeholder") -> str:
    from imgbuild.plan.states import generation_key
    from imgbuild.spec.expand import expand
    from imgbuild.spec.project import load_project

    (target,) = [t for t in expand(load_project((root / "imgbuild.yaml").resolve())) if t.name == name]
    return generation_key(provider, target.request)


def lock(root: Path, name: str = "imgbuild.lock") -> dict[str, Any]:
    return json.loads((root / name).read_text("utf-8"))["outputs"]


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    # unlimited: these tests count the POSTs a damaged state causes, not the documented rate limits
    config = EmulatorConfig(task_duration=0.05, documented_concurrency=False, documented_rate_limits=False)
    with Emulator(config, api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        yield server


# --- 1. nothing read from a cache is ever unpickled -----------------------------------------

class RunsCode:
    """Unpickling this runs `exec`: it creates the marker file."""

    def __init__(self, marker: Path, pad: int = 0) -> None:
        self.source = f"open({str(marker)!r}, 'w').close()" + "#" * pad

    def __reduce__(self) -> Any:
        return (exec, (self.source,))


COMMANDS = [("plan",), ("build",), ("check",), ("cache", "info"), ("cache", "verify"),
            ("cache", "verify", "--yes"), ("cache", "prune"), ("cache", "prune", "--yes"), ("build", "--force")]


def test_a_cache_poisoned_with_pickles_by_stock_diskcache_never_runs_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import diskcache

    monkeypatch.delenv("IMGBUILD_CACHE_DIR")  # the repository's own cache_dir is used
    root = project(tmp_path / "repo", "cache_dir: .cache/imgbuild\n")
    (root / ".git").mkdir()
    key = key_of(root)
    marker = tmp_path / "code-ran"
    with diskcache.Cache(str(root / ".cache" / "imgbuild")) as stock:  # the attacker's tool
        stock.set(f"gen:{key}", RunsCode(marker))  # the record this spec looks up (in the db)
        stock.set(f"blob:{'0' * 64}", RunsCode(marker, pad=70_000))  # a pickle in a value file
        stock.set(RunsCode(marker), b"x")  # a pickled key
        stock.set(f"gen:{'1' * 64}", RunsCode(marker, pad=70_000))
    for args in COMMANDS:
        r = run(capsys, *args, "-C", str(root))
        assert not marker.exists(), f"imgbuild {' '.join(args)} ran code from the cache\n{r}"
        assert r.code in (0, 1), r
        if args == ("build",):
            assert r.code == 0 and (root / "out" / "apple.png").is_file(), r
            assert "inside the repository" in r.err, r  # a committed cache is not trusted
    r = run(capsys, "cache", "info", "-C", str(root), "--json")
    assert r.json["entries"] == 1, r  # the poisoned records were pruned; the build's is intact


def test_cache_rows_naming_files_outside_the_cache_are_neither_read_nor_deleted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    assert run(capsys, "build", "-C", str(root)).code == 0
    cache_dir = Path(os.environ["IMGBUILD_CACHE_DIR"])
    victim = tmp_path / "thesis.docx"
    victim.write_bytes(b"years of work")
    with sqlite3.connect(cache_dir / "cache.db") as db:  # diskcache's own table, rewritten
        db.execute("INSERT INTO Cache (key, raw, store_time, mode, filename, value, size) "
                   "VALUES (?, 1, 0, 2, ?, NULL, 13)", (f"blob:{'2' * 64}", f"../../{victim.name}"))
        db.execute("INSERT INTO Settings VALUES ('disk_unknown_setting', 1)")
    db.close()
    age_cache(cache_dir)
    for args in (("cache", "verify", "--yes"), ("cache", "prune", "--yes"), ("build", "--force")):
        r = run(capsys, *args, "-C", str(root))
        assert r.code in (0, 1), r
        assert victim.read_bytes() == b"years of work", args


def test_value_files_are_one_folder_deep_and_older_two_deep_ones_still_read(tmp_path: Path) -> None:
    """imgbuild names value files ab/<28 hex>.val; caches written by diskcache's own naming
    (ab/cd/<28 hex>.val, before 0.3) stay readable."""
    import re

    originals = [os.urandom(40_000 + i) for i in range(5)]  # above the size kept in the database
    with Cache(tmp_path / "cache") as cache:
        for i, data in enumerate(originals):
            cache.put(f"k{i}", [data], {"provider": "dashscope"})
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
        rows = db.execute("SELECT rowid, filename FROM Cache WHERE filename IS NOT NULL").fetchall()
        assert len(rows) == 5 and all(re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{28}\.val", f) for _, f in rows), rows
        for rowid, name in rows:  # move each into the older layout, as an older cache has it
            older = f"{name[:2]}/cd/{name[3:]}"
            (tmp_path / "cache" / older).parent.mkdir(exist_ok=True)
            (tmp_path / "cache" / name).rename(tmp_path / "cache" / older)
            db.execute("UPDATE Cache SET filename = ? WHERE rowid = ?", (older, rowid))
    db.close()
    with Cache(tmp_path / "cache") as cache:
        assert [cache.get(f"k{i}")[0] for i in range(5)] == [[data] for data in originals]  # type: ignore[index]
        assert cache.verify() == {}


def test_records_of_earlier_versions_are_read_as_data_and_still_restore(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """imgbuild 0.1 pickled its records (plain dicts): their paid originals stay usable."""
    import diskcache

    root = project(tmp_path / "p")
    assert run(capsys, "build", "-C", str(root)).code == 0
    key = key_of(root)
    cache_dir = Path(os.environ["IMGBUILD_CACHE_DIR"])
    with Cache(cache_dir) as cache:
        images, record = cache.get(key)  # type: ignore[misc]
    with diskcache.Cache(str(cache_dir)) as stock:  # rewrite the record as 0.1 stored it
        stock.set(f"gen:{key}", {**record, "slots": None, "task_id": None})
    (root / "out" / "apple.png").unlink()
    r = run(capsys, "build", "-C", str(root), "--json")
    assert r.code == 0 and r.json["restored"] == 1 and r.json["provider_calls"] == 0, r


# --- 5. a damaged original is evicted and its target generated again -------------------------

def _damage_the_blob(key: str) -> str:
    with Cache(Path(os.environ["IMGBUILD_CACHE_DIR"])) as cache:
        digest = cache.entries()[key][0]
        cache._store.set(f"blob:{digest}", b"one flipped byte, as the store sees it")
    return digest


def test_a_damaged_cached_original_is_evicted_and_generated_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    assert run(capsys, "build", "-C", str(root)).code == 0
    key = key_of(root)
    _damage_the_blob(key)
    (root / "out" / "apple.png").unlink()
    r = run(capsys, "plan", "-C", str(root))
    assert "the cached original was damaged (removed from the cache): generating it again" in r.out, r
    r = run(capsys, "build", "-C", str(root), "--json")
    assert r.code == 0 and r.json["built"] == 1 and r.json["restored"] == 0, r
    assert run(capsys, "cache", "verify").code == 0  # the regenerated original replaced it
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0


def test_cache_verify_yes_removes_what_is_damaged_and_says_what_builds_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    assert run(capsys, "build", "-C", str(root)).code == 0
    key = key_of(root)
    digest = _damage_the_blob(key)
    r = run(capsys, "cache", "verify")
    assert r.code == 1 and "generates the image again (paid)" in r.out and "--yes" in r.out, r
    r = run(capsys, "cache", "verify", "--yes", "--json")
    assert r.code == 1 and r.json["removed_blobs"] == [digest] and r.json["removed_entries"] == [key], r
    assert run(capsys, "cache", "verify").code == 0
    (root / "out" / "apple.png").unlink()
    r = run(capsys, "build", "-C", str(root), "--json")
    assert r.code == 0 and r.json["built"] == 1, r


# --- 6. a cache that cannot store an original: output kept, nothing more paid, no exit 3 ------

# The limit is set once the cache is open (opening rewrites diskcache's settings into sqlite's
# log): 40 KB, above an output (~29 KB) but soon too small for sqlite's log, which grows by ~33 KB
# per stored original. Writes past it fail for real (EFBIG) inside sqlite.
FULL_DISK_CHILD = """
import os, resource, signal, sys
from imgbuild.store import originals
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
opened = originals.Cache._open

def open_then_fill_the_disk(self):
    store = opened(self)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40960, 40960))
    return store

originals.Cache._open = open_then_fill_the_disk
from imgbuild.cli import main
sys.exit(main(["build", "-C", {root!r}, "-j", "1", "--provider", "dashscope"]))
"""


def test_a_full_cache_disk_keeps_the_output_stops_paying_and_never_exits_3(
        tmp_path: Path, emu: Emulator) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "imgbuild.yaml").write_text(
        "version: 1\noutput_dir: out\nlimits: {qwen-image-plus: {rps: 1000, concurrency: 64}}\n"
        "defaults: {model: qwen-image-plus, size: '1664*928'}\nimages:\n"
        + "".join(f"  - name: q{i}\n    prompt: A calm lake at dawn, number {i}\n" for i in range(5)))
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD.format(root=str(root))],
                          capture_output=True, text=True, timeout=120, env=subprocess_env())
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, proc  # stopped early: not 3
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert text.count("but not cached") == 1 and "no further image is paid for" in text, text
    assert "not started" in text, text  # nothing submitted after the cache failed
    written = lock(root)
    assert emu.billed == len(written) >= 1, text  # every paid image is written and locked
    assert all((root / "out" / o).is_file() for o in written)
    with Cache(Path(os.environ["IMGBUILD_CACHE_DIR"])) as cache:
        assert len(cache.keys()) == len(written) - 1  # all but the one the full disk refused


# --- 7. prune spares running builds and the grace period, under the cache's own lock ---------

def test_prune_never_deletes_what_a_running_build_just_stored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from imgbuild.store import cacheusers

    root = project(tmp_path / "p")
    assert run(capsys, "build", "-C", str(root)).code == 0
    cache_dir = Path(os.environ["IMGBUILD_CACHE_DIR"])
    age_cache(cache_dir)  # the first build's original is old
    # A running build has registered and stored an original its lockfile does not name yet.
    running = Cache(cache_dir, register=True)
    running.put("f" * 64, [b"paid for three hours ago"], {"provider": "dashscope"})
    # A long build: it started 4 h ago and stored this 3 h ago, beyond the grace period.
    age_cache(cache_dir, 3 * 3600)
    registration = running._registration.path  # type: ignore[union-attr]
    registration.write_text(json.dumps({"pid": os.getpid(), "since": time.time() - 4 * 3600}))
    (root / "imgbuild.yaml").write_text(PROJECT.format(extra="").replace("apple", "pear"))
    assert run(capsys, "build", "-C", str(root)).code == 0  # now the apple is unreferenced
    r = run(capsys, "cache", "prune", "-C", str(root), "--yes", "--json")
    assert r.code == 0 and r.json["entries"] == [key_of(project(tmp_path / "q"))], r
    with Cache(cache_dir) as cache:
        assert cache.get("f" * 64) is not None  # the running build's original survived
    running.close()  # the build ended (its lockfile would now name it, or not)
    r = run(capsys, "cache", "prune", "-C", str(root), "--yes", "--json")
    assert r.json["entries"] == ["f" * 64], r
    assert not list((cache_dir / cacheusers.USERS_DIR).iterdir())


def test_prune_waits_for_the_caches_own_lock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two prunes never interleave: the second waits for the first (held here at a known point)."""
    from imgbuild.store import cacheusers

    root = project(tmp_path / "p")
    assert run(capsys, "build", "-C", str(root)).code == 0
    cache_dir = Path(os.environ["IMGBUILD_CACHE_DIR"])
    probe = ("import sys; from imgbuild.cli import main; "
             f"sys.exit(main(['cache', 'prune', '-C', {str(root)!r}, '--yes']))")
    with cacheusers.maintenance(cache_dir):
        child = subprocess.Popen([sys.executable, "-c", probe], env=subprocess_env(), text=True,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert child.stderr is not None
        line = child.stderr.readline()  # blocks until the child reaches the lock
        assert "waiting for another prune or repair of the cache" in line, line
        assert child.poll() is None  # still waiting while we hold it
    _, rest = child.communicate(timeout=60)
    assert child.returncode == 0, rest


# --- 9. each project file owns its lock ---------------------------------------------------------

TWO = "version: 1\noutput_dir: out\nimages:\n  - name: {name}\n    prompt: A {name}\n"


def test_two_project_files_in_one_folder_keep_their_own_locks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "imgbuild.yaml").write_text(TWO.format(name="a"))
    (root / "b.yaml").write_text(TWO.format(name="b"))
    assert run(capsys, "build", "-C", str(root)).code == 0
    assert run(capsys, "build", "-C", str(root), "-f", "b.yaml").code == 0
    assert list(lock(root)) == ["a.png"] and list(lock(root, "b.lock")) == ["b.png"]
    for args in ((), ("-f", "b.yaml")):
        r = run(capsys, "build", "-C", str(root), *args)
        assert "nothing to do" in r.out, r  # they converge: neither prunes the other
        assert run(capsys, "check", "-C", str(root), "--allow-drafts", *args).code == 0


def test_a_project_file_adopts_its_entries_from_the_shared_lock_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before, `-f b.yaml` wrote imgbuild.lock: its entries move to b.lock, nothing is rebuilt."""
    root = tmp_path / "p"
    root.mkdir()
    (root / "imgbuild.yaml").write_text(TWO.format(name="a"))
    (root / "b.yaml").write_text(TWO.format(name="b"))
    assert run(capsys, "build", "-C", str(root)).code == 0
    assert run(capsys, "build", "-C", str(root), "-f", "b.yaml").code == 0
    shared = {**lock(root), **lock(root, "b.lock")}  # what 0.1 wrote to imgbuild.lock
    (root / "imgbuild.lock").write_text(json.dumps({"version": 1, "generator": "imgbuild", "outputs": shared}))
    (root / "b.lock").unlink()
    assert run(capsys, "check", "-C", str(root), "-f", "b.yaml", "--allow-drafts").code == 0
    assert not (root / "b.lock").exists()  # check only reads
    r = run(capsys, "build", "-C", str(root), "-f", "b.yaml", "--json")
    assert r.code == 0 and r.json["built"] == 0 and r.json["restored"] == 0, r
    assert list(lock(root, "b.lock")) == ["b.png"]


def test_a_lockfile_given_as_the_project_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    (root / "x.lock").write_text("version: 1\n")
    r = run(capsys, "validate", "-C", str(root), "-f", "x.lock")
    assert r.code == 2 and "a lockfile, not a project file" in r.err, r


# --- 2. output_dir is a folder strictly inside the project; reads stay in the repository -----

@pytest.mark.parametrize("output_dir, why", [
    (".", "must be a folder inside the project"),
    ("./", "must be a folder inside the project"),
    ("..", "must be a folder inside the project"),
    ("../elsewhere", "must be a folder inside the project"),
    ("/tmp/imgbuild-out", "must be a path relative to"),
    ("~/out", "must be a path relative to"),
    ("C:/out", "must be a path relative to"),
    (".git/hooks", "must not be inside .git/"),
    (".imgbuild/out", "must not be inside .imgbuild/"),
    ("linked", "which is not inside the project (a symlink?)"),
    ("vendored", "holds a git repository (.git)"),
    ("out\u0000x", "must not contain control characters"),
])
def test_an_output_dir_that_is_not_a_folder_inside_the_project_is_refused(
        output_dir: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p", f"output_dir: {json.dumps(output_dir)}\n",
                   text="version: 1\n{extra}images:\n  - name: apple\n    prompt: A red apple\n")
    (root / "linked").symlink_to(root, target_is_directory=True)
    (root / "vendored" / ".git").mkdir(parents=True)
    for verb in ("validate", "build", "clean"):
        r = run(capsys, verb, "-C", str(root))
        assert r.code == 2, r
        assert "imgbuild.yaml:2:13: output_dir: " in r.err and why in r.err, r
    written = sorted(p.name for p in root.iterdir())
    assert written == [".imgbuild", "imgbuild.yaml", "linked", "vendored"], written  # just the build lock


def test_templates_and_data_from_outside_the_repository_are_never_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "home" / ".ssh" / "id_rsa.yaml"
    secret.parent.mkdir(parents=True)
    secret.write_text("[PRIVATE-KEY-MATERIAL]\n")
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "templates").mkdir()
    (root / "templates" / "style.j2").symlink_to(secret)
    cases = {
        "templates_dir: ../home/.ssh\n": "templates_dir: '../home/.ssh' is outside the repository",
        "include: ['../home/.ssh/*.yaml']\n": "outside the repository",
        "include: ['/etc/*.conf']\n": "must be relative to the project file's folder",
    }
    for extra, why in cases.items():
        project(root, extra)
        r = run(capsys, "plan", "-C", str(root))
        assert r.code == 2 and why in r.err and "PRIVATE" not in r.out + r.err, (extra, r)
    project(root, text="version: 1\nimages:\n  - name: a\n    prompt: '{{% include \"style.j2\" %}}'\n"
                       "  - name: 'b{{{{ k }}}}'\n    prompt: p\n    matrix: {{k: ../home/.ssh/id_rsa.yaml}}\n")
    r = run(capsys, "plan", "-C", str(root))
    assert r.code == 2 and "PRIVATE" not in r.out + r.err, r
    assert "links outside the repository" in r.err and "matrix data '../home/.ssh/id_rsa.yaml' is outside" in r.err, r


def test_remove_recorded_deletes_only_the_file_imgbuild_wrote(tmp_path: Path) -> None:
    import hashlib

    from imgbuild.store.outputs import remove_recorded

    root = tmp_path / "p"
    out = root / "out"
    (out / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "thesis.docx").write_bytes(b"years of work")
    (out / "escape").symlink_to(outside, target_is_directory=True)
    (out / "link.png").symlink_to(outside / "thesis.docx")
    (out / "sub" / "a.png").write_bytes(b"written by imgbuild")
    (out / "b.png").write_bytes(b"edited by hand")
    h = {name: hashlib.sha256(data).hexdigest() for name, data in
         (("a", b"written by imgbuild"), ("b", b"written by imgbuild"), ("thesis", b"years of work"))}
    assert remove_recorded(root, out, "sub/a.png", h["a"]) == "removed"
    assert not (out / "sub" / "a.png").exists()
    assert remove_recorded(root, out, "sub/a.png", h["a"]) == "missing"
    assert remove_recorded(root, out, "b.png", h["b"]) == "edited" and (out / "b.png").exists()
    for rel in ("escape/thesis.docx", "link.png", "../outside/thesis.docx", "/etc/passwd",
                "sub/../../x", "a\0b", ""):
        assert remove_recorded(root, out, rel, h["thesis"]) == "refused", rel
    assert remove_recorded(root, root, "out/b.png", h["b"]) == "refused"  # output_dir = the root
    assert (outside / "thesis.docx").read_bytes() == b"years of work"


# --- 11. NUL bytes and control characters in names and outputs are located errors -----------

@pytest.mark.parametrize("field, value", [("name", "a\u0000b"), ("output", "a\u0000b.png"),
                                          ("name", "two\nlines"), ("output", "x\u001b[2J.png")])
def test_control_characters_in_names_and_outputs_are_refused_by_validate(
        field: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = {"name": "apple", "prompt": "A red apple", field: value}
    (tmp_path / "imgbuild.yaml").write_text(json.dumps({"version": 1, "images": [spec]}))
    r = run(capsys, "validate", "-C", str(tmp_path))
    assert r.code == 2 and "must not contain control characters" in r.err, r
    assert "imgbuild.yaml:1:" in r.err, r


# --- 8. the plan cache is keyed on what was read, through links --------------------------------

def test_repointing_a_symlinked_template_or_data_file_is_noticed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "p"
    (root / "templates").mkdir(parents=True)
    (root / "data").mkdir()
    for variant, style, colours in (("v1", "oil painting", "[red]"), ("v2", "watercolour", "[blue]")):
        (root / "templates" / f"style-{variant}.j2").write_text(style)
        (root / "data" / f"colours-{variant}.yaml").write_text(colours)
    (root / "templates" / "style.j2").symlink_to("style-v1.j2")
    (root / "data" / "colours.yaml").symlink_to("colours-v1.yaml")
    (root / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: 'apple-{{ c }}'\n    matrix: {c: data/colours.yaml}\n"
        "    prompt: 'A {{ c }} apple, {% include \"style.j2\" %}'\n")
    monkeypatch.chdir(root)
    assert run(capsys, "build").code == 0
    assert "nothing to do" in run(capsys, "build").out  # the plan cache is warm
    (root / "templates" / "style.j2").unlink()
    (root / "templates" / "style.j2").symlink_to("style-v2.j2")
    r = run(capsys, "check", "--allow-drafts")
    assert r.code == 1 and "apple-red.png" in r.out, r
    r = run(capsys, "build", "--json")
    assert r.json["built"] == 1 and "watercolour" in lock(root)["apple-red.png"]["request"]["prompt"], r
    (root / "data" / "colours.yaml").unlink()
    (root / "data" / "colours.yaml").symlink_to("colours-v2.yaml")
    r = run(capsys, "build", "--json")
    assert r.code == 0 and r.json["built"] == 1 and list(lock(root)) == ["apple-blue.png"], r


# --- 11. damaged local state: a message, or a silent rebuild of what is disposable ------------

@pytest.mark.parametrize("name, content", [
    ("plan-cache.json", "[]"), ("plan-cache.json", '"text"'), ("plan-cache.json", {"inputs": []}),
    ("plan-cache.json", {"settings": []}), ("stat-cache.json", "[1, 2]"),
    ("stat-cache.json", {"entries": []}),
])
def test_valid_json_of_the_wrong_shape_in_the_disposable_caches_is_ignored(
        name: str, content: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    assert run(capsys, "build", "-C", str(root)).code == 0
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0  # both caches written
    path = root / ".imgbuild" / name
    if isinstance(content, dict):  # the real document, one field of the wrong shape
        content = json.dumps({**json.loads(path.read_text()), **content})
    path.write_text(content)
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0
    assert "nothing to do" in run(capsys, "build", "-C", str(root)).out


def test_stat_cache_entries_of_the_wrong_shape_are_rehashed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    assert run(capsys, "build", "-C", str(root)).code == 0
    path = root / ".imgbuild" / "stat-cache.json"
    doc = json.loads(path.read_text())
    for key in doc["entries"]:
        doc["entries"][key] = 7
    path.write_text(json.dumps(doc))
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0


def test_a_committed_plan_cache_cannot_smuggle_in_an_output_dir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path / "p")
    monkeypatch.chdir(root)
    assert run(capsys, "build").code == 0
    path = root / ".imgbuild" / "plan-cache.json"
    doc = json.loads(path.read_text())
    doc["settings"]["output_dir"] = "."  # forged, with every input digest still matching
    path.write_text(json.dumps(doc))
    r = run(capsys, "check", "--allow-drafts")
    assert r.code == 0, r  # the forged plan was ignored: the specs were loaded again
    assert json.loads(path.read_text())["settings"]["output_dir"] == "out"


# --- 10. the task journal is validated, never trusted into wrong pixels ----------------------

ASYNC = ("version: 1\noutput_dir: out\n{timeouts}limits: {{wan2.6-t2i: {{rps: 1000, concurrency: 64}}}}\n"
         "defaults: {{model: wan2.6-t2i, size: '1280*1280'}}\nimages:\n"
         "  - name: apple\n    prompt: A red apple\n  - name: pear\n    prompt: A green pear\n")


def accepted(emu: Emulator) -> int:
    """Submissions the service accepted (each one paid); a 429 answered is not one."""
    return sum(1 for p in posts(emu) if p.get("status") == 200)


def _journaled_tasks(root: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    """Submit both targets' tasks and stop waiting for them (held unfinished by the emulator):
    the journal keeps them, as after a killed build. Returns {target name: entry file}."""
    emu.configure(task_duration=3600)
    root.mkdir(parents=True, exist_ok=True)
    (root / "imgbuild.yaml").write_text(ASYNC.format(timeouts="timeouts: {poll: 0.2}\n"))
    r = run(capsys, "build", "-C", str(root), "-k", "-j", "2", "--provider", "dashscope")
    assert r.code == 1 and "WaitTaskTimeout" in r.out + r.err and accepted(emu) == 2, r
    (root / "imgbuild.yaml").write_text(ASYNC.format(timeouts=""))
    emu.configure(task_duration=0.05)
    from imgbuild.providers.dashscope.hosts import identity_for
    from imgbuild.providers.dashscope.journal import Journal

    journal = Journal(root / ".imgbuild" / "journal")
    files = {name: journal._path(key_of(root, name, identity_for(emu.base_url)))
             for name in ("apple", "pear")}
    assert all(p.is_file() for p in files.values()), files
    return files


def _pixels(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def test_swapped_journal_entries_never_give_a_target_another_prompts_pixels(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "p"
    files = _journaled_tasks(root, emu, capsys)
    apple, pear = files["apple"].read_bytes(), files["pear"].read_bytes()
    files["apple"].write_bytes(pear)
    files["pear"].write_bytes(apple)
    r = run(capsys, "build", "-C", str(root), "--provider", "dashscope")
    assert r.code == 0 and "belongs to another request" in r.err, r
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "fresh-cache"))
    reference = tmp_path / "reference"  # the same specs generated from scratch
    reference.mkdir()
    (reference / "imgbuild.yaml").write_text(ASYNC.format(timeouts=""))
    assert run(capsys, "build", "-C", str(reference), "--provider", "dashscope").code == 0
    for name in ("apple", "pear"):
        assert _pixels(root / "out" / f"{name}.png") == _pixels(reference / "out" / f"{name}.png"), name


@pytest.mark.parametrize("damage, resumed", [
    ({"submitted_at": "yesterday"}, True),  # was exit 3 on every rerun
    ({"submitted_at": 4e9}, True),  # in the future: was resubmitted (paid again)
    ({"submitted_at": float("nan")}, True),
    ({"task_id": {"id": "x"}}, False),  # was a target failing forever
    ({"task_id": "../../etc"}, False),
    ({"model": None}, False),
])
def test_damaged_journal_entries_degrade_to_a_warning(
        damage: dict[str, Any], resumed: bool, tmp_path: Path, emu: Emulator,
        capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "p"
    files = _journaled_tasks(root, emu, capsys)
    entry = json.loads(files["apple"].read_text())
    files["apple"].write_text(json.dumps({**entry, **damage}))
    r = run(capsys, "build", "-C", str(root), "--provider", "dashscope")
    assert r.code == 0 and "journal entry" in r.err, r
    assert accepted(emu) == (2 if resumed else 3), r  # resumed: nothing submitted (paid) twice
    assert sorted(lock(root)) == ["apple.png", "pear.png"]
    assert not list((root / ".imgbuild" / "journal").glob("*.json"))


def test_a_journal_that_is_a_file_is_refused_before_anything_is_paid(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "imgbuild.yaml").write_text(ASYNC.format(timeouts=""))
    (root / ".imgbuild").mkdir()
    (root / ".imgbuild" / "journal").write_text("not a folder")
    r = run(capsys, "build", "-C", str(root), "--provider", "dashscope")
    assert r.code == 1 and "journal is a file, not a folder" in r.err and "nothing was submitted" in r.err, r
    assert posts(emu) == []


# --- 11. exit 3 where a message belongs ------------------------------------------------------

@pytest.mark.parametrize("entry, why", [
    ("[1, 2]", "is not a mapping"),
    ('{"sha256": "00"}', "has no 'key'"),
    ('{"key": 5, "sha256": "00"}', "'key' has the wrong type"),
    ('{"key": "k", "sha256": "00", "draft": "no"}', "'draft' has the wrong type"),
    ('{"key": "k", "sha256": "00", "seed": true}', "'seed' has the wrong type"),  # a bool is no int
    ('{"key": "k", "sha256": "00", "request": ["model"]}', "'request' has the wrong type"),
    # a pull fetches cas/sha256/<original> from the remote: a name that is not a digest is refused
    ('{"key": "k", "sha256": "00", "original": "../../ac/v1/k.json"}', "'original' is not a sha256 hex digest"),
    ('{"key": "k", "sha256": "00", "original": 7}', "'original' has the wrong type"),
])
def test_a_damaged_lock_entry_is_a_message(entry: str, why: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    (root / "imgbuild.lock").write_text(f'{{"version": 1, "outputs": {{"apple.png": {entry}}}}}')
    for verb in ("check", "plan", "build", "clean"):
        r = run(capsys, verb, "-C", str(root))
        assert r.code == 1 and "the lockfile is damaged" in r.err and why in r.err, (verb, r)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty-tables"])
def test_a_damaged_cache_database_is_a_message(damage: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    assert run(capsys, "build", "-C", str(root)).code == 0
    db = Path(os.environ["IMGBUILD_CACHE_DIR"]) / "cache.db"
    if damage == "truncated":
        db.write_bytes(db.read_bytes()[:1000])
    elif damage == "garbage":
        db.write_bytes(b"this is not a database, just bytes" * 100)
    else:
        with sqlite3.connect(db) as con:
            con.execute("DROP TABLE Cache")
        con.close()
    (root / "out" / "apple.png").unlink()  # so the build needs the cache
    for args in (("build",), ("plan",), ("cache", "info"), ("cache", "verify"), ("cache", "prune")):
        r = run(capsys, *args, "-C", str(root))
        assert r.code in (0, 1), (args, r)
        assert r.code == 0 or "cannot use the image cache" in r.err, (args, r)


@pytest.mark.parametrize("value", [b"[1, 2]", b"not json", b'{"images": "abc"}', b'{"images": ["../x"]}'])
def test_a_cache_record_that_is_not_a_record_is_a_miss(value: bytes, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import diskcache

    root = project(tmp_path / "p")
    key = key_of(root)
    with diskcache.Cache(os.environ["IMGBUILD_CACHE_DIR"]) as stock:
        stock.set(f"gen:{key}", value)
    r = run(capsys, "build", "-C", str(root), "--json")
    assert r.code == 0 and r.json["built"] == 1, r
    r = run(capsys, "cache", "verify", "-C", str(root))
    assert r.code == 0, r  # the build replaced the bad record


def test_a_cache_dir_that_is_a_file_is_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path / "p")
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(blocker))
    for args in (("build",), ("plan",), ("cache", "info")):
        r = run(capsys, *args, "-C", str(root))
        assert r.code == 1 and "is a file, not a folder" in r.err, (args, r)
    assert not (root / "out").exists()


def test_a_state_dir_that_is_a_file_or_a_lock_that_is_a_folder_is_a_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    (root / ".imgbuild").write_text("oops")
    r = run(capsys, "build", "-C", str(root))
    assert r.code == 1 and ".imgbuild is a file, not a folder" in r.err, r
    assert run(capsys, "check", "-C", str(root)).code == 1  # only reads: stale, not a crash
    (root / ".imgbuild").unlink()
    (root / ".imgbuild" / "build.lock").mkdir(parents=True)
    r = run(capsys, "build", "-C", str(root))
    assert r.code == 1 and "build.lock is a folder, not a file" in r.err, r


def _permissions_enforced() -> bool:
    """False for root with CAP_DAC_OVERRIDE (and where chmod means nothing)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            open(os.path.join(folder, "probe"), "w").close()
        except OSError:
            return True
        finally:
            os.chmod(folder, 0o755)
    return False


needs_permissions = pytest.mark.skipif(not _permissions_enforced(), reason="file permissions are not enforced")


@needs_permissions
def test_a_no_op_build_succeeds_in_a_read_only_checkout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fresh in (False, True):
        root = project(tmp_path / f"p{fresh}")
        assert run(capsys, "build", "-C", str(root)).code == 0
        if fresh:  # a fresh clone: no .imgbuild/ at all
            import shutil

            shutil.rmtree(root / ".imgbuild")
        _read_only(root)
        try:
            r = run(capsys, "build", "-C", str(root))
            assert r.code == 0 and "nothing to do" in r.out, r
            assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0
        finally:
            _read_only(root, undo=True)


@needs_permissions
def test_a_read_only_cache_is_a_message_before_anything_is_paid(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    assert run(capsys, "build", "-C", str(root)).code == 0
    (root / "out" / "apple.png").unlink()
    cache_dir = Path(os.environ["IMGBUILD_CACHE_DIR"])
    _read_only(cache_dir)
    try:
        r = run(capsys, "build", "-C", str(root))
        assert r.code == 1 and "cannot use the image cache" in r.err and "read-only" in r.err, r
    finally:
        _read_only(cache_dir, undo=True)


def _read_only(root: Path, *, undo: bool = False) -> None:
    for folder, dirs, files in os.walk(root):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644 if undo else 0o444)
        os.chmod(folder, 0o755 if undo else 0o555)


def test_an_api_key_with_a_trailing_carriage_return_works_and_is_never_echoed(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path / "p")
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY + "\r\n")
    r = run(capsys, "build", "-C", str(root), "--provider", "dashscope", "-vv")
    assert r.code == 0, r
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY[:6] + "\r" + KEY[6:])
    r = run(capsys, "build", "-C", str(root), "--provider", "dashscope", "--force")
    assert r.code == 2 and "contains a space or control character" in r.err, r
    assert KEY[6:] not in r.out + r.err and KEY[:10] not in r.out + r.err


def test_crash_log_goes_to_the_projects_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import imgbuild.verbs.build_run

    root = project(tmp_path / "p")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    def bug(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(imgbuild.verbs.build_run, "make_plan", bug)
    r = run(capsys, "plan", "-C", str(root))
    assert r.code == 3 and "crash.log" in r.err, r
    assert "RuntimeError: a bug" in (root / ".imgbuild" / "crash.log").read_text()
    assert not (elsewhere / ".imgbuild").exists()


# --- 12. Jinja amplification is refused before anything is allocated ------------------------

BIG = "{% set big = 'y' * 99999 %}{% set many = ['y' * 99999] * 99999 %}"
AMPLIFIERS = {
    "join": "{{ ('x'|list * 99999)|join('b' * 99999) }}",
    "replace": "{{ ('a' * 99999)|replace('a', 'b' * 99999) }}",
    "indent": "{{ 'x'|indent(9999999) }}",
    "indent-text": "{{ ('a\\n' * 49999)|indent('x' * 99999) }}",
    "center": "{{ 'x'|center(9999999) }}",
    "format": "{{ ('%(a)s' * 20000)|format(a=big) }}",
    "wordwrap": "{{ ('a ' * 49999)|wordwrap(1, wrapstring='x' * 99999) }}",
    "lipsum": "{{ lipsum(9999999) }}",
    "multiply": "{{ ('x' * 99999) * 99999 }}",
    "tilde": "{{ many ~ many }}",
    "print-a-list": "{{ many }}",
    "str.format": "{{ ('{0}' * 30000).format(big) }}",
    "percent": "{{ ('%(a)s' * 20000) % {'a': big} }}",
    "str.join": "{{ ('b' * 99999).join('x' * 99999) }}",
    "ljust": "{{ 'x'.ljust(9999999) }}",
    "expandtabs": "{{ ('\\t' * 99999).expandtabs(9999999) }}",
    "string": "{{ many|string }}",
    "tojson": "{{ ['x']|tojson(indent=9999999) }}",
    "sum": "{{ ([many] * 99999)|sum(start=[]) }}",
    "set-block": "{% set t %}{% for i in range(999999) %}{{ big }}{% endfor %}{% endset %}{{ t|length }}",
    "nested-loops": "{% for a in many %}{% for b in many %}{% endfor %}{% endfor %}",
    "extend": "{% set l = ['x'] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}",
    "batch": "{{ ['x']|batch(9999999, 'y')|list }}",
}

SANDBOXED_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))
from imgbuild.cli import main
sys.exit(main(["validate", "-C", {root!r}]))
"""


@pytest.mark.parametrize("template", list(AMPLIFIERS.values()), ids=list(AMPLIFIERS))
def test_jinja_amplifiers_are_refused_before_they_allocate(template: str, tmp_path: Path) -> None:
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: a\n    prompt: " + json.dumps(BIG + template) + "\n")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SANDBOXED_CHILD.format(root=str(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 2, proc
    assert "imgbuild.yaml:4:13: images[a].prompt: template refused by the sandbox" in proc.stderr, proc.stderr
    assert "MemoryError" not in proc.stderr and took < 30, (took, proc.stderr)


def test_ordinary_uses_of_the_guarded_filters_still_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = ("{{ ['a', 'b']|join(', ') }}; {{ 'a b'|replace(' ', '-') }}; {{ 'x\\ny'|indent(2) }}; "
              "{{ 'mid'|center(7) }}; {{ '%s=%d'|format('n', 3) }}; {{ 'a b c'|wordwrap(3) }}; "
              "{{ lipsum(1, html=False, min=3, max=4)|wordcount > 2 }}; {{ 'ab' * 2 }}; {{ 1 ~ 'x' }}; "
              "{{ [1, 2] }}; {{ '{:>4}|{:,}'.format(7, 2500000) }}; {{ '%05.1f' % 3.14159 }}; "
              "{{ '-'.join(['a', 'b']) }}; {{ 'x'.ljust(3) }}|; {{ {'k': 1}|tojson }}; "
              "{{ [[1], [2]]|sum(start=[]) }}; {% set t %}{% for i in range(3) %}{{ i }}{% endfor %}{% endset %}{{ t }}; "
              "{{ ['a', 'b']|map('upper')|join }}; {{ [1, 2, 3]|batch(2)|list|length }}")
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: a\n    prompt: " + json.dumps(prompt) + "\n")
    assert run(capsys, "build", "-C", str(tmp_path)).code == 0
    rendered = json.loads((tmp_path / "imgbuild.lock").read_text())["outputs"]["a.png"]["request"]["prompt"]
    assert rendered == ("a, b; a-b; x\n  y;   mid  ; n=3; a b\nc; True; abab; 1x; [1, 2]; "
                        "   7|2,500,000; 003.1; a-b; x  |; {\"k\": 1}; [1, 2]; 012; AB; 2")


# --- 13. a matrix's product is capped before it is expanded ---------------------------------

def test_a_matrix_over_the_limit_is_refused_with_its_count_before_expanding(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hundred = json.dumps(list(range(100)))
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: 'x{{ a }}-{{ b }}-{{ c }}-{{ d }}-{{ e }}'\n    prompt: p\n"
        f"    matrix: {{a: {hundred}, b: {hundred}, c: {hundred}, d: {hundred}, e: {hundred}}}\n")
    started = time.process_time()
    r = run(capsys, "validate", "-C", str(tmp_path))
    assert time.process_time() - started < 5, "expanded before refusing"
    assert r.code == 2, r
    assert ("imgbuild.yaml:5:13: images[x{{ a }}-{{ b }}-{{ c }}-{{ d }}-{{ e }}].matrix: the matrix "
            "makes 10,000,000,000 targets (100 a × 100 b × 100 c × 100 d × 100 e), more than "
            "max_targets_per_spec (100,000)") in r.err, r


def test_the_matrix_limit_is_set_in_the_project_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for limit, code in ((5, 2), (6, 0)):
        (tmp_path / "imgbuild.yaml").write_text(
            f"version: 1\nmax_targets_per_spec: {limit}\nimages:\n  - name: 'x{{{{ a }}}}{{{{ b }}}}'\n"
            "    prompt: p\n    matrix: {a: [1, 2, 3], b: [1, 2]}\n")
        r = run(capsys, "validate", "-C", str(tmp_path), "--json")
        assert r.code == code and (code == 2 or r.json["targets"] == 6), r
        assert code == 0 or "the matrix makes 6 targets (3 a × 2 b), more than max_targets_per_spec (5)" in r.err


@pytest.mark.skipif(not os.environ.get("IMGBUILD_SLOW_TESTS"), reason="slow: set IMGBUILD_SLOW_TESTS=1")
def test_a_hundred_thousand_targets_validate_within_five_seconds(tmp_path: Path) -> None:
    """CPU time of a child process, so a busy machine slows the clock, not the verdict."""
    (tmp_path / "data.json").write_text(json.dumps([{"sku": f"s{i:04d}", "title": f"Product {i}"}
                                                    for i in range(1000)]))
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nvars: {brand: Acme}\nimages:\n  - name: 'card-{{ color }}-{{ product.sku }}'\n"
        f"    matrix: {{color: {json.dumps([f'c{i}' for i in range(100)])}, product: data.json}}\n"
        "    prompt: 'A {{ color }} card for {{ product.title }} by {{ brand }}'\n")
    child = ("import resource, sys; from imgbuild.cli import main; code = main(['validate', '-C', %r]); "
             "u = resource.getrusage(resource.RUSAGE_SELF); print(u.ru_utime + u.ru_stime); sys.exit(code)"
             % str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "100000 target(s): valid" in proc.stdout, proc
    cpu = float(proc.stdout.strip().splitlines()[-1])
    assert cpu <= 5.0, f"validate of 100,000 targets took {cpu:.1f} s of CPU"


# --- a project file cannot send the API key to a host of its choosing --------------------------

@pytest.mark.parametrize("setting", ["base_url: https://collector.example/api/v1",
                                     "workspace: 'x@collector.example/#'"])
def test_a_project_file_cannot_send_the_api_key_elsewhere(
        setting: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    root = project(tmp_path / "p", setting + "\n")
    for verb in ("plan", "build"):
        r = run(capsys, verb, "-C", str(root))
        assert r.code == 2 and "'collector.example'" in r.err and "nothing was sent" in r.err, r
        assert KEY not in r.out + r.err


def test_a_committed_lock_or_written_record_cannot_make_clean_delete_project_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The lock is committed and .imgbuild/ can be: neither may name files imgbuild never wrote."""
    import hashlib

    root = project(tmp_path / "p")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n\trepositoryformatversion = 0\n")
    (root / "README.md").write_text("# a project\n")
    (root / "out").mkdir()
    (root / "out" / "notes.txt").write_text("mine\n")
    digest = {p: hashlib.sha256((root / p).read_bytes()).hexdigest()
              for p in ("imgbuild.yaml", "README.md", ".git/config", "out/notes.txt")}
    (root / "imgbuild.lock").write_text(json.dumps({"version": 1, "output_dir": ".", "outputs": {
        "imgbuild.yaml": {"key": "k", "sha256": digest["imgbuild.yaml"]},
        "README.md": {"key": "k", "sha256": digest["README.md"]}}}))
    (root / ".imgbuild").mkdir()
    (root / ".imgbuild" / "written.json").write_text(json.dumps({"format": 1, "files": {
        "README.md": digest["README.md"], ".git/config": digest[".git/config"],
        "out/../README.md": digest["README.md"]}}))
    r = run(capsys, "clean", "-C", str(root), "--yes")
    assert r.code == 0, r
    assert all((root / p).read_bytes() for p in digest), r
    assert "deleted 0 files" in r.out and "deleted: " not in r.out, r  # the bogus entries only leave the lock


def test_an_output_committed_as_a_link_to_dev_zero_or_as_a_fifo_never_hangs_check(tmp_path: Path) -> None:
    """Hashing reads regular files only: an output that is a link to an endless device or a
    FIFO is not the image the lock names (stale), whether a fresh clone's child process hashes
    the outputs (70 of them: enough for it) or the stat cache's own pass does."""
    root = tmp_path / "p"
    root.mkdir()
    (root / "imgbuild.yaml").write_text("version: 1\noutput_dir: out\nimages:\n  - name: 'i{{ n }}'\n"
                                        "    prompt: Image {{ n }}\n    matrix: {n: [%s]}\n"
                                        % ", ".join(str(n) for n in range(70)), encoding="utf-8")
    env = subprocess_env(IMGBUILD_CACHE_DIR=str(tmp_path / "cache"))
    imgbuild = [sys.executable, "-m", "imgbuild"]
    assert subprocess.run([*imgbuild, "build", "-q"], cwd=root, env=env, timeout=300).returncode == 0
    (root / "out" / "i3.png").unlink()
    (root / "out" / "i3.png").symlink_to("/dev/zero")
    (root / "out" / "i7.png").unlink()
    os.mkfifo(root / "out" / "i7.png")
    for fresh in (True, False):
        if fresh:
            subprocess.run(["rm", "-rf", str(root / ".imgbuild")], check=True)
        done = subprocess.run([*imgbuild, "check", "--allow-drafts"], cwd=root, env=env, timeout=120,
                              capture_output=True, text=True)
        assert done.returncode == 1, done
        stale = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("missing")}
        assert stale == {"i3.png", "i7.png"}, done.stdout
