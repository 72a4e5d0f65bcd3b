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
    with Emulator(EmulatorConfig(task_duration=0.01), api_key=KEY) as server:
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
