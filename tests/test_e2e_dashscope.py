"""End to end through the DashScope path, no mocks: the real CLI and the real aiohttp client talk
HTTP to the DashScope emulator on 127.0.0.1 (issue 3's "must show").

What each test proves is in its name and first line; numbers asserted are exact (billed images,
HTTP requests on a rerun, task ids reused after a SIGKILL).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import (
    KEY,
    assert_lock_matches_files,
    journal_files,
    lock_outputs,
    posts,
    subprocess_env,
    temp_files,
    wait_for,
)
from helpers import Result, run
from PIL import Image

from imgbuild.emulator import Emulator, EmulatorConfig

OUT = "assets/generated"
PROVIDER = "dashscope@127.0.0.1"
SITE_SIZES = {  # output -> (width, height) the specs ask for
    "hero.png": (1664, 928),
    "posters/cupping-night.jpg": (1104, 1472),
    **{f"products/{sku}-{bag}.webp": (1328, 1328)
       for sku in ("ethiopia-guji", "colombia-huila", "house-espresso")
       for bag in ("kraft-paper", "matte-black")},
    # the chain of edits: the logo, a poster edited from it, a winter poster edited from that
    "brand/logo.png": (1328, 1328),
    "brand/poster.png": (1104, 1472),
    "brand/poster-winter.png": (1104, 1472),
}
SITE_BILLED = {"qwen-image-plus": 8, "wan2.6-t2i": 1, "qwen-image-edit-plus": 1, "wan2.6-image": 1}

# Several async targets (Wan 2.6 async endpoint and the legacy text2image endpoint), 5 images.
ASYNC_PROJECT = """\
version: 1
output_dir: out
images:
  - name: lighthouse
    model: wan2.6-t2i
    prompt: A lighthouse at dawn, long exposure, calm sea.
    output: lighthouse.png
  - name: fox
    model: wan2.6-t2i
    n: 2
    prompt: A red fox trotting through fresh snow.
    output: "fox-{{ index }}.png"
  - name: bicycle
    model: wan2.2-t2i-flash
    size: "512*512"
    prompt: A red bicycle leaning against a blue wall.
    output: bicycle.webp
  - name: lanterns
    model: wan2.2-t2i-flash
    size: "768*512"
    prompt: Paper lanterns over a night market.
    output: lanterns.jpg
