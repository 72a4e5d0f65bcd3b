"""Issue 11: `check` never passes what isn't final, and every build converges. One test per
defect found, each failing before its fix."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import KEY
from helpers import Result, run

from imgbuild.emulator import Emulator, EmulatorConfig

SPEC = """version: 1
images:
  - name: a
    model: wan2.2-t2i-flash
    size: "512*512"
    prompt: A red bike on a hill.
"""


def project(root: Path, text: str = SPEC) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "imgbuild.yaml").write_text(text, encoding="utf-8")
    return root


def lock(root: Path) -> dict[str, dict]:
    return json.loads((root / "imgbuild.lock").read_text("utf-8"))["outputs"]


def build(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> Result:
    r = run(capsys, "build", "-C", str(root), *args)
    assert r.code == 0, r
    return r


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    # unlimited: convergence is the test, not the documented rate limits
    with Emulator(EmulatorConfig(task_duration=0.01, documented_rate_limits=False), api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        yield server


# --- item 1: a draft restored from the cache stays a draft ------------------------------------

def test_a_draft_restored_from_the_shared_cache_is_still_a_draft(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = project(tmp_path / "one"), project(tmp_path / "two")
    build(capsys, first, "--provider", "placeholder")
    r = build(capsys, second, "--provider", "placeholder", "--json")
    assert '"restored"' in r.out, r  # the same request: the shared cache answers
    assert lock(second)["a.png"]["draft"] is True
    assert run(capsys, "check", "-C", str(second)).code == 1
    assert run(capsys, "check", "-C", str(second), "--allow-drafts").code == 0
    (second / "imgbuild.lock").unlink()
    build(capsys, second, "--provider", "placeholder")
    assert lock(second)["a.png"]["draft"] is True
    assert run(capsys, "check", "-C", str(second)).code == 1


# --- item 2: an emulator's (or proxy's) images are not final ----------------------------------

def test_emulator_images_are_drafts_until_the_production_service_replaces_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], emu: Emulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path / "p")
    build(capsys, root, "--provider", "dashscope")
    entry = lock(root)["a.png"]
    assert entry["provider"] == "dashscope@127.0.0.1" and entry["draft"] is True
    r = run(capsys, "check", "-C", str(root))
    assert r.code == 1 and "dashscope@127.0.0.1" in r.out + r.err, r
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0
    # a second emulator build has nothing to do: it does not replace its own images
    again = build(capsys, root, "--provider", "dashscope", "--json").json
    assert again["up_to_date"] == 1 and again["provider_calls"] == 0, again
    # with the production host (no base URL), plan, twice (the second from the plan/stat
    # caches), sees the one image to generate; nothing is sent
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL")
    for _ in range(2):
        r = run(capsys, "plan", "-C", str(root), "--provider", "dashscope", "--json")
        assert r.code == 0, r
        assert r.json["provider"] == "dashscope" and r.json["images_to_generate"] == 1, r
    assert emu.billed == 1  # plan sent nothing


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under the project, `.imgbuild/` included: bytes, mtime and inode (an atomic
    replace changes the inode even within one tick of the file-time clock)."""
    found = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            st = path.stat()
            found[str(path.relative_to(root))] = (path.read_bytes(), st.st_mtime_ns, st.st_ino)
    return found


def age(root: Path, *, keep: str = "generated") -> None:
    """Give every file but the outputs (whose mtimes the stat cache records) an mtime in the
    past, so that any write, even in the same clock tick, shows as a changed mtime."""
    for path in root.rglob("*"):
        if path.is_file() and keep not in path.relative_to(root).parts:
            os.utime(path, ns=(10**18, 10**18))


MANIFEST_SPEC = SPEC + "    alt: a red bike\nmanifest: manifest.json\n"


# --- item 4: a no-op build changes no file ---------------------------------------------------

