"""Targets that read targets (`inputs:`, issue 19): a chain file -> poster -> winter builds in
order over the emulator with the input images in the documented place, keys follow the graph
(exactly the dependants of a change are rebuilt, provider calls counted), a failed input skips
its dependants, `check` sees a stale dependant offline, and `graph --dot` renders."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from helpers import run
from imgbuild.emulator import Emulator, EmulatorConfig

KEY = "sk-imgbuild-graph-test-1"

PROJECT = """\
version: 1
defaults: {model: qwen-image-edit, size: "512*512"}
images:
  - name: poster
    prompt: A concert poster built around this logo
    inputs: [brand/logo.png]
  - name: "{{ season }}"
    matrix: {season: [winter]}
    prompt: The same poster in {{ season }}
    inputs: ["{{ 'poster' }}"]
  - name: other
    model: qwen-image-2.0
    prompt: An unrelated cat
"""


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (400, 400)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    (root / "brand").mkdir(parents=True)
    (root / "brand" / "logo.png").write_bytes(_png((200, 20, 20)))
    (root / "imgbuild.yaml").write_text(PROJECT)
    return root


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(task_duration=0.05, documented_rate_limits=False),
                  api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        yield server


def _build(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> dict:
    r = run(capsys, "build", "--provider", "dashscope", "-C", str(root), "--json", *args)
    return {**json.loads(r.out.strip().splitlines()[-1]), "code": r.code, "err": r.err}


def _built(summary: dict) -> list[str]:
    return sorted(t["name"] for t in summary["targets"] if t["status"] == "built")


def _edit(root: Path, old: str, new: str) -> None:
    text = (root / "imgbuild.yaml").read_text()
    assert old in text
    (root / "imgbuild.yaml").write_text(text.replace(old, new))


def test_a_chain_builds_in_order_with_its_images_in_the_message(
        project: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    summary = _build(capsys, project)
    assert summary["code"] == 0, summary["err"]
    assert _built(summary) == ["other", "poster", "winter"]
    posts = emu.stats()["submissions"]
    assert [p["model"] for p in posts].count("qwen-image-edit") == 2
    assert all(p["content"] == ["image", "text"] for p in posts if p["model"] == "qwen-image-edit")
    # in order: the second edit (winter) reads the first edit's image, so it was sent after it
    edits = [p for p in posts if p["model"] == "qwen-image-edit"]
    assert edits[0]["time"] <= edits[1]["time"]
    assert [p["content"] for p in posts if p["model"] == "qwen-image-2.0"] == [["text"]]
    # the edit visibly derives from its input: the red logo, tinted, is still reddish
    poster = Image.open(project / "generated" / "poster.png").convert("RGB")
    r, g, b = poster.getpixel((400, 400))
    assert r > g and r > b
    lock = json.loads((project / "imgbuild.lock").read_text())["outputs"]
    assert lock["winter.png"]["request"]["inputs"] == [f"poster@key:{lock['poster.png']['key']}"]


def test_keys_follow_the_graph(project: Path, emu: Emulator,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _build(capsys, project)["code"] == 0
    calls = len(emu.stats()["submissions"])
    _edit(project, "built around this logo", "made around this logo")
    r = run(capsys, "plan", "--provider", "dashscope", "-C", str(project))
    assert "input poster changed" in r.out
    summary = _build(capsys, project)
    assert _built(summary) == ["poster", "winter"]  # the root's edit: both dependants, not other
    assert len(emu.stats()["submissions"]) == calls + 2
    _edit(project, "An unrelated cat", "An unrelated dog")
    summary = _build(capsys, project)
    assert _built(summary) == ["other"]
    assert len(emu.stats()["submissions"]) == calls + 3
    (project / "brand" / "logo.png").write_bytes(_png((20, 20, 200)))  # the file input changes
    assert _built(_build(capsys, project)) == ["poster", "winter"]
    assert len(emu.stats()["submissions"]) == calls + 5
    assert _built(_build(capsys, project)) == []  # and then nothing to do
    assert len(emu.stats()["submissions"]) == calls + 5


def test_a_failed_input_skips_its_dependants_and_keep_going_builds_the_rest(
        project: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(project, "A concert poster", "A __moderation__ poster")
    summary = _build(capsys, project, "-k", "-j", "1")
    assert summary["code"] == 1
    status = {t["name"]: t for t in summary["targets"]}
    assert status["poster"]["status"] == "failed"
    assert status["winter"]["status"] == "skipped"
    assert "input poster failed" in json.dumps(status["winter"])
    assert status["other"]["status"] == "built"
    models = [p["model"] for p in emu.stats()["submissions"]]
    assert models.count("qwen-image-edit") == 1  # the dependant was never sent


def test_build_target_brings_what_it_reads(project: Path, emu: Emulator,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    summary = _build(capsys, project, "winter")
    assert _built(summary) == ["poster", "winter"]


def test_check_sees_a_stale_dependant_offline(project: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "build", "-C", str(project)).code == 0  # placeholder drafts
    assert run(capsys, "check", "-C", str(project), "--allow-drafts").code == 0
    (project / "brand" / "logo.png").write_bytes(_png((20, 200, 20)))
    r = run(capsys, "check", "-C", str(project), "--allow-drafts")
    assert r.code == 1
    assert "poster" in r.out and "winter" in r.out and "other" not in r.out


def test_an_input_file_over_the_models_limits_is_refused_with_the_limit(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "brand" / "logo.png").write_bytes(_png((1, 2, 3), (3200, 400)))
    r = run(capsys, "validate", "-C", str(project))
    assert r.code == 2
    assert ("images[poster].inputs[0]: input 'brand/logo.png' is 3200*400; each side must be "
            "between 384 and 3072 pixels by qwen-image-edit") in r.err


def test_graph_text_json_and_dot(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "graph", "-C", str(project))
    assert r.code == 0
    assert r.out.splitlines()[:3] == ["brand/logo.png  (file)", "└── poster", "    └── winter"]
    r = run(capsys, "graph", "-C", str(project), "winter", "--json")
    doc = json.loads(r.out.strip().splitlines()[-1])
    assert [t["name"] for t in doc["targets"]] == ["poster", "winter"]
    assert {"from": "poster", "to": "winter", "kind": "target"} in doc["edges"]
    r = run(capsys, "graph", "-C", str(project), "--dot")
    assert r.out.startswith("digraph imgbuild {") and '"poster" -> "winter";' in r.out
    if shutil.which("dot") is None:
        if os.environ.get("CI"):  # .ci/run installs it: missing in CI is a failure
            pytest.fail("Graphviz (Debian package graphviz) is missing, but .ci/run installs it")
        pytest.skip("Graphviz (Debian package graphviz) is not installed")
    svg = subprocess.run(["dot", "-Tsvg"], input=r.out, capture_output=True, text=True, check=True)
    assert "<svg" in svg.stdout and "winter" in svg.stdout


def test_a_target_input_larger_than_the_edit_model_takes_is_refused_before_anything_is_paid(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "imgbuild.yaml").write_text(PROJECT.replace(
        "  - name: other\n", "  - name: wide\n    model: qwen-image-2.0\n    size: \"3328*1024\"\n"
        "    prompt: A wide banner\n  - name: wide-edit\n    prompt: The banner at night\n"
        "    inputs: [wide]\n  - name: other\n"))
    r = run(capsys, "build", "-C", str(project))
    assert r.code == 2
    assert ("images[wide-edit].inputs[0]: input 'wide' is 3328*1024; each side must be between "
            "384 and 3072 pixels by qwen-image-edit") in r.err
    assert not (project / "generated").exists()


def test_a_draft_edit_shows_its_input_as_a_thumbnail(project: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (project / "brand" / "logo.png").write_bytes(_png((255, 0, 0), (512, 512)))
    assert run(capsys, "build", "-C", str(project)).code == 0  # placeholder drafts
    poster = Image.open(project / "generated" / "poster.png").convert("RGB")
    other = Image.open(project / "generated" / "other.png").convert("RGB")
    corner = (poster.width - 40, poster.height - 40)  # inside the bottom-right thumbnail
    assert poster.getpixel(corner) == (255, 0, 0)
    assert other.getpixel((other.width - 40, other.height - 40)) != (255, 0, 0)


def test_the_no_op_snapshot_notices_a_changed_input_file(project: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from imgbuild.plan import snapshot

    monkeypatch.setattr(snapshot, "_RACY_SECONDS", -1.0)  # vouch for files written just now
    assert run(capsys, "build", "-C", str(project)).code == 0
    assert run(capsys, "build", "-C", str(project)).code == 0  # a no-op: writes the snapshot
    assert run(capsys, "check", "-C", str(project), "--allow-drafts").code == 0
    assert (project / ".imgbuild" / snapshot.SNAPSHOT_FILE).exists()
    (project / "brand" / "logo.png").write_bytes(_png((0, 0, 255)))
    assert run(capsys, "check", "-C", str(project), "--allow-drafts").code == 1
    r = run(capsys, "build", "-C", str(project), "--json")
    assert _built({"targets": json.loads(r.out.strip().splitlines()[-1])["targets"]}) == ["poster", "winter"]


WAN_CHAIN = """\
version: 1
images:
  - name: logo
    model: qwen-image-2.0
    size: "1024*1024"
    prompt: A round red logo
  - name: poster
    model: wan2.6-image
    size: "1104*1472"
    prompt: A concert poster built around this logo
    inputs: [logo]
  - name: poster-winter
    model: wan2.5-i2i-preview
    size: "1104*1472"
    prompt: The same poster in winter
    inputs: [poster]