"""
ASYNC_IMAGES = 5
ASYNC_OUTPUTS = ("lighthouse.png", "fox-1.png", "fox-2.png", "bicycle.webp", "lanterns.jpg")


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator that only accepts KEY, with fast tasks; the environment points imgbuild at it.
    Its documented rate limits are off: these tests count every submission, and a 429 that
    network jitter earns at the edge of a rate window would be one more (test_scheduler builds
    against the documented limits)."""
    config = EmulatorConfig(task_duration=0.05, documented_rate_limits=False)
    with Emulator(config, api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        yield server


def build(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> Result:
    return run(capsys, "build", "--provider", "dashscope", "-C", str(root), *args)














def async_project(tmp_path: Path) -> Path:
    root = tmp_path / "async"
    root.mkdir()
    (root / "imgbuild.yaml").write_text(ASYNC_PROJECT, encoding="utf-8")
    return root






# --- 1. the site, built for real ------------------------------------------------------------

def test_site_builds_through_dashscope_then_reruns_and_restores_with_zero_requests(
        site: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    r = build(capsys, site, "--json")
    assert r.code == 0, r
    assert (r.json["failed"], r.json["provider"]) == (0, PROVIDER)
    assert r.json["images_bought"] == 11 and r.json["provider_calls"] == 11
    # Billed exactly what the specs need: one image per target, none twice.
    assert emu.billed == 11 and emu.billed_by_model == SITE_BILLED
    assert len(posts(emu)) == 11 and all(s["status"] == 200 for s in posts(emu))

    lock = assert_lock_matches_files(site, OUT)
    assert set(SITE_SIZES) <= set(lock)
    for output, (w, h) in SITE_SIZES.items():
        with Image.open(site / OUT / output) as im:
            assert (im.width, im.height) == (w, h), output
        entry = lock[output]
        assert entry["provider"] == PROVIDER and entry["draft"] is True, entry  # not the production service
        assert entry["request_id"], entry
    assert lock["posters/cupping-night.jpg"]["task_id"] in {s["task_id"] for s in posts(emu)}
    assert journal_files(site) == [] and temp_files(site) == []

    assert run(capsys, "check", "-C", str(site), "--allow-drafts").code == 0  # emulator images are drafts

    # A rerun needs nothing: zero HTTP requests of any kind.
    before = len(emu.requests)
    r = build(capsys, site)
    assert r.code == 0 and "nothing to do" in r.out, r
    r = build(capsys, site, "--json")
    assert (r.json["built"], r.json["restored"], r.json["provider_calls"]) == (0, 0, 0)
    assert len(emu.requests) == before

    # Deleted outputs come back from the cache of paid originals, byte for byte, for free.
    lost = ["hero.png", "posters/cupping-night.jpg"]
    originals = {o: (site / OUT / o).read_bytes() for o in lost}
    for o in lost:
        (site / OUT / o).unlink()
    r = build(capsys, site, "--json")
    assert r.code == 0, r
    assert r.json["restored"] >= 2 and (r.json["built"], r.json["provider_calls"]) == (0, 0)
    assert len(emu.requests) == before and emu.billed == 11
    for o in lost:
        assert (site / OUT / o).read_bytes() == originals[o]
    assert lock_outputs(site) == lock
    assert run(capsys, "check", "-C", str(site), "--allow-drafts").code == 0  # emulator images are drafts


def test_placeholder_drafts_are_replaced_by_dashscope_images(
        site: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    r = run(capsys, "build", "--provider", "placeholder", "-C", str(site), "--json")
    assert r.code == 0 and r.json["images_bought"] == 0  # drafts are never bought
    assert all(lock_outputs(site)[o]["draft"] is True for o in SITE_SIZES)
    assert len(emu.requests) == 0
    check = run(capsys, "check", "-C", str(site), "--json")
    assert check.code == 1 and check.json["draft"] >= 11

    plan = run(capsys, "plan", "--provider", "dashscope", "-C", str(site), "--json")
    edits = {"brand/poster.png": "input logo changed", "brand/poster-winter.png": "input poster changed"}
    assert {(t["status"], t["action"]) for t in plan.json["targets"]
            if t["output"] in SITE_SIZES and t["output"] not in edits} == {("draft", "generate")}
    # an edit of a draft reads an input that will change (its key holds the provider): said so
    assert {t["output"]: (t["status"], t["action"], t["reason"]) for t in plan.json["targets"]
            if t["output"] in edits} == {o: ("changed", "generate", why) for o, why in edits.items()}
    r = build(capsys, site, "--json")
    assert r.code == 0, r
    assert r.json["images_bought"] == 11 and r.json["failed"] == 0
    assert emu.billed == 11 and emu.billed_by_model == SITE_BILLED
    lock = assert_lock_matches_files(site, OUT)
    assert {(lock[o]["provider"], lock[o]["draft"]) for o in SITE_SIZES} == {(PROVIDER, True)}  # an emulator: still drafts
    assert run(capsys, "check", "-C", str(site), "--allow-drafts").code == 0  # emulator images are drafts


# --- 2. SIGKILL while paid tasks are running ----------------------------------------------

@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGKILL, -signal.SIGKILL),
                                                (signal.SIGINT, 130)], ids=["SIGKILL", "SIGINT"])
def test_killed_build_resumes_the_same_tasks_and_pays_once(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str], sig: int,
        exit_code: int) -> None:
    root = async_project(tmp_path)
    emu.configure(task_duration=30.0)  # the tasks are still RUNNING when the build dies
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgbuild", "build", "--provider", "dashscope", "-j", "8",
         "-C", str(root)],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len([s for s in posts(emu) if s["task_id"]]) == 4
                 and len(journal_files(root)) == 4, 20, "4 submitted and journaled tasks")
    finally:
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
    assert proc.returncode == exit_code, (out, err)
    if sig == signal.SIGINT:  # Ctrl-C: a clean exit that keeps the journal of paid tasks
        assert b"interrupted" in err

    submitted = posts(emu)
    task_ids = {s["task_id"] for s in submitted}
    assert len(submitted) == 4 and len(task_ids) == 4
    journaled = {json.loads(p.read_text())["task_id"] for p in journal_files(root)}
    assert journaled == task_ids
    for data in [out, err, *(p.read_bytes() for p in journal_files(root))]:
        assert KEY.encode() not in data
    assert emu.billed == 0  # nothing finished yet
    assert not (root / "out").exists() or not any((root / "out").iterdir())

    emu.configure(task_duration=0.05)  # the same tasks now finish quickly
    r = build(capsys, root, "-j", "8", "--json")
    assert r.code == 0, r
    assert r.json["built"] == len(ASYNC_OUTPUTS) and r.json["provider_calls"] == 4
    # submitted (and so paid for) by the killed run: counted once, as resumed, not as new spending
    assert r.json["images_bought"] == 0 and r.json["images_resumed"] == ASYNC_IMAGES
    assert r.json["spent"] == 0 and r.json["resumed"] > 0

    assert posts(emu) == submitted  # no new submission: the journal's tasks were polled
    polled = {req["path"].rsplit("/", 1)[1] for req in emu.requests if req["endpoint"] == "tasks.get"}
    assert polled == task_ids
    assert emu.billed == ASYNC_IMAGES  # each image exactly once
    assert emu.billed_by_model == {"wan2.6-t2i": 3, "wan2.2-t2i-flash": 2}

    lock = assert_lock_matches_files(root, "out")
    assert set(lock) == set(ASYNC_OUTPUTS)
    assert {e["task_id"] for e in lock.values()} == task_ids
    assert temp_files(root) == [] and journal_files(root) == []
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0  # emulator images are drafts


