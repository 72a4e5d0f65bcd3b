"""The core records every stage passes along: a rendered `Request`, the `Target` that holds it
and its outputs, and the web `Variant`s derived from them. Imports nothing of imgbuild, so any
module may import it.

`Request` is serialised and restored by field name (`to_dict`/`from_dict`); the fields that
change pixels are listed once, in `PIXEL_FIELDS`, and the generation key, the lock, the image
metadata and the wire bodies all derive from that list.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

DERIVE_VERSION = "imgbuild-derive-1"
# one encoder: json.dumps makes a new one on every call that passes options
_compact = json.JSONEncoder(separators=(",", ":")).encode

#: every field of a Request that changes the pixels (`call` only picks an endpoint)
PIXEL_FIELDS = ("model", "prompt", "negative_prompt", "size", "n", "seed", "prompt_extend", "watermark")


@dataclass(frozen=True, slots=True)
class Request:
    """One concrete generation request, after templates, defaults and size resolution."""

    model: str
    prompt: str
    negative_prompt: str
    size: str  # "W*H", already legal for the model
    n: int
    seed: int
    prompt_extend: bool
    watermark: bool
    call: str | None = None  # "sync" | "async" | None (model default); never changes pixels
    # What each input image is, one identity string per input (set by the plan, see
    # plan/graph.py): part of the key when present, so an edit follows its inputs.
    inputs: tuple[str, ...] = ()
    # The input images themselves, as data URIs, attached by the executor just before the
    # provider call: never hashed, cached or serialised.
    images: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def width(self) -> int:
        return int(self.size.split("*")[0])

    @property
    def height(self) -> int:
        return int(self.size.split("*")[1])

    def pixel_fields(self) -> dict[str, object]:
        """Everything that changes the pixels: this is what the generation key hashes.
        `inputs` only when there are some, so targets without inputs keep their keys."""
        fields_ = {name: getattr(self, name) for name in PIXEL_FIELDS}
        if self.inputs:
            fields_["inputs"] = list(self.inputs)
        return fields_

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _REQUEST_FIELDS}
        data["inputs"] = list(self.inputs)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Request:
        """The inverse of `to_dict`; a missing or unknown field raises (TypeError/KeyError)."""
        unknown = data.keys() - _REQUEST_FIELDS
        if unknown:
            raise KeyError(f"unknown Request field(s): {sorted(unknown)}")
        return cls(**{**data, "inputs": tuple(data.get("inputs", ()))})


_REQUEST_FIELDS = frozenset(f.name for f in fields(Request)) - {"images"}


@dataclass(frozen=True, slots=True)
class Input:
    """One `inputs:` item after rendering: another target's first output, or a file of the
    repository (a posix path relative to the project root)."""

    kind: str  # "target" | "file"
    ref: str  # target name, or path

    def to_list(self) -> list[str]:
        return [self.kind, self.ref]


@dataclass(frozen=True, slots=True)
class Variant:
    source: str  # the original output it derives from (relative to output_dir)
    output: str
    format: str  # avif | webp | jpeg | png
    width: int
    height: int
    quality: int
    crop: tuple[int, int, int, int] | None  # box in source pixels, or None for the whole image

    def key(self, source_key: str) -> str:
        doc = [DERIVE_VERSION, source_key, self.format, self.width, self.height, self.quality,
               list(self.crop) if self.crop else None]
        return hashlib.sha256(_compact(doc).encode()).hexdigest()

    def to_list(self) -> list[Any]:
        return [self.source, self.output, self.format, self.width, self.height, self.quality,
                list(self.crop) if self.crop else None]

    @classmethod
    def from_list(cls, v: list[Any]) -> Variant:
        return cls(v[0], v[1], v[2], v[3], v[4], v[5], tuple(v[6]) if v[6] else None)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    request: Request
    outputs: tuple[str, ...]  # posix paths relative to output_dir, one per image (n)
    file: str  # spec file as displayed in messages
    line: int  # line of the spec's `- name:` item
    seed_derived: bool
    variants: tuple[Variant, ...] = ()  # web derivatives of the outputs
    alt: str | None = None
    notes: tuple[str, ...] = ()  # e.g. widths capped to avoid upscaling
    candidates: int = 1  # > 1: k originals to pick from; the output waits for `imgbuild accept`
    inputs: tuple[Input, ...] = ()  # images an edit model reads (see spec/graph.py)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def to_row(self, file: str) -> list[Any]:
        """The target as a JSON list, its spec file given as `file` (the plan cache stores it
        relative to the project, a build's spool as shown)."""
        return [self.name, self.request.to_dict(), list(self.outputs), file, self.line, self.seed_derived,
                [v.to_list() for v in self.variants], self.alt, list(self.notes), self.candidates,
                [i.to_list() for i in self.inputs]]

    @classmethod
    def from_row(cls, t: list[Any], file: str) -> Target:
        """The inverse of `to_row`; a row of another shape raises (TypeError/KeyError/IndexError)."""
        return cls(t[0], Request.from_dict(t[1]), tuple(t[2]), file, t[4], t[5],
                   tuple(Variant.from_list(v) for v in t[6]), t[7], tuple(t[8]), t[9],
                   tuple(Input(*i) for i in t[10]))




def closure(chosen: list[Target], everything: list[Target]) -> list[Target]:
    """`chosen` plus every target they read, directly or not, in `everything`'s order: what
    `build TARGET` needs, as `make target`. (Here, not in spec/graph.py, so that selecting
    targets costs no import.)"""
    if chosen is everything or not any(t.inputs for t in chosen):  # all: nothing to add
        return chosen
    by_name = {t.name: t for t in everything}
    want = {t.name for t in chosen}
    todo = list(want)
    while todo:
        for item in by_name[todo.pop()].inputs:
            if item.kind == "target" and item.ref in by_name and item.ref not in want:
                want.add(item.ref)
                todo.append(item.ref)
    return [t for t in everything if t.name in want]