def test_a_no_op_build_changes_no_file_not_even_its_mtime(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p", MANIFEST_SPEC)
    build(capsys, root, "--provider", "placeholder")
    build(capsys, root, "--provider", "placeholder")  # settles the plan and stat caches
    assert (root / ".imgbuild" / "build.lock").is_file()
    age(root)
    before = snapshot(root)
    build(capsys, root, "--provider", "placeholder")
    assert snapshot(root) == before


# --- item 5: build repairs whatever check reports ---------------------------------------------

def test_build_repairs_a_stale_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p", MANIFEST_SPEC)
    build(capsys, root, "--provider", "placeholder")
    manifest = root / "generated" / "manifest.json"
    good = manifest.read_bytes()
    manifest.write_text("{}\n")
    r = run(capsys, "check", "-C", str(root), "--allow-drafts")
    assert r.code == 1 and "manifest" in r.out + r.err, r
    build(capsys, root, "--provider", "placeholder")
    assert manifest.read_bytes() == good
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0


def test_a_target_renamed_with_a_fixed_seed_converges(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p", MANIFEST_SPEC.replace("    alt:", "    seed: 7\n    alt:"))
    build(capsys, root, "--provider", "placeholder")
    (root / "imgbuild.yaml").write_text(
        (root / "imgbuild.yaml").read_text().replace("name: a", "name: b"))
    build(capsys, root, "--provider", "placeholder")
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0
    assert sorted(lock(root)) == ["b.png"]


# --- item 9: check names the remedy that works ------------------------------------------------

def test_check_on_drafts_names_a_key_or_allow_drafts_not_build(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    build(capsys, root, "--provider", "placeholder")
    r = run(capsys, "check", "-C", str(root))
    summary = (r.out + r.err).strip().splitlines()[-1]
    assert r.code == 1 and "need `imgbuild build`" not in summary, r
    assert "DASHSCOPE_API_KEY" in summary and "--allow-drafts" in summary, r
    (root / "generated" / "a.png").unlink()  # now a build does help, and says so
    summary = (lambda x: (x.out + x.err).strip().splitlines()[-1])(run(capsys, "check", "-C", str(root)))
    assert "1 of 1 files need `imgbuild build`" in summary, summary


# --- item 3: clean knows every file imgbuild wrote --------------------------------------------

def test_clean_removes_the_old_output_dir_tree_but_never_a_file_it_did_not_write(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p", SPEC.replace("version: 1\n", "version: 1\noutput_dir: old/img\n")
                   + "  - name: b\n    model: wan2.2-t2i-flash\n    size: \"512*512\"\n    prompt: B.\n")
    build(capsys, root, "--provider", "placeholder")
    (root / "old" / "img" / "notes.txt").write_text("mine")  # a person's file
    (root / "imgbuild.yaml").write_text((root / "imgbuild.yaml").read_text().replace("old/img", "new"))
    build(capsys, root, "--provider", "placeholder")
    (root / "old" / "img" / "b.png").write_bytes(b"edited by hand")  # no longer imgbuild's bytes
    r = run(capsys, "clean", "-C", str(root), "--json")
    assert r.code == 0 and r.json["files"] == ["old/img/a.png"], r
    assert "1 file and 0 lock entries" in run(capsys, "clean", "-C", str(root)).out
    run(capsys, "clean", "-C", str(root), "--yes")
    assert sorted(p.name for p in (root / "old" / "img").iterdir()) == ["b.png", "notes.txt"]
    (root / "old" / "img" / "notes.txt").unlink()
    (root / "old" / "img" / "b.png").unlink()
    assert run(capsys, "clean", "-C", str(root), "--json").json["files"] == []
    assert (root / "new" / "a.png").is_file() and run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0


def test_clean_removes_a_renamed_targets_file_and_the_folders_it_emptied(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p", SPEC + "    output: deep/er/a.png\n")
    build(capsys, root, "--provider", "placeholder")
    (root / "imgbuild.yaml").write_text((root / "imgbuild.yaml").read_text().replace("deep/er/a.png", "a.png"))
    build(capsys, root, "--provider", "placeholder")  # prunes the lock entry of deep/er/a.png
    r = run(capsys, "clean", "-C", str(root), "--yes", "--json")
    assert r.json["files"] == ["generated/deep/er/a.png"], r
    assert not (root / "generated" / "deep").exists() and (root / "generated" / "a.png").is_file()


# --- friction: html --base-url without a trailing slash ---------------------------------------

@pytest.mark.parametrize("base", ["/img", "/img/", "https://cdn.example/img"])
def test_html_base_url_is_joined_with_one_slash(base: str) -> None:
    from imgbuild.store.manifest import picture

    image = {"alt": "x", "original": {"path": "products/a.png", "width": 8, "height": 8,
                                      "format": "png"}, "variants": []}
    markup = picture(image, base_url=base)
    assert f'{base.rstrip("/")}/products/a.png' in markup and "imgproducts" not in markup, markup


# --- friction: an unquoted ratio --------------------------------------------------------------

def test_an_unquoted_ratio_gets_a_quote_it_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p", "version: 1\nimages:\n  - name: a\n    prompt: p\n    size: 16:9\n")
    r = run(capsys, "validate", "-C", str(root))
    assert r.code == 2 and 'quote it: size: "16:9"' in r.err and "imgbuild.yaml:5:" in r.err, r


# --- friction: plan sends nothing, so it needs no key -----------------------------------------

def test_plan_with_the_dashscope_provider_needs_no_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    root = project(tmp_path / "p")
    r = run(capsys, "plan", "-C", str(root), "--provider", "dashscope", "--json")
    assert r.code == 0 and r.json["images_to_generate"] == 1 and r.json["provider"] == "dashscope", r
    assert run(capsys, "build", "-C", str(root), "--provider", "dashscope").code == 2  # build still does