# --- 3. errors through the CLI ------------------------------------------------------------

def moderate_hero(site: Path) -> None:
    spec = site / "imgbuild.yaml"
    spec.write_text(spec.read_text().replace("A wide website hero banner",
                                             "A wide __moderation__ website hero banner"))


def test_moderation_failure_names_the_spec_line_and_keep_going_builds_the_rest(
        site: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    moderate_hero(site)
    r = build(capsys, site, "-k")
    assert r.code == 1, r
    assert "imgbuild.yaml:18: DataInspectionFailed" in r.out, r
    assert "request id" in r.out
    assert emu.billed == 10
    lock = assert_lock_matches_files(site, OUT)
    assert set(SITE_SIZES) - {"hero.png"} <= set(lock) and "hero.png" not in lock
    assert not (site / OUT / "hero.png").exists()

    r = run(capsys, "check", "-C", str(site), "--json")
    assert r.code == 1 and r.json["stale"] >= 1


def test_without_keep_going_a_failure_stops_scheduling(
        site: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    moderate_hero(site)  # hero is the first target; one worker takes them in order
    r = build(capsys, site, "-j", "1", "--json")
    assert r.code == 1, r
    assert r.json["failed"] >= 1 and r.json["skipped"] >= 10 and r.json["built"] == 0
    assert "imgbuild.yaml:18: DataInspectionFailed" in r.err
    assert "use -k to keep going" in r.err
    assert len(posts(emu)) == 1 and emu.billed == 0


def test_invalid_api_key_stops_the_build_at_once_even_with_keep_going(
        site: Path, emu: Emulator, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY + "-revoked")
    r = build(capsys, site, "-k", "-j", "2")
    assert r.code == 1, r
    assert "InvalidApiKey" in r.out and "Invalid API-key provided" in r.out, r
    assert "not started: InvalidApiKey" in r.out
    assert "0 images built" in r.out and "not started" in r.out.splitlines()[-2]
    assert "derived files up to date" not in r.out  # none: their originals were never made
    assert r.out.splitlines()[-1].startswith("imgbuild: stopped early: InvalidApiKey: Invalid API-key provided")
    assert "(check DASHSCOPE_API_KEY: API keys are per region, and this project uses beijing" in r.out
    assert len(posts(emu)) <= 2  # at most the requests already in flight
    assert emu.billed == 0 and emu.stats()["requests_by_endpoint"].get("results", 0) == 0
    assert not (site / "imgbuild.lock").exists() or lock_outputs(site) == {}

    # The same through a fault on a good key: exactly one request, then nothing more.
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    emu.reset()
    emu.configure(fail_next=["InvalidApiKey"])
    r = build(capsys, site, "-k", "-j", "1", "--json")
    assert r.code == 1
    assert r.json["failed"] >= 1 and r.json["skipped"] >= 10 and r.json["built"] == 0
    assert len(posts(emu)) == 1 and emu.billed == 0


def test_partial_failure_keeps_the_images_that_succeeded(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "partial"
    root.mkdir()
    (root / "imgbuild.yaml").write_text(
        "version: 1\noutput_dir: out\nimages:\n"
        "  - name: set\n    model: wan2.2-t2i-flash\n    size: \"512*512\"\n    n: 3\n"
        "    prompt: Three ceramic cups on a wooden table.\n    output: \"set-{{ index }}.png\"\n")
    emu.configure(fail_slots=[2])
    r = build(capsys, root)
    assert r.code == 1, r
    assert "1 of 3 images failed" in r.out and "kept the 2 that succeeded" in r.out, r
    assert "imgbuild: 2 images built, 0 restored from cache, 1 failed; 0 images up to date" in r.out
    assert emu.billed == 2
    lock = assert_lock_matches_files(root, "out")
    assert set(lock) == {"set-1.png", "set-2.png"}
    assert {e["index"] for e in lock.values()} == {1, 2}
    assert not (root / "out" / "set-3.png").exists()
    check = run(capsys, "check", "-C", str(root), "--json")
    assert check.code == 1 and check.json["stale"] == 3
    plan = run(capsys, "plan", "--provider", "dashscope", "-C", str(root))
    assert "only 2 of 3 images were built (the others failed last time)" in plan.out, plan

    emu.configure(fail_slots=[])
    r = build(capsys, root, "--json")
    assert r.code == 0, r
    assert (r.json["built"], r.json["failed"]) == (3, 0)
    assert emu.billed == 2 + 3  # a partial result is not reused: the request is made again
    assert set(assert_lock_matches_files(root, "out")) == {"set-1.png", "set-2.png", "set-3.png"}
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0  # emulator images are drafts


def test_a_partial_result_keeps_each_image_in_its_own_slot(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    """When image 1 of 3 fails, images 2 and 3 are written as set-2 and set-3 (seeds s+1, s+2),
    not shifted into set-1 and set-2."""
    root = tmp_path / "slots"
    root.mkdir()
    (root / "imgbuild.yaml").write_text(
        "version: 1\noutput_dir: out\nimages:\n"
        "  - name: set\n    model: wan2.2-t2i-flash\n    size: \"512*512\"\n    n: 3\n    seed: 100\n"
        "    prompt: Three ceramic cups on a wooden table.\n    output: \"set-{{ index }}.png\"\n")
    emu.configure(fail_slots=[0])
    r = build(capsys, root)
    assert r.code == 1 and "kept the 2 that succeeded" in r.out, r
    lock = assert_lock_matches_files(root, "out")
    assert set(lock) == {"set-2.png", "set-3.png"}
    assert {o: e["index"] for o, e in lock.items()} == {"set-2.png": 2, "set-3.png": 3}
    assert not (root / "out" / "set-1.png").exists()
    emu.configure(fail_slots=[])


def test_a_burst_of_429s_is_retried_and_the_build_succeeds(
        site: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    # The next three generation POSTs (first tries and retries alike) are answered 429.
    burst = ["Throttling.RateQuota", "Throttling", "Throttling.RateQuota"]
    emu.configure(fail_next=burst)
    r = build(capsys, site, "-j", "8", "--json")
    assert r.code == 0, r
    assert r.json["images_bought"] == 11 and r.json["failed"] == 0
    assert emu.stats()["throttled"] == len(burst)
    submissions = posts(emu)
    assert len(submissions) == 11 + len(burst)  # each 429 retried once more, nothing else
    assert [s["status"] for s in submissions[:len(burst)]] == [429] * len(burst)
    assert emu.billed == 11 and emu.billed_by_model == SITE_BILLED
    assert_lock_matches_files(site, OUT)


# --- 4. the API key never lands anywhere ----------------------------------------------------

def test_the_api_key_never_leaks_to_output_lock_journal_cache_or_images(
        site: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    needles = (KEY.encode(), b"SECRET-1234")
    seen: list[tuple[str, bytes]] = []

    r = build(capsys, site, "--json", "poster*", "hero")
    assert r.code == 0, r
    seen.append(("json build", (r.out + r.err).encode()))

    moderate_hero(site)
    emu.configure(fail_next=["InternalError"], fail_next_polls=["Throttling"])
    r = build(capsys, site, "-k", "-v")
    assert r.code == 1 and "DataInspectionFailed" in r.out, r
    seen.append(("failed build", (r.out + r.err).encode()))

    # -vv turns on debug logging of every request; run it as the real console would.
    (site / OUT / "posters" / "cupping-night.jpg").unlink()
    spec = site / "specs" / "poster.yaml"
    spec.write_text(spec.read_text().replace("seed: 20261125", "seed: 20261126"))
    proc = subprocess.run(
        [sys.executable, "-m", "imgbuild", "build", "--provider", "dashscope", "-k", "-vv",
         "-C", str(site)], check=False, env=subprocess_env(), capture_output=True, timeout=60)
    assert proc.returncode == 1, proc  # the hero is still moderated
    assert b"Bearer ***" in proc.stderr and b"/tasks/" in proc.stderr  # requests were logged
    seen.append(("-vv build", proc.stdout + proc.stderr))

    r = run(capsys, "check", "-C", str(site), "--json")
    seen.append(("check", (r.out + r.err).encode()))

    files = [p for p in site.rglob("*") if p.is_file()]
    cache = Path(os.environ["IMGBUILD_CACHE_DIR"])
    files += [p for p in cache.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files)  # the diskcache index was searched
    assert len([p for p in files if p.suffix in (".png", ".jpg", ".webp")]) >= 7
    for path in files:
        seen.append((str(path), path.read_bytes()))
    leaks = [where for where, data in seen for needle in needles if needle in data]
    assert leaks == []


# --- 4. what the service returns, and what it refuses (issue 13) ----------------------------

def free_size_project(tmp_path: Path, size: str) -> Path:
    root = tmp_path / "free"
    root.mkdir()
    (root / "imgbuild.yaml").write_text(
        "version: 1\noutput_dir: out\nimages:\n  - name: card\n    model: qwen-image-2.0\n"
        f"    size: '{size}'\n    prompt: A plain paper card.\n", encoding="utf-8")
    return root


def test_a_free_size_is_rounded_in_the_plan_and_sent_as_planned(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    root = free_size_project(tmp_path, "1000*700")
    plan = run(capsys, "plan", "--provider", "dashscope", "-C", str(root), "--json")
    (target,) = plan.json["targets"]
    r = build(capsys, root, "--json")
    assert r.code == 0, r
    (post,) = posts(emu)
    assert post["size"] == "992*704"  # both sides on the 16-pixel grid of the documented sizes
    entry = lock_outputs(root)["card.png"]
    assert entry["size"] == "992*704" and "actual_size" not in entry
    assert target["output"] == "card.png"


def test_a_paid_image_a_few_pixels_off_is_kept_and_its_size_recorded(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    root = free_size_project(tmp_path, "1024*768")
    emu.configure(result_size_offset=[0, -8])
    r = build(capsys, root)
    assert r.code == 0, r
    warnings = [line for line in r.err.splitlines() if "came back as 1024*760" in line]
    assert len(warnings) == 1 and "imgbuild.yaml:4: card: 1 image(s) came back" in warnings[0]
    entry = lock_outputs(root)["card.png"]
    assert (entry["size"], entry["actual_size"]) == ("1024*768", "1024*760")
    with Image.open(root / "out" / "card.png") as im:
        assert im.size == (1024, 760)
    assert emu.billed == 1
    assert run(capsys, "check", "-C", str(root), "--allow-drafts").code == 0  # emulator images
    r = build(capsys, root)
    assert r.code == 0 and "nothing to do" in r.out and "came back" not in r.err  # warned once


def test_a_wrong_aspect_ratio_fails_saying_the_image_was_paid(
        tmp_path: Path, emu: Emulator, capsys: pytest.CaptureFixture[str]) -> None:
    root = free_size_project(tmp_path, "1024*768")
    emu.configure(result_size_offset=[0, -384])
    r = build(capsys, root)
    assert r.code == 1, r
    assert "WrongImageSize: image is 1024*384, requested 1024*768" in r.out
    assert "the image was paid for and is lost, and the next build generates it again" in r.out
    assert emu.billed == 1 and not (root / "out" / "card.png").exists()
