"""Candidates on a target that reads images (issues 16 and 19), over the emulator: an edit with
`candidates: 3` and `inputs: [base]` bills three images, sends each the base's original, writes
no output until a pick is accepted; a second edit that reads it waits for the pick (pending, with
the reason, never built from candidate 1), is built from the accepted bytes, and a rebuild then
makes no call."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import KEY
from helpers import Result, run

from imgbuild.emulator import Emulator, EmulatorConfig
from imgbuild.store.originals import Cache

PROJECT = """\
version: 1
output_dir: out
defaults: {{size: "512*512"}}
limits:  # the documented 2 images/min of qwen-image-2.0 would make this test wait a minute
  qwen-image-2.0: {{rps: 20, concurrency: 4}}
  qwen-image-edit-plus: {{rps: 20, concurrency: 4}}
images:
  - name: base
    model: qwen-image-2.0
    prompt: A round red logo on cream
  - name: poster
    model: qwen-image-edit-plus
    prompt: {prompt}
    inputs: [base]
    candidates: 3
  - name: winter
    model: qwen-image-edit-plus
    prompt: The same poster in winter
    inputs: [poster]
  - name: other
    model: qwen-image-2.0
    prompt: An unrelated grey wall
"""


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(task_duration=0.05, documented_rate_limits=False), api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        monkeypatch.delenv("CI", raising=False)
        yield server


def write(root: Path, prompt: str = "A concert poster built around this logo") -> Path:
    (root / "imgbuild.yaml").write_text(PROJECT.format(prompt=prompt), encoding="utf-8")
    return root


def cli(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> Result:
    return run(capsys, args[0], "-C", str(root), *args[1:])


def build(capsys: pytest.CaptureFixture[str], root: Path) -> Result:
    return cli(capsys, root, "build", "--provider", "dashscope", "--json")


def lock(root: Path) -> dict:
    return json.loads((root / "imgbuild.lock").read_text("utf-8"))


def original(key: str) -> bytes:
    with Cache(Path(os.environ["IMGBUILD_CACHE_DIR"])) as cache:
        found = cache.get(key)
    assert found is not None
    return found[0][0]


def edits(emu: Emulator) -> list[dict]:
    return [s for s in emu.stats()["submissions"] if s["model"] == "qwen-image-edit-plus"]


def rows(r: Result) -> dict[str, dict]:
    return {t["name"]: t for t in r.json["targets"]}


def test_candidates_of_an_edit_and_a_dependant_that_waits_for_the_pick(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = write(tmp_path)
    r = build(capsys, root)
    assert r.code == 0, r
    # base + other + 3 candidates of the edit; the dependant was not sent
    assert emu.billed == 5 and r.json["images_bought"] == 5
    assert len(edits(emu)) == 3
    base = lock(root)["outputs"]["base.png"]
    assert {e["image_sha256"][0] for e in edits(emu)} == {hashlib.sha256(original(base["key"])).hexdigest()}
    assert not (root / "out" / "poster.png").exists() and not (root / "out" / "winter.png").exists()
    status = rows(r)
    assert status["poster"]["status"] == "pending"
    assert status["winter"]["status"] == "pending"
    assert "input poster is waiting for a pick" in status["winter"]["reason"]
    assert "imgbuild accept poster --pick N" in status["winter"]["reason"]
    record = lock(root)["pending"]["poster"]
    assert len(record["candidates"]) == 3 and record["request"]["inputs"] == [f"base@key:{base['key']}"]

    c = cli(capsys, root, "check", "--allow-drafts")
    assert c.code == 1 and "input poster is waiting for a pick" in c.out, c
    p = cli(capsys, root, "plan", "--provider", "dashscope", "--json")
    assert p.code == 0 and p.json["cost"]["images"] == 0, p  # a pending dependant is not priced
    again = build(capsys, root)  # still waiting: nothing new is bought
    assert (again.code, again.json["provider_calls"], emu.billed) == (0, 0, 5), again

    calls = len(emu.requests)
    a = cli(capsys, root, "accept", "poster", "--pick", "2", "--json")
    assert a.code == 0, a
    assert len(emu.requests) == calls  # accept makes no call
    chosen = record["candidates"][1]
    assert hashlib.sha256(original(chosen["key"])).hexdigest() == chosen["sha256"]
    entry = lock(root)["outputs"]["poster.png"]
    assert (entry["original"], entry["picked_from"], entry["key"]) == (chosen["sha256"], 3, chosen["key"])
    assert (root / "out" / "poster.png").is_file() and not (root / "out" / "winter.png").exists()

    r = build(capsys, root)
    assert r.code == 0, r
    assert [t["name"] for t in r.json["targets"] if t["status"] == "built"] == ["winter"]
    assert (r.json["provider_calls"], emu.billed) == (1, 6)
    assert edits(emu)[-1]["image_sha256"] == [chosen["sha256"]]  # the accepted bytes, sent
    assert lock(root)["outputs"]["winter.png"]["request"]["inputs"] == [f"poster@key:{chosen['key']}"]
    assert cli(capsys, root, "check", "--allow-drafts").code == 0

    r = build(capsys, root)
    assert (r.code, r.json["provider_calls"], emu.billed) == (0, 0, 6), r

    # The pick's output and its cached original both lost: the poster is pending (never
    # generated again with that seed), and what reads it says why it cannot be rebuilt.
    monkeypatch.setenv("IMGBUILD_CACHE_DIR", str(tmp_path / "empty-cache"))
    (root / "out" / "poster.png").unlink()
    p = cli(capsys, root, "plan", "--provider", "dashscope", "--json")
    status = rows(p)
    assert status["poster"]["status"] == "pending" and status["winter"]["status"] == "pending", p
    assert "input poster is pending (its accepted pick is not in the cache)" in status["winter"]["reason"]
    assert p.json["cost"]["images"] == 0


def test_a_changed_root_makes_the_candidates_pending_again_and_accept_refuses_stale_ones(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    root = write(tmp_path)
    assert build(capsys, root).code == 0
    assert cli(capsys, root, "accept", "poster", "--pick", "1").code == 0
    assert build(capsys, root).code == 0 and (root / "out" / "winter.png").is_file()
    billed = emu.billed
    # the root changes: the pick no longer applies (it was made from the old logo)
    text = (root / "imgbuild.yaml").read_text().replace("A round red logo", "A square red logo")
    (root / "imgbuild.yaml").write_text(text)
    r = build(capsys, root)
    assert r.code == 0, r
    status = rows(r)
    assert (status["base"]["status"], status["poster"]["status"], status["winter"]["status"]) == \
        ("built", "pending", "pending")
    assert emu.billed == billed + 4  # the new base and three new candidates; winter waits
    # the stale dependant's old file stays until the new pick is accepted
    assert (root / "out" / "winter.png").is_file()
    # a candidate made from an input that changed since is refused
    pending = lock(root)["pending"]["poster"]
    (root / "imgbuild.yaml").write_text(text.replace("A square red logo", "A square blue logo"))
    a = cli(capsys, root, "accept", "poster", "--pick", "1")
    assert a.code == 2 and "an image it reads changed since these candidates were made" in a.err, a
    assert lock(root)["pending"]["poster"] == pending
    assert emu.billed == billed + 4


def test_candidates_on_the_command_line_apply_to_the_named_target_not_to_what_it_reads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)  # with CI set, a build that leaves a pick pending exits 1
    root = write(tmp_path)
    (root / "imgbuild.yaml").write_text(
        (root / "imgbuild.yaml").read_text().replace("    candidates: 3\n", ""))
    r = cli(capsys, root, "build", "--candidates", "2", "winter", "--json")  # placeholder drafts
    assert r.code == 0, r
    assert {t["name"]: t["status"] for t in r.json["targets"]} == {
        "base": "built", "poster": "built", "winter": "pending"}
    assert len(lock(root)["pending"]["winter"]["candidates"]) == 2
    assert (root / "out" / "poster.png").is_file() and not (root / "out" / "winter.png").exists()
    r = cli(capsys, root, "accept", "winter", "--pick", "2")
    assert r.code == 0, r
    assert (root / "out" / "winter.png").is_file()
    assert cli(capsys, root, "check", "--allow-drafts").code == 1  # other was never built
    assert cli(capsys, root, "build", "--json").json["built"] == 1  # other; winter stays picked
    assert cli(capsys, root, "check", "--allow-drafts").code == 0
