"""CPU per downloaded image of the DashScope download check: the PNG chunk walk
(images.header.png_problem, what verify_image does for a PNG now) against a full Pillow decode
(what it did before, and still does for JPEG and WebP), on the emulator's images and on noise
PNGs the size of real photos (which compress far worse).

    python bench/verify_png.py [--seconds 0.5]
"""
from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable

from PIL import Image

from imgbuild.emulator.images import ImageSpec, render_png
from imgbuild.providers.dashscope.download import verify_image


def pillow_decode(data: bytes, width: int, height: int) -> tuple[int, int]:
    with Image.open(io.BytesIO(data), formats=("PNG",)) as im:
        im.load()
        return im.size  # type: ignore[no-any-return]


def per_call_ms(fn: Callable[[], object], seconds: float) -> float:
    calls, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        fn()
        calls += 1
    return 1000 * (time.process_time() - start) / calls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="CPU time per measurement")
    args = ap.parse_args()
    print("| image | bytes | Pillow decode ms | chunk walk ms | ratio |\n|---|---|---|---|---|")
    for w, h, model in ((512, 512, "qwen-image-2.0"), (1328, 1328, "qwen-image-plus")):
        noise = io.BytesIO()
        Image.frombytes("RGB", (w, h), os.urandom(w * h * 3)).save(noise, "PNG")
        for label, data in (("emulator", render_png(ImageSpec(model, "a bench tile", 7, 0, w, h))),
                            ("noise", noise.getvalue())):
            old = per_call_ms(lambda: pillow_decode(data, w, h), args.seconds)
            new = per_call_ms(lambda: verify_image(data, w, h), args.seconds)
            print(f"| {w}*{h} {label} | {len(data):,} | {old:.3f} | {new:.3f} | {old / new:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
