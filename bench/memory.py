"""Memory benchmark: peak RSS of one `imgbuild build` that makes 200 images of 2048*2048
(qwen-image-2.0), measured as the child's ru_maxrss. Target: <= 250 MB.

    python bench/memory.py [--images 200] [--jobs N] [--provider placeholder|emulator]

placeholder: offline drafts drawn in-process (Pillow). emulator: the real DashScope path
(aiohttp, downloads, full decode to verify) against the emulator, run in this process (its
memory is not the child's). A fresh project and an empty cache each run, under a temp folder.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = """\
version: 1
output_dir: out
limits:
  qwen-image-2.0: {{rps: 50}}
images:
  - name: "big-{{{{ i }}}}"
    matrix: {{i: {indexes}}}
    model: qwen-image-2.0
    size: "2048*2048"
    prompt: A detailed city map, sheet {{{{ i }}}}, with street names.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=None, help="-j (default: imgbuild's)")
    parser.add_argument("--provider", choices=("placeholder", "emulator"), default="placeholder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="imgbuild-membench-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        (root / "imgbuild.yaml").write_text(PROJECT.format(indexes=list(range(args.images))))
        env = {**os.environ, "IMGBUILD_CACHE_DIR": str(Path(tmp) / "cache")}
        cmd = [sys.executable, "-m", "imgbuild", "build", "-q", "-C", str(root)]
        if args.jobs:
            cmd += ["-j", str(args.jobs)]
        emulator = None
        if args.provider == "emulator":
            from imgbuild.emulator import Emulator, EmulatorConfig

            emulator = Emulator(EmulatorConfig(sync_latency=0.05, documented_rate_limits=False)).start()
            env.update(DASHSCOPE_API_KEY="sk-bench", DASHSCOPE_HTTP_BASE_URL=emulator.base_url)
            cmd += ["--provider", "dashscope"]
        else:
            cmd += ["--provider", "placeholder"]
        try:
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, check=False)
            wall = time.perf_counter() - start
        finally:
            if emulator is not None:
                emulator.stop()
        if proc.returncode != 0:
            raise SystemExit(f"build exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        made = sum(1 for p in (root / "out").iterdir() if p.is_file())
    print(f"{args.images} images of 2048*2048 ({args.provider}), {made} written in {wall:.1f} s: "
          f"peak RSS {peak_mb:.0f} MB (target <= 250 MB)"
          + (" OK" if peak_mb <= 250 else " OVER"))


if __name__ == "__main__":
    main()
