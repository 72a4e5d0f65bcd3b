"""The DashScope text-to-image model table: one record per model, the only place that knows
what each model accepts (endpoints, sizes, n, prompt length) and what it costs.

Source: ../shared/dashscope-api.md §4, §6, §8, §9 (docs as of 2026-02…06). Where the docs
disagree we always *send* the value explicitly (size, n, seed, prompt_extend, watermark), so
the server-side default never decides what is generated or billed.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

# Endpoints (§2). The provider maps these to URLs.
SYNC = "multimodal-generation"  # A: POST /services/aigc/multimodal-generation/generation
ASYNC = "image-generation"  # B: POST /services/aigc/image-generation/generation (+ async header)
LEGACY = "text2image"  # C: POST /services/aigc/text2image/image-synthesis (+ async header)
# C without the async header: the SDK's ImageSynthesis.sync_call, which it documents for
# wan2.2-t2i-flash/plus only (§6). The answer is the finished task, in one response.
LEGACY_SYNC = "text2image-sync"
# wan2.5-i2i-preview's edit task: like C (async header, `input.prompt`, task polling), with the
# input images as the `input.images` list [Wan 2.5 image edit API reference].
I2I = "image2image"

ENDPOINT_PATHS = {
    SYNC: "/services/aigc/multimodal-generation/generation",
    ASYNC: "/services/aigc/image-generation/generation",
    LEGACY: "/services/aigc/text2image/image-synthesis",
    LEGACY_SYNC: "/services/aigc/text2image/image-synthesis",
    I2I: "/services/aigc/image2image/image-synthesis",
}
SYNC_ENDPOINTS = frozenset({SYNC, LEGACY_SYNC})

# Regions, and the host of each, are in providers/dashscope/hosts.py; this is their order here.
REGIONS = ("beijing", "singapore", "virginia")

SEED_MAX = 2147483647
NEGATIVE_PROMPT_MAX = 500

# Aspect-ratio names users may write instead of "W*H".
RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4")

_QWEN_FIXED = {
    "16:9": "1664*928",
    "4:3": "1472*1104",
    "1:1": "1328*1328",
    "3:4": "1104*1472",
    "9:16": "928*1664",
}
_QWEN2_RECOMMENDED = {
    "16:9": "2688*1536",
    "9:16": "1536*2688",
    "1:1": "2048*2048",
    "4:3": "2368*1728",
    "3:4": "1728*2368",
}
_WAN_PIXELS_RECOMMENDED = {
    "1:1": "1280*1280",
    "3:4": "1104*1472",
    "4:3": "1472*1104",
    "9:16": "960*1696",
    "16:9": "1696*960",
}
_WAN_SIDE_RECOMMENDED = {
    "1:1": "1024*1024",
    "16:9": "1440*810",
    "9:16": "810*1440",
    "4:3": "1440*1080",
    "3:4": "1080*1440",
}


@dataclass(frozen=True)
class SizeRule:
    """How a model constrains `size`.

    kind "fixed": one of `allowed`; "pixels": width*height within [min_pixels, max_pixels]
    and, when given, aspect ratio within [1/max_aspect, max_aspect]; "side": each side
    within [min_side, max_side]. `multiple`: free sizes are sent rounded to it (see round).
    """

    kind: str
    allowed: tuple[str, ...] = ()
    min_pixels: int = 0
    max_pixels: int = 0
    max_aspect: float = 0.0
    min_side: int = 0
    max_side: int = 0
    multiple: int = 1

    @property
    def largest(self) -> int:
        """The most pixels a legal size has: what a result image may have, give or take."""
        if self.kind == "fixed":
            return max(w * h for w, h in (parse_size(a) or (0, 0) for a in self.allowed))
        if self.kind == "pixels":
            return self.max_pixels
        return self.max_side * self.max_side

    def round(self, width: int, height: int) -> tuple[int, int]:
        """The legal size nearest to width*height whose sides are multiples of `multiple`
        (unchanged when already so, or when no such size is legal)."""
        m = self.multiple
        if m <= 1 or (width % m == 0 and height % m == 0):
            return width, height
        near = [(rw, rh) for rw in _multiples_near(width, m) for rh in _multiples_near(height, m)
                if rw > 0 and rh > 0 and self.check(rw, rh) is None]
        if not near:
            return width, height
        return min(near, key=lambda s: (abs(s[0] - width) + abs(s[1] - height), s))

    def check(self, width: int, height: int) -> str | None:
        """None when legal, else a sentence saying what is legal."""
        size = f"{width}*{height}"
        if self.kind == "fixed":
            if size in self.allowed:
                return None
            return f"must be one of {', '.join(self.allowed)}"
        if self.kind == "pixels":
            px = width * height
            if not self.min_pixels <= px <= self.max_pixels:
                return (
                    f"width*height must be between {self.min_pixels:,} and {self.max_pixels:,} "
                    f"pixels ({_square(self.min_pixels)} to {_square(self.max_pixels)}); "
                    f"{size} has {px:,}"
                )
            if self.max_aspect and max(width / height, height / width) > self.max_aspect:
                return f"aspect ratio must be between 1:{self.max_aspect:g} and {self.max_aspect:g}:1"
            return None
        if not (self.min_side <= width <= self.max_side and self.min_side <= height <= self.max_side):
            return f"each side must be between {self.min_side} and {self.max_side} pixels"
        return None

    def describe(self) -> str:
        if self.kind == "fixed":
            return "one of " + ", ".join(self.allowed)
        if self.kind == "pixels":
            text = f"any W*H with {_square(self.min_pixels)} to {_square(self.max_pixels)} pixels"
            if self.max_aspect:
                text += f" and aspect ratio within 1:{self.max_aspect:g}..{self.max_aspect:g}:1"
            return text
        return f"any W*H with each side in [{self.min_side}, {self.max_side}]"


def _multiples_near(value: int, m: int) -> tuple[int, int]:
    low = value // m * m
    return (low, low + m)


def _square(px: int) -> str:
    side = math.isqrt(px)
    return f"{side}*{side}" if side * side == px else f"{px:,}"


@dataclass(frozen=True)
class InputRule:
    """What an edit model accepts as an input image (checked before anything is paid)."""

    formats: tuple[str, ...]  # PIL format names
    min_side: int
    max_side: int
    max_bytes: int  # of the image as sent, before base64
    max_aspect: float = 0.0  # longer side / shorter side at most this; 0 = any aspect

    def check(self, fmt: str | None, width: int, height: int, size: int) -> str | None:
        """None when acceptable, else a sentence with the limit that is broken."""
        if fmt not in self.formats:
            return f"is {fmt or 'not an image'}; {', '.join(self.formats)} are accepted"
        if not (self.min_side <= width <= self.max_side and self.min_side <= height <= self.max_side):
            return (f"is {width}*{height}; each side must be between {self.min_side} and "
                    f"{self.max_side} pixels")
        if size > self.max_bytes:
            return f"is {size:,} bytes; at most {self.max_bytes:,} are accepted"
        if self.max_aspect and max(width / height, height / width) > self.max_aspect:
            return (f"is {width}*{height}; its aspect ratio must be between "
                    f"1:{self.max_aspect:g} and {self.max_aspect:g}:1")
        return None


@dataclass(frozen=True)
class Model:
    name: str
    family: str  # "qwen-image" | "wan"
    endpoints: tuple[str, ...]  # the first is the default call mode
    size_rule: SizeRule
    default_size: str
    recommended: dict[str, str]  # aspect ratio -> recommended size
    n_max: int
    prompt_max: int
    price: dict[str, float]  # region -> CNY per successfully generated image (§9)
    n_default_server: int = 1  # what the server bills when n is omitted (we always send n)
    regions: tuple[str, ...] = ("beijing", "singapore")  # where it is offered (§6); price too
    rps: float = 2.0  # documented submissions per second (§8)
    concurrency: int = 0  # documented concurrent tasks; 0 = not limited for sync calls
    snapshot_of: str | None = None
    notes: str = ""
    # Edit models read images (`inputs:`); 0 = a text-to-image model, which takes none.
    max_inputs: int = 0
    input_rule: InputRule | None = None
    # The price is not from an official price page (the plan says so beside it).
    price_unverified: bool = False

    @property
    def default_call(self) -> str:
        return "sync" if self.endpoints[0] in SYNC_ENDPOINTS else "async"

    @property
    def max_pixels(self) -> int:
        return self.size_rule.largest

    def endpoint_for(self, call: str | None) -> str | None:
        """The endpoint used for call mode "sync"/"async" (None = default); None if unsupported."""
        if call is None:
            return self.endpoints[0]
        for ep in self.endpoints:
            if (ep in SYNC_ENDPOINTS) == (call == "sync"):
                return ep
        return None

    def calls(self) -> tuple[str, ...]:
        return tuple(sorted({"sync" if ep in SYNC_ENDPOINTS else "async" for ep in self.endpoints}))


_FIXED = SizeRule("fixed", allowed=tuple(_QWEN_FIXED.values()))
# Free sizes: the docs promise no exact size back and state no multiple, but every size they
# recommend for these models has sides that are multiples of 16 (the models' patch grid), so
# the plan rounds a W*H to the nearest legal multiple of 16 and the request asks for what the
# service can return. A result still a few pixels off is kept (see download.py).
_QWEN2 = SizeRule("pixels", min_pixels=512 * 512, max_pixels=2048 * 2048, multiple=16)
# The docs say "1280*1280 to 1440*1440 pixels" yet recommend 1104*1472 and 960*1696, which are
# slightly smaller; the service must accept its own recommendations, so the floor is the
# smallest recommended size.
_WAN_PX = SizeRule("pixels", min_pixels=1104 * 1472, max_pixels=1440 * 1440, max_aspect=4.0,
                   multiple=16)
# wan2.2 and older: the docs recommend 1440*810 themselves, so no multiple is imposed.
_WAN_SIDE = SizeRule("side", min_side=512, max_side=1440)


def _qwen2(name: str, price_bj: float, price_sg: float, snapshot_of: str | None = None) -> Model:
    return Model(
        name, "qwen-image", (SYNC,), _QWEN2, "2048*2048", _QWEN2_RECOMMENDED,
        n_max=6, prompt_max=800, price={"beijing": price_bj, "singapore": price_sg},
        rps=2 / 60, snapshot_of=snapshot_of,
        notes="2.0 series: rate limit undocumented; ~2 requests/minute observed",
    )


def _qwen_fixed(name: str, endpoints: tuple[str, ...], price_bj: float, price_sg: float,
                rps: float, concurrency: int = 0, snapshot_of: str | None = None) -> Model:
    return Model(
        name, "qwen-image", endpoints, _FIXED, "1664*928", _QWEN_FIXED,
        n_max=1, prompt_max=800, price={"beijing": price_bj, "singapore": price_sg},
        rps=rps, concurrency=concurrency, snapshot_of=snapshot_of,
    )


def _wan(name: str, endpoints: tuple[str, ...], rule: SizeRule, prompt_max: int,
         price: dict[str, float], rps: float, concurrency: int,
         regions: tuple[str, ...] = ("beijing", "singapore"), snapshot_of: str | None = None) -> Model:
    pixels = rule.kind == "pixels"
    return Model(
        name, "wan", endpoints, rule, "1280*1280" if pixels else "1024*1024",
        _WAN_PIXELS_RECOMMENDED if pixels else _WAN_SIDE_RECOMMENDED,
        n_max=4, n_default_server=4, prompt_max=prompt_max, price=price,
        regions=regions, rps=rps, concurrency=concurrency, snapshot_of=snapshot_of,
    )


# Qwen-Image-Edit (sync multimodal endpoint, `{"image": ...}` items beside the one text item):
# input JPG/PNG/BMP/TIFF/WEBP/GIF, each side 384..3072 px, at most 10 MB.
# The official qwen-image-edit API reference (help.aliyun.com, stored copy) confirms the models,
# the endpoint, that qwen-image-edit answers exactly 1 image at a size it chooses (no custom
# size) and that -plus answers 1..6 images; the input limits above and the 1..3 input images of
# -plus are only in third-party copies of that page (which call 384..3072 a *recommended*
# range), and the prices below in none: those stay UNVERIFIED. Check them against the Model
# Studio reference before trusting an estimate.
_EDIT_INPUT = InputRule(("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF"), 384, 3072, 10 * 2**20)
# Wan editing [the Model Studio guide "图像编辑 - 万相2.7/2.6/2.5" (stored copy), table 输入图像规格;
# docs.qwencloud.com wan26-image-gen-edit and wan25-general-image-editing]: JPEG, JPG, PNG
# without an alpha channel (not checked here), BMP, WEBP; at most 10 MB; wan2.6-image: sides
# 240..8000 px, any aspect, 1..4 images in editing mode; wan2.5-i2i-preview: sides 384..5000
# px, aspect within 1:4..4:1, 1..3 images.
_WAN26_INPUT = InputRule(("JPEG", "PNG", "BMP", "WEBP"), 240, 8000, 10 * 2**20)
_WAN25_INPUT = InputRule(("JPEG", "PNG", "BMP", "WEBP"), 384, 5000, 10 * 2**20, max_aspect=4.0)
# Output sizes [same guide, 设置输出图像分辨率]: wan2.6-image takes W*H with total pixels in
# [768*768, 2048*2048] and aspect 1:4..4:1, answering "the multiple of 16 near" the request
# (or a "1K"/"2K" tier following the last input's aspect, which imgbuild never sends: it always
# sends W*H); wan2.5-i2i-preview takes W*H with total pixels in [768*768, 1280*1280], aspect
# 1:4..4:1, and states no multiple.
_WAN26_EDIT = SizeRule("pixels", min_pixels=768 * 768, max_pixels=2048 * 2048, max_aspect=4.0,
                       multiple=16)
_WAN25_EDIT = SizeRule("pixels", min_pixels=768 * 768, max_pixels=1280 * 1280, max_aspect=4.0)


def _qwen_edit(name: str, n_max: int, max_inputs: int, price_bj: float, price_sg: float,
               snapshot_of: str | None = None) -> Model:
    return Model(
        name, "qwen-image-edit", (SYNC,), _QWEN2, "1024*1024", _QWEN2_RECOMMENDED,
        n_max=n_max, prompt_max=800, price={"beijing": price_bj, "singapore": price_sg},
        rps=2, concurrency=2, snapshot_of=snapshot_of, max_inputs=max_inputs,
        input_rule=_EDIT_INPUT, price_unverified=True,
        notes="input limits and price unverified (third-party copies of the reference only)",
    )


def _wan_edit(name: str, endpoints: tuple[str, ...], rule: SizeRule, max_inputs: int,
              input_rule: InputRule, regions: tuple[str, ...]) -> Model:
    # n 1..4 in editing mode [guide; docs.qwencloud.com]; what the service makes when n is
    # omitted is 4 in third-party copies only (imgbuild always sends n). Prompt <= 2000 chars,
    # negative_prompt <= 500 [guide, 指令遵循]. Prices: one copy of the Beijing console page
    # says 0.2 CNY per image for wan2.5-i2i-preview; nothing official was found for
    # wan2.6-image or for Singapore, so both use the wan2.6-t2i/wan2.5-t2i prices: UNVERIFIED.
    # Rate limits: not in the stored rate-limit page; the wan2.5/2.6 t2i figures (5 tasks/s,
    # 5 concurrent) are assumed, UNVERIFIED.
    return Model(
        name, "wan", endpoints, rule, "1280*1280", _WAN_PIXELS_RECOMMENDED,
        n_max=4, n_default_server=4, prompt_max=2000,
        price={r: p for r, p in (("beijing", 0.20), ("singapore", 0.220177), ("virginia", 0.20))
               if r in regions},
        regions=regions, rps=5, concurrency=5, max_inputs=max_inputs, input_rule=input_rule,
        price_unverified=True,
        notes="price, rate limits and server default n unverified",
    )


_ALL = (
    _qwen2("qwen-image-2.0-pro", 0.50, 0.550443),
    _qwen2("qwen-image-2.0-pro-2026-04-22", 0.50, 0.550443, "qwen-image-2.0-pro"),
    _qwen2("qwen-image-2.0-pro-2026-03-03", 0.50, 0.550443, "qwen-image-2.0-pro"),
    _qwen2("qwen-image-2.0", 0.20, 0.256873),
    _qwen2("qwen-image-2.0-2026-03-03", 0.20, 0.256873, "qwen-image-2.0"),
    _qwen_fixed("qwen-image-max", (SYNC,), 0.50, 0.550443, rps=2 / 60),
    _qwen_fixed("qwen-image-max-2025-12-30", (SYNC,), 0.50, 0.550443, rps=2 / 60,
                snapshot_of="qwen-image-max"),
    _qwen_fixed("qwen-image-plus", (SYNC, LEGACY), 0.20, 0.220177, rps=2, concurrency=2),
    _qwen_fixed("qwen-image-plus-2026-01-09", (SYNC,), 0.20, 0.220177, rps=2,
                snapshot_of="qwen-image-plus"),
    _qwen_fixed("qwen-image", (SYNC, LEGACY), 0.25, 0.256873, rps=2, concurrency=2),
    _wan("wan2.6-t2i", (ASYNC, SYNC), _WAN_PX, 2100,
         {"beijing": 0.20, "singapore": 0.220177, "virginia": 0.20}, rps=1, concurrency=5,
         regions=("beijing", "singapore", "virginia")),
    _wan("wan2.5-t2i-preview", (LEGACY,), _WAN_PX, 2000,
         {"beijing": 0.20, "singapore": 0.220177}, rps=5, concurrency=5),
    # async stays the default: sync is an SDK-only path for these two (§6)
    _wan("wan2.2-t2i-plus", (LEGACY, LEGACY_SYNC), _WAN_SIDE, 500,
         {"beijing": 0.20, "singapore": 0.366962}, rps=2, concurrency=2),
    _wan("wan2.2-t2i-flash", (LEGACY, LEGACY_SYNC), _WAN_SIDE, 500,
         {"beijing": 0.14, "singapore": 0.183481}, rps=2, concurrency=2),
    _wan("wanx2.1-t2i-plus", (LEGACY,), _WAN_SIDE, 500, {"beijing": 0.20}, rps=2, concurrency=2,
         regions=("beijing",)),
    _wan("wanx2.1-t2i-turbo", (LEGACY,), _WAN_SIDE, 500, {"beijing": 0.14}, rps=2, concurrency=2,
         regions=("beijing",)),
    _wan("wan2.1-t2i-plus", (LEGACY,), _WAN_SIDE, 500, {"singapore": 0.366962}, rps=2,
         concurrency=2, regions=("singapore",)),
    _wan("wan2.1-t2i-turbo", (LEGACY,), _WAN_SIDE, 500, {"singapore": 0.183481}, rps=2,
         concurrency=2, regions=("singapore",)),
    _wan("wanx2.0-t2i-turbo", (LEGACY,), _WAN_SIDE, 800, {"beijing": 0.04}, rps=2, concurrency=2,
         regions=("beijing",)),
    # image editing (`inputs:`), last: the text-to-image models lead every list.
    # Prices UNVERIFIED (see _EDIT_INPUT): plan shows them, but they are not from the docs.
    _qwen_edit("qwen-image-edit", 1, 1, 0.30, 0.330266),
    _qwen_edit("qwen-image-edit-plus", 6, 3, 0.20, 0.220177),
    # wan2.6-image: sync is "recommended for most scenarios" [wan2.6-image API reference], so
    # it is the default; the async task (B) is there for `call: async`.
    _wan_edit("wan2.6-image", (SYNC, ASYNC), _WAN26_EDIT, 4, _WAN26_INPUT,
              ("beijing", "singapore", "virginia")),
    # wan2.5-i2i-preview: async only ("HTTP requests only support asynchronous processing")
    _wan_edit("wan2.5-i2i-preview", (I2I,), _WAN25_EDIT, 3, _WAN25_INPUT, ("beijing", "singapore")),
)

MODELS: dict[str, Model] = {m.name: m for m in _ALL}
DEFAULT_MODEL = "qwen-image-plus"
CURRENCY = "CNY"


def get(name: str) -> Model | None:
    return MODELS.get(name)


def offered_in(region: str, *, snapshots: bool = True) -> list[str]:
    """The models `region` offers, in table order (§6); snapshots only if asked for."""
    return [m.name for m in _ALL if region in m.regions and (snapshots or m.snapshot_of is None)]


def region_problem(model: Model, region: str, source: str = "") -> str | None:
    """None if `region` offers `model`, else a sentence naming what it does offer. `source`
    says where the region was chosen, e.g. "region: singapore at imgbuild.yaml:2"."""
    if region in model.regions:
        return None
    # wanx2.1-* in Beijing is wan2.1-* in Singapore: point at the regional name when there is one
    twin = next((m for m in offered_in(region) if _unprefixed(m) == _unprefixed(model.name)), None)
    offers = ", ".join(offered_in(region, snapshots=False))
    if len(offered_in(region)) > len(offered_in(region, snapshots=False)):
        offers += ", and dated snapshots of some"
    where = f" ({source})" if source else ""
    there = f"; there it is called {twin}" if twin else ""
    return f"{model.name} is not offered in the {region} region{where}{there}. {region} offers: {offers}"


def _unprefixed(name: str) -> str:
    return name.replace("wanx", "wan", 1)


def suggest(name: str) -> str | None:
    close = difflib.get_close_matches(name, MODELS, n=1, cutoff=0.5)
    return close[0] if close else None


def parse_size(text: str) -> tuple[int, int] | None:
    """'1328*1328' -> (1328, 1328); also accepts 'x' as separator. None if not W*H."""
    for sep in ("*", "x", "X", "×"):
        if sep in text:
            w, _, h = text.partition(sep)
            if w.strip().isdigit() and h.strip().isdigit():
                return int(w), int(h)
            return None
    return None


def resolve_size(model: Model, text: str | None) -> tuple[str | None, str | None]:
    """Turn a spec `size` (None, 'W*H' or 'A:B') into a legal 'W*H' for `model`.

    Returns (size, None) or (None, error message naming the legal values).
    """
    if text is None:
        return model.default_size, None
    text = str(text).strip()
    if ":" in text:
        if text in model.recommended:
            return model.recommended[text], None
        ratio = _parse_ratio(text)
        if ratio is None:
            return None, f"'{text}' is not an aspect ratio like 16:9"
        if model.size_rule.kind == "fixed":
            legal = ", ".join(f"{k} ({v})" for k, v in model.recommended.items())
            return None, f"{model.name} has no size for aspect ratio {text}; use one of {legal}"
        size = _fit_ratio(model, *ratio)
        if size is None:
            return None, f"aspect ratio {text} is outside what {model.name} allows ({model.size_rule.describe()})"
        return size, None
    parsed = parse_size(text)
    if parsed is None:
        return None, f"'{text}' is not a size: write W*H (e.g. {model.default_size}) or an aspect ratio (e.g. 16:9)"
    w, h = parsed
    problem = model.size_rule.check(w, h)
    if problem:
        return None, f"{w}*{h} is not a legal size for {model.name}: {problem}"
    w, h = model.size_rule.round(w, h)
    return f"{w}*{h}", None


def request_problems(model: Model, prompt: str, negative_prompt: str, n: int,
                     call: str | None, seed: int | None = None) -> list[tuple[str, str]]:
    """(field, message) for every way a rendered request breaks the model's documented rules."""
    problems = []
    if not 1 <= n <= model.n_max:
        allowed = "1 only" if model.n_max == 1 else f"1 to {model.n_max}"
        problems.append(("n", f"n={n} is not allowed for {model.name} ({allowed})"))
    elif seed is not None and seed + n - 1 > SEED_MAX:
        problems.append(("seed", f"seed {seed} with n={n}: image i is drawn from seed + i, so seed "
                         f"+ n - 1 must be at most {SEED_MAX} (use a seed of at most {SEED_MAX - n + 1})"))
    if len(prompt) > model.prompt_max:
        problems.append(("prompt", f"prompt is {len(prompt)} characters after rendering; {model.name} "
                         f"accepts at most {model.prompt_max} (the service would cut the rest)"))
    if len(negative_prompt) > NEGATIVE_PROMPT_MAX:
        problems.append(("negative_prompt", f"negative_prompt is {len(negative_prompt)} characters after "
                         f"rendering; at most {NEGATIVE_PROMPT_MAX} are accepted"))
    if call is not None and model.endpoint_for(call) is None:
        problems.append(("call", f"{model.name} has no {call} call mode (it supports: {', '.join(model.calls())})"))
    return problems


