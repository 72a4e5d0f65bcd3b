"""The scheduler, measured at the emulator over real HTTP (no mocks): `imgbuild build` against an
emulator that enforces the same per-model rate R and concurrency C the project declares.

Proved from the emulator's own records: no window of 1 s holds more than R submissions of a
model (arrival times of every generation POST, 429s included); never more than C of a model in
flight; every target built; and when the service allows less than the project says, AIMD slows
down by itself, so a few 429s and no failure.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Result, run

from imgbuild.spec import catalogue as models
from imgbuild.emulator import Emulator, EmulatorConfig
from imgbuild.providers.dashscope import client as dashscope
from imgbuild.providers.base import Request
from imgbuild.providers.dashscope.timing import PollSchedule
from imgbuild.run.scheduler import Scheduler, default_jobs

KEY = "sk-scheduler-test"
GENERATION_PATHS = ("/services/aigc/multimodal-generation/generation",  # documented [API §2]
                    "/services/aigc/image-generation/generation",
                    "/services/aigc/text2image/image-synthesis")


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(task_duration=0.3), api_key=KEY) as server:
        monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
        monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", server.base_url)
        yield server


def project(tmp_path: Path, limits: dict[str, dict[str, float]], groups: dict[str, int]) -> Path:
    """A project with `groups[model]` targets of each model, 512*512 (cheap to draw)."""
    lines = ["version: 1", "output_dir: out", "limits:"]
    lines += [f"  {m}: {{{', '.join(f'{k}: {v}' for k, v in lim.items())}}}" for m, lim in limits.items()]
    lines += ["images:"]
    for model, count in groups.items():
        lines += [f"  - name: \"{model}-{{{{ i }}}}\"", f"    model: {model}", "    size: '512*512'",
                  f"    matrix: {{i: {list(range(count))}}}", "    prompt: tile {{ i }}"]
    (tmp_path / "imgbuild.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def build(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[Result, float]:
    start = time.monotonic()
    r = run(capsys, "build", "--provider", "dashscope", "-C", str(root), "--json", *args)
    return r, time.monotonic() - start


def arrivals(emu: Emulator, model: str) -> list[float]:
    """Arrival times at the emulator of every generation POST for `model` (429s included)."""
    return sorted(r["time"] for r in emu.requests
                  if r["method"] == "POST" and r["path"].endswith(GENERATION_PATHS)
                  and (r["json"] or {}).get("model") == model)


def busiest_second(times: list[float]) -> int:
    """The most submissions in any window of 1 s (both ends included: the strict reading)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] < t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_sync_builds_never_exceed_rate_or_concurrency_per_model(
        emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two models with their own R and C, sharing one build: each stays within its own."""
    limits = {"qwen-image-2.0": {"rps": 6, "concurrency": 3},
              "qwen-image-2.0-pro": {"rps": 4, "concurrency": 2}}
    groups = {"qwen-image-2.0": 24, "qwen-image-2.0-pro": 16}
    emu.configure(sync_latency=0.4, rate_limits={m: v["rps"] for m, v in limits.items()},
                  sync_concurrency={m: int(v["concurrency"]) for m, v in limits.items()})
    r, wall = build(capsys, project(tmp_path, limits, groups), "-j", "32")
    assert r.code == 0, r
    assert r.json["built"] == 40
    stats = emu.stats()
    assert stats["throttled"] == 0
    assert stats["billed_by_model"] == groups
    for model, limit in limits.items():
        times = arrivals(emu, model)
        assert len(times) == groups[model]
        assert busiest_second(times) <= limit["rps"], model
        assert busiest_second(times) >= limit["rps"] - 1, model  # and the rate is used, not wasted
        assert stats["max_concurrent"][model] <= limit["concurrency"], model
    # 24 at 6/s and 16 at 4/s, side by side: about 4 s; far less than one after the other.
    assert wall < 8.0


def test_async_tasks_count_toward_concurrency_until_finished(
        emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Wan tasks: at most C submitted-and-unfinished at the service, though waiting holds no
    submission token (the service here would run 100 at once, so its count is ours)."""
    # Poll every 50 ms instead of every 3 s, so 30 short tasks fit in a test.
    monkeypatch.setattr(dashscope, "PollSchedule", lambda: PollSchedule(first=0.25, early=0.05))
    model = "wan2.2-t2i-flash"
    emu.configure(task_duration=0.3, rate_limits={model: 10}, task_concurrency={model: 100})
    r, wall = build(capsys, project(tmp_path, {model: {"rps": 10, "concurrency": 3}}, {model: 30}),
                    "-j", "16")
    assert r.code == 0, r
    stats = emu.stats()
    assert stats["billed"] == 30 and stats["throttled"] == 0
    assert stats["max_concurrent"][model] == 3  # the cap, and all of it used
    assert busiest_second(arrivals(emu, model)) <= 10
    # C binds: 30 tasks / 3 at a time * ~0.35 s each.
    assert 3.0 < wall < 10.0


def test_rate_adapts_down_when_the_service_allows_less_than_configured(
        emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Project says 12/s, the account allows 4/s: some 429s, AIMD halves the rate, every
    target is built and far fewer 429s than a client that kept sending 12/s would earn."""
    model = "qwen-image-2.0"
    emu.configure(sync_latency=0.05, rate_limits={model: 4}, retry_after=0.5)
    r, wall = build(capsys, project(tmp_path, {model: {"rps": 12}}, {model: 24}), "-j", "24")
    assert r.code == 0, r
    assert r.json["built"] == 24 and r.json["failed"] == 0
    stats = emu.stats()
    assert stats["billed"] == 24
    assert 0 < stats["throttled"] < 24, stats["throttled"]
    ok = sorted(s["time"] for s in stats["submissions"] if s["status"] == 200)
    assert busiest_second(ok) <= 5  # what the service admitted: its own limit (+1 for the
    # inclusive window we measure with)
    assert wall < 15.0


def test_default_jobs_lets_the_model_limits_bind() -> None:
    def req(model: str, call: str | None = None) -> Request:
        return Request(model, "p", "", models.MODELS[model].default_size, 1, 1, False, False, call)

    assert default_jobs([]) == 4
    assert default_jobs([req("wan2.2-t2i-flash")] * 10) == 4  # C = 2, floor 4
    assert default_jobs([req("wan2.6-t2i"), req("wan2.5-t2i-preview")]) == 10  # 5 + 5
    assert default_jobs([req("qwen-image-plus")]) == 40  # sync unlimited: 2/s * 20 s
    assert default_jobs([req("qwen-image-plus", "async")]) == 4  # async: C = 2
    assert default_jobs([req("qwen-image-plus")], {"qwen-image-plus": {"concurrency": 8}}) == 8
    assert default_jobs([req("qwen-image-2.0"), req("qwen-image-plus")] * 50) == 41
    assert default_jobs([req("qwen-image-plus")], {"qwen-image-plus": {"rps": 10}}) == 64  # cap


def test_limits_override_the_model_table() -> None:
    s = Scheduler({"qwen-image-plus": {"rps": 5}})
    assert s.limit("qwen-image-plus").rps == 5 and s.limit("qwen-image-plus").concurrency == 2
    assert not s.limit("qwen-image-plus").sync_limited  # the documented "sync unlimited"
    assert s.limit("wan2.6-t2i").rps == 1 and s.limit("wan2.6-t2i").concurrency == 5


@pytest.mark.parametrize("limits, message", [
    ("{qwen-image-plsu: {rps: 2}}", "qwen-image-plsu"),
    ("{qwen-image-plus: {rps: 0}}", "rps"),
    ("{qwen-image-plus: {concurrency: 0}}", "concurrency"),
    ("{qwen-image-plus: {rsp: 2}}", "rsp"),
])
def test_bad_limits_are_spec_errors(limits: str, message: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imgbuild.yaml").write_text(f"version: 1\nlimits: {limits}\nimages: []\n")
    r = run(capsys, "validate", "-C", str(tmp_path))
    assert r.code == 2, r
    assert "imgbuild.yaml:2:" in r.err and message in r.err, r


def test_a_build_within_the_documented_limits_of_the_strict_emulator(
        emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No `limits:` anywhere: the client paces by its model table, the emulator enforces its
    own documented numbers (Beijing: wan2.6-t2i 1/s, qwen-image-plus 2/s, wan2.2 2/s with 2
    tasks at once). The two tables agree: everything is built, each image paid once."""
    monkeypatch.setattr(dashscope, "PollSchedule", lambda: PollSchedule(first=0.3, early=0.1))
    groups = {"qwen-image-plus": 5, "wan2.6-t2i": 3, "wan2.2-t2i-flash": 4}
    root = tmp_path
    lines = ["version: 1", "output_dir: out", "images:"]
    for model, count in groups.items():
        size = {"qwen-image-plus": "1328*1328", "wan2.6-t2i": "1280*1280"}.get(model, "512*512")
        lines += [f"  - name: \"{model}-{{{{ i }}}}\"", f"    model: {model}", f"    size: '{size}'",
                  f"    matrix: {{i: {list(range(count))}}}", "    prompt: tile {{ i }}"]
    (root / "imgbuild.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    r, wall = build(capsys, root)
    assert r.code == 0, r
    stats = emu.stats()
    assert stats["billed_by_model"] == groups
    assert stats["throttled"] <= 2, stats["throttled"]  # at most jitter at a window's edge
    assert busiest_second(arrivals(emu, "wan2.6-t2i")) <= 2
