"""What the emulated service accepts, written out literally from the documentation.

These tables are the emulator's own, on purpose: imgbuild's client keeps its model table in
imgbuild.spec.catalogue, and the tests check that table *against* this one over HTTP. If both
read one table, a mistake in it would pass every test. So nothing here is imported from the
rest of imgbuild, and each value says where it comes from:

  [API §n]  ../shared/dashscope-api.md, section n (stored copies of the official docs)
  [T2I]     ../shared/reference/model-studio-text-to-image.txt (the public docs page)
  [SDK]     the official Python SDK, dashscope 1.26.2
  [3P]      a third-party observation of the live service
  [EDIT]    the Model Studio guide "图像编辑 - 万相2.7/2.6/2.5" (a stored copy of
            platform.qianwenai.com/docs), and docs.qwencloud.com's wan2.6-image and wan2.5 edit
            API pages

Where the docs say nothing the emulator does not invent a rule; the comment says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

API_PREFIX = "/api/v1"

# Endpoint names (they also label the emulator's stats) and their paths [API §2].
SYNC = "multimodal-generation"  # A: one request, the answer holds the images
ASYNC = "image-generation"  # B: wan2.6 task submission (X-DashScope-Async: enable)
LEGACY = "text2image"  # C: the older task submission (X-DashScope-Async: enable)
# wan2.5-i2i-preview's edit task: async header required, `input.prompt` + `input.images`
# [EDIT: "API参考" table; docs.qwencloud.com wan25-general-image-editing/create-task].
I2I = "image2image"
ROUTES = {
    SYNC: "/services/aigc/multimodal-generation/generation",
    ASYNC: "/services/aigc/image-generation/generation",
    LEGACY: "/services/aigc/text2image/image-synthesis",
    I2I: "/services/aigc/image2image/image-synthesis",
}

SEED_MAX = 2147483647  # seed in [0, 2147483647] [API §4.1]
NEGATIVE_PROMPT_MAX = 500  # [API §4.1, §4.2, §4.3]

# Regions an emulator can play, by the name imgbuild projects use [API §1].
REGIONS = ("beijing", "singapore", "virginia")


@dataclass(frozen=True)
class SizeRule:
    """`fixed`: one of `allowed`; `pixels`: w*h in [min_px, max_px] and, if set, aspect within
    1:max_aspect..max_aspect:1; `side`: each side in [min_side, max_side]."""

    kind: str
    allowed: tuple[str, ...] = ()
    min_px: int = 0
    max_px: int = 0
    max_aspect: float = 0.0
    min_side: int = 0
    max_side: int = 0

    def problem(self, width: int, height: int) -> str | None:
        size = f"{width}*{height}"
        if self.kind == "fixed":
            return None if size in self.allowed else f"must be one of {', '.join(self.allowed)}"
        if self.kind == "pixels":
            px = width * height
            if not self.min_px <= px <= self.max_px:
                return (f"width*height must be between {self.min_px:,} and {self.max_px:,} "
                        f"pixels ({_square(self.min_px)} to {_square(self.max_px)}); "
                        f"{size} has {px:,}")
            if self.max_aspect and max(width / height, height / width) > self.max_aspect:
                return (f"aspect ratio must be between 1:{self.max_aspect:g} and "
                        f"{self.max_aspect:g}:1")
            return None
        if self.min_side <= width <= self.max_side and self.min_side <= height <= self.max_side:
            return None
        return f"each side must be between {self.min_side} and {self.max_side} pixels"


def _square(px: int) -> str:
    side = math.isqrt(px)
    return f"{side}*{side}" if side * side == px else f"{px:,}"


# The five Qwen sizes [T2I "Set output image resolution"; API §4.1].
QWEN_FIXED = SizeRule("fixed", allowed=("1664*928", "1472*1104", "1328*1328", "1104*1472",
                                        "928*1664"))
# qwen-image-2.0 series: total pixels in [512*512, 2048*2048] [T2I; API §4.1].
QWEN_FREE = SizeRule("pixels", min_px=512 * 512, max_px=2048 * 2048)
# wan2.6 / wan2.5: "total pixels in [1280*1280, 1440*1440], aspect 1:4..4:1" [API §4.2], yet the
# same page recommends 1104*1472 and 960*1696, which have fewer; a service accepts its own
# recommendations, so the floor is the smallest recommended size.
WAN_PIXELS = SizeRule("pixels", min_px=1104 * 1472, max_px=1440 * 1440, max_aspect=4.0)
# wan2.2 and older: each side in [512, 1440] [T2I "Wan V2 model"; API §4.3].
WAN_SIDES = SizeRule("side", min_side=512, max_side=1440)


@dataclass(frozen=True)
class ImageRule:
    """What an edit model accepts as an input image. `max_aspect` 0 = any aspect."""

    types: tuple[str, ...]  # MIME types of the data URI
    min_side: int
    max_side: int
    max_bytes: int
    max_aspect: float = 0.0


@dataclass(frozen=True)
class Limit:
    """Account limits of one model in one region [API §8]. rps 0 = none documented."""

    rps: float = 0.0
    tasks: int = 0  # concurrent async tasks; the rest wait PENDING. 0 = none documented


@dataclass(frozen=True)
class Model:
    name: str
    family: str  # "qwen" | "wan": decides the response shapes [API §5]
    endpoints: frozenset[str]
    size: SizeRule
    default_size: str
    n_max: int
    n_default: int  # what the service generates (and bills) when n is omitted
    prompt_max: int  # longer prompts are cut, not refused [API §4.1]
    regions: dict[str, Limit] = field(default_factory=dict)  # where it is offered, and limits
    # `ImageSynthesis.sync_call` posts to endpoint C *without* the async header; the SDK says
    # only wan2.2-t2i-flash/plus support that [SDK image_synthesis.py; API §6].
    legacy_sync: bool = False
    # Edit models: how many input images a request takes (0 = none: text only), and which.
    max_images: int = 0
    image_rule: ImageRule | None = None
    # Sizes named by a tier ("1K", "2K") instead of W*H: the tier's total pixels, the output
    # taking the last input image's aspect. Also what an omitted size means, when set.
    size_tiers: dict[str, int] = field(default_factory=dict)
    default_tier: str = ""


# Qwen-Image-Edit input images: JPG, JPEG, PNG, BMP, TIFF, WEBP or GIF; each side 384..3072
# pixels; at most 10 MB [qwen-image-edit API reference, "Input image requirements"].
QWEN_EDIT_IMAGES = ImageRule(("image/jpeg", "image/jpg", "image/png", "image/bmp", "image/tiff",
                              "image/webp", "image/gif"), 384, 3072, 10 * 2**20)
# Wan editing input images [EDIT "输入图像规格"]: JPEG, JPG, PNG (no alpha channel: not checked
# by the emulator, whose own images have none), BMP, WEBP; at most 10 MB. wan2.6-image: sides
# 240..8000, any aspect; wan2.5-i2i-preview: sides 384..5000, aspect 1:4..4:1.
_WAN_TYPES = ("image/jpeg", "image/jpg", "image/png", "image/bmp", "image/webp")
WAN26_EDIT_IMAGES = ImageRule(_WAN_TYPES, 240, 8000, 10 * 2**20)
WAN25_EDIT_IMAGES = ImageRule(_WAN_TYPES, 384, 5000, 10 * 2**20, max_aspect=4.0)
# Output sizes [EDIT "设置输出图像分辨率"]. wan2.6-image: "1K" (default, about 1280*1280) or "2K"
# (about 2048*2048) following the last input's aspect, or W*H with total pixels in
# [768*768, 2048*2048] and aspect 1:4..4:1. wan2.5-i2i-preview: W*H only, total pixels in
# [768*768, 1280*1280], aspect 1:4..4:1; omitted: 1280*1280 total at the last input's aspect.
WAN26_EDIT_SIZE = SizeRule("pixels", min_px=768 * 768, max_px=2048 * 2048, max_aspect=4.0)
WAN25_EDIT_SIZE = SizeRule("pixels", min_px=768 * 768, max_px=1280 * 1280, max_aspect=4.0)


_QWEN_SG_BJ = ("beijing", "singapore")  # the Qwen models' regions [API §6]
# qwen-image-2.0 series: rate limits are not in the documented table [API §8]: none enforced.
_QWEN2 = {r: Limit() for r in _QWEN_SG_BJ}
# qwen-image-max: 2 requests per minute, sync concurrency unlimited [API §8].
_QWEN_MAX = {r: Limit(rps=2 / 60) for r in _QWEN_SG_BJ}
# qwen-image-plus, qwen-image: 2 requests per second, async concurrency 2 [API §8].
_QWEN_PLUS = {r: Limit(rps=2, tasks=2) for r in _QWEN_SG_BJ}
# Wan task submissions per second / concurrent tasks, per region [API §8].
_WAN26 = {"beijing": Limit(1, 5), "singapore": Limit(5, 5), "virginia": Limit(5, 5)}
_WAN25 = {"beijing": Limit(5, 5), "singapore": Limit(5, 5)}
_WAN22 = {"beijing": Limit(2, 2), "singapore": Limit(2, 2)}


def _qwen(name: str, endpoints: frozenset[str], size: SizeRule, default: str, n_max: int,
          regions: dict[str, Limit]) -> Model:
    return Model(name, "qwen", endpoints, size, default, n_max, 1, 800, regions)


def _edit(name: str, n_max: int, max_images: int) -> Model:
    # sync multimodal endpoint only; output about the input's aspect, 512*512..2048*2048 px
    return Model(name, "qwen", _A, QWEN_FREE, "1024*1024", n_max, 1, 800, _QWEN_PLUS,
                 max_images=max_images, image_rule=QWEN_EDIT_IMAGES)


def _wan_edit(name: str, endpoints: frozenset[str], size: SizeRule, max_images: int,
              images: ImageRule, regions: tuple[str, ...], tiers: dict[str, int]) -> Model:
    # n 1..4 in editing mode [EDIT]; 4 when omitted is in third-party copies only (the
    # emulator follows them, as for wan t2i). Prompt <= 2000 [EDIT "指令遵循"]. No rate limit:
    # the stored rate-limit page does not list these models.
    return Model(name, "wan", endpoints, size, "1280*1280", 4, 4, 2000, {r: Limit() for r in regions},
                 max_images=max_images, image_rule=images, size_tiers=tiers,
                 default_tier="1K" if "1K" in tiers else "")


def _wan(name: str, endpoints: frozenset[str], size: SizeRule, prompt_max: int,
         regions: dict[str, Limit], legacy_sync: bool = False) -> Model:
    default = "1280*1280" if size is WAN_PIXELS else "1024*1024"
    # Wan: n 1..4, and 4 when omitted [API §4.2, §4.3].
    return Model(name, "wan", endpoints, size, default, 4, 4, prompt_max, regions, legacy_sync)


_A = frozenset({SYNC})
_AC = frozenset({SYNC, LEGACY})
_AB = frozenset({SYNC, ASYNC})
_C = frozenset({LEGACY})

# The model matrix [API §6]: endpoints, sizes, n, prompt limits, regions.
_ALL = (
    # 2.0 series default size: 2048*2048 [T2I, the newer page]
    _qwen("qwen-image-2.0-pro", _A, QWEN_FREE, "2048*2048", 6, _QWEN2),
    _qwen("qwen-image-2.0-pro-2026-04-22", _A, QWEN_FREE, "2048*2048", 6, _QWEN2),
    _qwen("qwen-image-2.0-pro-2026-03-03", _A, QWEN_FREE, "2048*2048", 6, _QWEN2),
    _qwen("qwen-image-2.0", _A, QWEN_FREE, "2048*2048", 6, _QWEN2),
    _qwen("qwen-image-2.0-2026-03-03", _A, QWEN_FREE, "2048*2048", 6, _QWEN2),
    # max/plus default size: 1664*928 [T2I]
    _qwen("qwen-image-max", _A, QWEN_FIXED, "1664*928", 1, _QWEN_MAX),
    _qwen("qwen-image-max-2025-12-30", _A, QWEN_FIXED, "1664*928", 1, _QWEN_MAX),
    # async only for qwen-image-plus and qwen-image [T2I "Calling methods"; API §2]
    _qwen("qwen-image-plus", _AC, QWEN_FIXED, "1664*928", 1, _QWEN_PLUS),
    _qwen("qwen-image-plus-2026-01-09", _A, QWEN_FIXED, "1664*928", 1, _QWEN_PLUS),
    _qwen("qwen-image", _AC, QWEN_FIXED, "1664*928", 1, _QWEN_PLUS),
    # "All Wan text-to-image models support asynchronous calls. The wan2.6-t2i model also
    # supports synchronous calls." [T2I]
    _wan("wan2.6-t2i", _AB, WAN_PIXELS, 2100, _WAN26),
    _wan("wan2.5-t2i-preview", _C, WAN_PIXELS, 2000, _WAN25),
    _wan("wan2.2-t2i-plus", _C, WAN_SIDES, 500, _WAN22, legacy_sync=True),
    _wan("wan2.2-t2i-flash", _C, WAN_SIDES, 500, _WAN22, legacy_sync=True),
    # wanx2.1 in Beijing is named wan2.1 in Singapore [API §4.3, §6]
    _wan("wanx2.1-t2i-plus", _C, WAN_SIDES, 500, {"beijing": Limit(2, 2)}),
    _wan("wanx2.1-t2i-turbo", _C, WAN_SIDES, 500, {"beijing": Limit(2, 2)}),
    _wan("wan2.1-t2i-plus", _C, WAN_SIDES, 500, {"singapore": Limit(2, 2)}),
    _wan("wan2.1-t2i-turbo", _C, WAN_SIDES, 500, {"singapore": Limit(2, 2)}),
    _wan("wanx2.0-t2i-turbo", _C, WAN_SIDES, 800, {"beijing": Limit(2, 2)}),
    # qwen-image-edit: one input image, n = 1; -plus: 1..3 images, n 1..6 [edit API reference]
    _edit("qwen-image-edit", 1, 1),
    _edit("qwen-image-edit-plus", 6, 3),
    # wan2.6-image: sync (A) and async (B), messages with 1..4 image items in editing mode; the
    # reference lists Beijing, Singapore and Virginia hosts for it [EDIT; wan2.6-image API ref]
    _wan_edit("wan2.6-image", frozenset({SYNC, ASYNC}), WAN26_EDIT_SIZE, 4, WAN26_EDIT_IMAGES,
              ("beijing", "singapore", "virginia"), {"1K": 1280 * 1280, "2K": 2048 * 2048}),
    # wan2.5-i2i-preview: the image2image task only, 1..3 images; Beijing and Singapore [EDIT]
    _wan_edit("wan2.5-i2i-preview", frozenset({I2I}), WAN25_EDIT_SIZE, 3, WAN25_EDIT_IMAGES,
              ("beijing", "singapore"), {"": 1280 * 1280}),
)

MODELS: dict[str, Model] = {m.name: m for m in _ALL}


def model_in(name: str, region: str) -> Model | None:
    """The model if `region` offers it; None answers "Model not exist" like the service [3P]."""
    model = MODELS.get(name)
    return model if model is not None and region in model.regions else None


def documented_limit(model: Model, region: str) -> Limit:
    return model.regions.get(region, Limit())


__all__ = ["API_PREFIX", "ASYNC", "I2I", "ImageRule", "LEGACY", "MODELS", "NEGATIVE_PROMPT_MAX", "REGIONS",
           "ROUTES", "SEED_MAX", "SYNC", "Limit", "Model", "SizeRule", "documented_limit",
           "model_in"]