def inputs_problem(model: Model, count: int) -> str | None:
    """None when `model` takes `count` input images, else why not."""
    if model.max_inputs == 0 and count:
        edits = ", ".join(m.name for m in _ALL if m.max_inputs and m.snapshot_of is None)
        return f"{model.name} makes images from text only and takes no inputs; edit models: {edits}"
    if model.max_inputs and not 1 <= count <= model.max_inputs:
        allowed = "1 image" if model.max_inputs == 1 else f"1 to {model.max_inputs} images"
        return f"{model.name} edits {allowed}; `inputs:` has {count}"
    return None


def _parse_ratio(text: str) -> tuple[int, int] | None:
    a, _, b = text.partition(":")
    if a.strip().isdigit() and b.strip().isdigit() and int(a) > 0 and int(b) > 0:
        return int(a), int(b)
    return None


def _fit_ratio(model: Model, a: int, b: int) -> str | None:
    """The largest size with aspect a:b (sides multiples of 16) that the model accepts."""
    rule = model.size_rule
    if rule.kind == "pixels":
        target = rule.max_pixels
    else:
        target = rule.max_side * rule.max_side
    scale = math.sqrt(target / (a * b))
    w, h = int(a * scale) // 16 * 16, int(b * scale) // 16 * 16
    if rule.kind == "side":
        f = min(1.0, rule.max_side / max(w, h))
        w, h = int(w * f) // 16 * 16, int(h * f) // 16 * 16
    if w <= 0 or h <= 0 or rule.check(w, h):
        return None
    return f"{w}*{h}"


def price(model: Model, region: str) -> float | None:
    """CNY per image in `region`'s own price table; None when that table has no price (a price
    from another region would be a guess)."""
    return model.price.get(region)


def is_sync_endpoint(endpoint: str) -> bool:
    return endpoint in SYNC_ENDPOINTS


__all__ = [
    "ASYNC", "CURRENCY", "DEFAULT_MODEL", "ENDPOINT_PATHS", "I2I", "LEGACY", "LEGACY_SYNC", "MODELS",
    "Model", "NEGATIVE_PROMPT_MAX", "RATIOS", "REGIONS", "SEED_MAX", "SYNC", "SYNC_ENDPOINTS",
    "SizeRule", "get", "is_sync_endpoint", "offered_in", "parse_size", "price", "region_problem",
    "request_problems", "resolve_size", "suggest",
]