"""


def test_a_chain_through_the_wan_edit_models(tmp_path: Path, emu: Emulator,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """logo (text to image) -> poster (wan2.6-image, sync, images in the message) ->
    poster-winter (wan2.5-i2i-preview, the image2image task, polled and downloaded)."""
    (tmp_path / "imgbuild.yaml").write_text(WAN_CHAIN)
    summary = _build(capsys, tmp_path)
    assert summary["code"] == 0, summary["err"]
    assert _built(summary) == ["logo", "poster", "poster-winter"]
    posts = {p["model"]: p for p in emu.stats()["submissions"]}
    assert posts["wan2.6-image"]["endpoint"] == "multimodal-generation"
    assert posts["wan2.6-image"]["content"] == ["text", "image"]
    assert posts["wan2.5-i2i-preview"]["endpoint"] == "image2image"
    assert posts["wan2.5-i2i-preview"]["content"] == ["prompt", "images[]"]
    task = posts["wan2.5-i2i-preview"]["task_id"]
    assert any(r["path"] == f"/api/v1/tasks/{task}" for r in emu.requests)
    with Image.open(tmp_path / "generated" / "poster-winter.png") as winter:
        assert winter.size == (1104, 1472)
    # editing the logo's prompt rebuilds exactly the two edits below it
    _edit(tmp_path, "A round red logo", "A square red logo")
    assert _built(_build(capsys, tmp_path)) == ["logo", "poster", "poster-winter"]
    _edit(tmp_path, "The same poster in winter", "The same poster in autumn")
    assert _built(_build(capsys, tmp_path)) == ["poster-winter"]


@pytest.mark.parametrize(("size", "why"), [
    ((5001, 1500), "is 5001*1500; each side must be between 384 and 5000 pixels"),
    ((2000, 400), "is 2000*400; its aspect ratio must be between 1:4 and 4:1"),
])
def test_an_input_file_over_a_wan_models_limits_is_refused_with_the_limit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], size: tuple[int, int],
        why: str) -> None:
    (tmp_path / "brand").mkdir()
    (tmp_path / "brand" / "logo.png").write_bytes(_png((1, 2, 3), size))
    (tmp_path / "imgbuild.yaml").write_text(
        "version: 1\nimages:\n  - name: poster\n    model: wan2.5-i2i-preview\n"
        "    prompt: A poster around this logo\n    inputs: [brand/logo.png]\n")
    r = run(capsys, "validate", "-C", str(tmp_path))
    assert r.code == 2
    assert f"images[poster].inputs[0]: input 'brand/logo.png' {why} by wan2.5-i2i-preview" in r.err


def test_an_edit_gets_its_web_derivatives_and_check_agrees(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The variants of an edit follow the original the lock records (its key holds its input
    identities, which only the plan computes): they are derived in the build that makes it, not
    left waiting for ever."""
    _edit(project, "    inputs: [brand/logo.png]\n",
          "    inputs: [brand/logo.png]\n    formats: [webp]\n    widths: [200]\n")
    r = run(capsys, "build", "-C", str(project))
    assert r.code == 0, r.err
    assert (project / "generated" / "poster-200.webp").is_file()
    assert run(capsys, "check", "-C", str(project), "--allow-drafts").code == 0
    # the logo changes: the poster and its variant are stale; rebuilt, they are fresh again
    (project / "brand" / "logo.png").write_bytes(_png((20, 200, 20)))
    assert run(capsys, "check", "-C", str(project), "--allow-drafts").code == 1
    r = run(capsys, "build", "-C", str(project))
    assert "poster-200.webp" in r.err + r.out
    assert run(capsys, "check", "-C", str(project), "--allow-drafts").code == 0
