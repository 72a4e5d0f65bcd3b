"""Helpers shared by the end-to-end tests that drive the real CLI and aiohttp client over
loopback HTTP against the DashScope emulator (test_e2e_dashscope, test_faults, test_kill,
test_concurrency)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from PIL import Image

from imgbuild.emulator import Emulator

KEY = "sk-imgbuild-test-SECRET-1234"

# One third each: a sync Qwen call, a wan2.6 async task, a legacy wan2.2 text2image task.
# The sizes are the smallest each model takes, so images render and decode quickly.
MIX = (("q", "qwen-image-plus", "1664*928"), ("w", "wan2.6-t2i", "1280*1280"),
       ("f", "wan2.2-t2i-flash", "512*512"))
FAST_LIMITS = {"rps": 1000, "concurrency": 64}  # the emulator enforces nothing unless told


def generated_project(root: Path, count: int = 50, *, out: str = "out", extra: str = "",
                      prompt: str = "Test image {i}, a calm lake at dawn.",
                      timeouts: dict[str, float] | None = None) -> list[str]:
    """Write imgbuild.yaml with `count` targets cycling through MIX; returns the outputs.
    `prompt` is formatted with i (and may hold Jinja, e.g. {{ round }} with `extra` vars)."""
    lines = ["version: 1", f"output_dir: {out}", "limits:"]
    lines += [f"  {model}: {json.dumps(FAST_LIMITS)}" for _, model, _ in MIX]
    if timeouts:
        lines.append(f"timeouts: {json.dumps(timeouts)}")
    if extra:
        lines.append(extra.rstrip("\n"))
    lines.append("images:")
    outputs = []
    for i in range(count):
        letter, model, size = MIX[i % len(MIX)]
        name = f"{letter}{i:03d}"
        lines += [f"  - name: {name}", f"    model: {model}", f'    size: "{size}"',
                  f"    prompt: {json.dumps(prompt.format(i=i))}"]
        outputs.append(f"{name}.png")
    root.mkdir(parents=True, exist_ok=True)
    (root / "imgbuild.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return outputs


def lock_outputs(root: Path) -> dict[str, dict[str, Any]]:
    return json.loads((root / "imgbuild.lock").read_text("utf-8"))["outputs"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_lock_matches_files(root: Path, out: str) -> dict[str, dict[str, Any]]:
    lock = lock_outputs(root)
    for output, entry in lock.items():
        assert sha256(root / out / output) == entry["sha256"], output
    return lock


def assert_outputs_decode(root: Path, out: str, outputs: list[str] | dict[str, Any]) -> None:
    for output in outputs:
        data = (root / out / output).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.load()


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith((".imgbuild-tmp-", ".tmp-"))]


def journal_files(root: Path) -> list[Path]:
    """Committed journal entries (not the dot-named temp file of an entry being written)."""
    directory = root / ".imgbuild" / "journal"
    found = directory.glob("*.json") if directory.is_dir() else []
    return sorted(p for p in found if not p.name.startswith("."))


def posts(emu: Emulator) -> list[dict[str, Any]]:
    return emu.stats()["submissions"]


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def subprocess_env(**extra: str) -> dict[str, str]:
    # os.environ already holds this test's IMGBUILD_CACHE_DIR and the emulator's URL and key.
    env = {**os.environ, **extra}
    env.pop("IMGBUILD_PROVIDER", None)
    return env
