"""Expand image specs into concrete targets: layer vars and defaults, multiply out matrices,
render the Jinja2 templates, resolve sizes and check every target against the model table.

Pure apart from reading templates and matrix data files. Problems are collected, never raised
one at a time, so a run reports every mistake at once.
"""
from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import posixpath
import re
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgbuild.spec import catalogue as models
from imgbuild.spec import graph, yamlio
from imgbuild.images.derive import DEFAULT_OUTPUTS, FORMAT_EXT, plan_variants
from imgbuild.errors import Problem, SpecError
from imgbuild.spec.project import Project, SpecFile, describe_path, display_path, load_document
from imgbuild.spec.sandbox import MAX_TEMPLATE_VALUE, guarded_sandbox, printable
from imgbuild.spec.types import Input, Request, Target, Variant

if TYPE_CHECKING:
    from imgbuild.store.spool import Spool

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
BUILTIN_DEFAULTS: dict[str, Any] = {
    "model": models.DEFAULT_MODEL,
    "n": 1,
    "candidates": 1,
    "negative_prompt": "",
    # The API defaults to true; we default to false so that the prompt in the spec is the
    # prompt generated, and a rebuild asks for the same thing.
    "prompt_extend": False,
    "watermark": False,
}
_TEMPLATED = ("name", "prompt", "negative_prompt", "size", "output")
MAX_TARGETS_PER_SPEC = 100_000  # default of the project file's max_targets_per_spec
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never in names or paths (NUL fails every syscall)
_DRIVE = re.compile(r"[A-Za-z]:")  # C:... is absolute on Windows


def derive_seed(name: str) -> int:
    """Seed for specs that give none: first 4 bytes of sha256(name), big-endian, mod 2**31."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:4], "big") % (models.SEED_MAX + 1)


def slug(value: object) -> str:
    text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class _Renderer:
    """One sandboxed Jinja2 environment per run; templates compiled once per distinct text.
    Jinja itself (~35 ms to import, more to set up) is only loaded for a template that is more
    than text, `{{ name }}` and `{% include %}`: many projects never need it."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.templates_dir = display_path(project.templates_dir)
        self._env: Any = None
        self._globals: dict[str, Any] = {}
        self._compiled: dict[str, Any] = {}
        self._simple: dict[str, Parts | None] = {}
        self._partials: dict[str, Parts | None] = {}

    @property
    def env(self) -> Any:
        if self._env is None:
            self._env = self._jinja()
            # Jinja copies its globals (a ChainMap) into every new context: a third of the cost
            # of expanding 100k targets. One plain copy, merged with each context, does the same.
            self._globals = dict(self._env.globals)
        return self._env

    def _jinja(self) -> Any:
        import jinja2

        project = self.project
        read = project.read_files

        class _Loader(jinja2.FileSystemLoader):
            def get_source(self, environment: Any, template: str) -> Any:
                source = super().get_source(environment, template)
                if not project.readable(Path(source[1])):  # a link to ~/.ssh/id_rsa, say
                    raise jinja2.TemplateNotFound(f"{template} (it links outside the repository)")
                # partials shape the plan too: keyed by the path as read, hashed as read
                read[source[1]] = hashlib.sha256(source[0].encode("utf-8")).hexdigest()
                return source

        env = guarded_sandbox()(
            undefined=jinja2.StrictUndefined, loader=_Loader(str(project.templates_dir)),
            autoescape=False, keep_trailing_newline=False,
            # one environment per expansion: a partial read once is not stat()ed again per include
            auto_reload=False,
        )
        env.filters["slug"] = slug
        return env

    def render(self, text: str, context: dict[str, Any]) -> str:
        if "{" not in text:  # fast path: most sizes and many names are plain text
            return text
        parts = self._simple.get(text, False)
        if parts is False:
            parts = self._simple[text] = substitution_parts(text)
        if parts is not None:
            out = self._substitute(parts, context)
            if out is not None:
                return out
        template = self._compiled.get(text)
        if template is None:
            template = self._compiled[text] = self.env.from_string(text)
        self.env.steps = 0
        out: list[str] = []
        size = 0
        chunks = template.root_render_func(template.new_context({**self._globals, **context}, shared=True))
        for chunk in chunks:  # streamed, so a loop cannot grow it unbounded
            size += len(chunk)
            if size > MAX_TEMPLATE_VALUE:
                from jinja2.exceptions import SecurityError

                raise SecurityError(f"the rendered text would exceed {MAX_TEMPLATE_VALUE:,} characters")
            out.append(chunk)
        return "".join(out)

    def _substitute(self, parts: Parts, context: dict[str, Any], depth: int = 0) -> str | None:
        """The text of a substitution-only template, exactly as Jinja renders it (the same
        finalize guard and str() per value, a partial read through the same loader); None to let
        Jinja render it (and raise its error)."""
        out: list[str] = []
        for literal, ref in parts:
            out.append(literal)
            if ref is None:
                continue
            if isinstance(ref, tuple):  # {% include %}: the partial sees the same variables
                partial = self._partial(ref[0]) if depth < 8 else None
                text = None if partial is None else self._substitute(partial, context, depth + 1)
                if text is None:
                    return None
                out.append(text)
            elif ref not in context:  # undefined, or a global: Jinja's business
                return None
            else:
                value = context[ref]
                if type(value) is not str:  # most values are text: no call for them
                    if not printable(value):  # Jinja refuses it, with its message
                        return None
                    value = str(value)
                out.append(value)
        text = "".join(out)
        return text if len(text) <= MAX_TEMPLATE_VALUE else None

    def _partial(self, name: str) -> Parts | None:
        """A partial's parts, read once per expansion through the loader Jinja uses (which
        refuses links out of the repository and records the file read); None if it cannot be
        read or is more than substitutions."""
        if name not in self._partials:
            source = self._partial_source(name)
            self._partials[name] = None if source is None else substitution_parts(source)
        return self._partials[name]

    def _partial_source(self, name: str) -> str | None:
        """A partial's text, found, refused and recorded exactly as the Jinja loader does it
        (jinja2.FileSystemLoader, then the repository check), without loading Jinja; None for
        anything it would refuse or fail on, which Jinja then reports in its own words."""
        pieces = []
        for piece in name.split("/"):
            if os.sep in piece or (os.altsep and os.altsep in piece) or piece == os.pardir:
                return None
            if piece and piece != ".":
                pieces.append(piece)
        filename = os.path.normpath(posixpath.join(str(self.project.templates_dir), *pieces))
        if not os.path.isfile(filename) or not self.project.readable(Path(filename)):
            return None
        try:
            with open(filename, encoding="utf-8") as f:  # text mode, as Jinja: \r\n read as \n
                source = f.read()
        except (OSError, UnicodeDecodeError):
            return None
        self.project.read_files[filename] = hashlib.sha256(source.encode("utf-8")).hexdigest()
        return source

    def explain(self, error: Exception, context: dict[str, Any]) -> str:
        """A one-line, user-facing reason for a template failure."""
        import jinja2
        from jinja2.exceptions import SecurityError

        if isinstance(error, jinja2.TemplateNotFound):
            return f"template '{error.name}' not found in {self.templates_dir}/"
        if isinstance(error, jinja2.TemplateSyntaxError):
            where = f" (in {error.name})" if error.name else ""
            return f"template syntax error on template line {error.lineno}{where}: {error.message}"
        if isinstance(error, SecurityError):
            return f"template refused by the sandbox: {error}"
        if isinstance(error, jinja2.UndefinedError):
            m = re.match(r"'([^']+)' is undefined", str(error))
            if m:
                name = m.group(1)
                known = sorted(k for k in context if not k.startswith("_"))
                hint = difflib.get_close_matches(name, known, n=1)
                tail = f" (did you mean '{hint[0]}'?)" if hint else f"; defined here: {', '.join(known)}"
                return f"undefined variable '{name}'{tail}"
            # values from YAML are imgbuild's position-keeping containers: name them plainly
            text = re.sub(r"'imgbuild(?:\.\w+)*\.yamlio\.Loc(Dict|List) object'",
                          lambda m: "the mapping" if m.group(1) == "Dict" else "the list", str(error))
            attr = re.search(r"has no attribute '([^']+)'", text)
            if attr:
                keys = sorted({str(k) for v in context.values() if isinstance(v, dict) for k in v})
                hint = difflib.get_close_matches(attr.group(1), keys, n=1)
                if hint:
                    text += f" (did you mean '{hint[0]}'?)"
            return f"undefined value: {text}"
        return f"template error: {type(error).__name__}: {error}"


_SUBSTITUTION = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}"
                           r"|\{%\s*include\s+(['\"])([^'\"\\{}%\r\n]+)\2\s*%\}")
# names Jinja reads as constants, operators or its own objects, never as a context variable
_NOT_VARIABLES = frozenset({"true", "false", "none", "True", "False", "None", "and", "or", "not",
                            "in", "is", "if", "else", "loop", "self", "caller", "varargs", "kwargs"})
# a part: (literal text, then a variable name | (a partial's name,) | None at the end)
Parts = tuple[tuple[str, "str | tuple[str] | None"], ...]


def substitution_parts(text: str) -> Parts | None:
    """A template made only of text, `{{ name }}` and `{% include 'partial' %}` (most prompts,
    names and output paths), as parts rendered without compiling it; None for anything else
    (another tag, a filter, an expression, a stray brace, `{{-`), which Jinja renders. The text
    is taken as Jinja's lexer takes it: newlines normalised to \\n, one trailing newline
    dropped (keep_trailing_newline=False)."""
    lines = re.split(r"\r\n|\r|\n", text)
    if lines[-1] == "":
        del lines[-1]
    source = "\n".join(lines)
    parts: list[tuple[str, str | tuple[str] | None]] = []
    pos = 0
    for m in _SUBSTITUTION.finditer(source):
        literal = source[pos:m.start()]
        if "{" in literal or "}" in literal or m.group(1) in _NOT_VARIABLES:
            return None
        parts.append((literal, m.group(1) or (m.group(3),)))
        pos = m.end()
    tail = source[pos:]
    if "{" in tail or "}" in tail:
        return None
    parts.append((tail, None))
    return tuple(parts)


def _line_in_block(file: SpecFile, path: list[Any], text: str, message: str) -> tuple[int, int] | None:
    """Where in a block scalar (`prompt: |`) the failing name is, rather than at `prompt:`."""
    m = re.search(r"(?:variable|attribute) '([^']+)'", message)
    if not m or "\n" not in text:
        return None
    line, col = yamlio.locate(file.data, path)
    try:
        source = file.path.read_text("utf-8").splitlines()
    except OSError:
        return None
    if not (0 < line <= len(source)) or not source[line - 1][col - 1:].lstrip().startswith(("|", ">")):
        return None  # a plain or quoted scalar: its lines do not map one to one
    pattern = re.compile(r"\b" + re.escape(m.group(1)) + r"\b")
    key_indent = len(source[line - 1]) - len(source[line - 1].lstrip())
    for offset, row in enumerate(source[line:], start=1):
        if row.strip() and len(row) - len(row.lstrip()) <= key_indent:
            break  # the block ended
        hit = pattern.search(row)
        if hit:
            return line + offset, hit.start() + 1
    return None


class _Expander:
    def __init__(self, project: Project, into: Any = None) -> None:
        self.project = project
        self.problems: list[Problem] = []
        self.repeats: dict[tuple[str, int, int, str], list[Any]] = {}  # -> [index, count, where]
        self.renderer = _Renderer(project)
        # a list, or a build's spool (store/spool.py): past its first few, targets wait on disk
        self.targets: Any = [] if into is None else into
        # Claims live until every spec is expanded. Their values are shared, not made per target
        # (a "file:line" per spec, a target's own name): 50k targets' claims held ~160 bytes of
        # text each, and the holes they left outlasted them in the build's memory.
        self.names: dict[str, str] = {}  # name -> where first defined ("file:line")
        # (index in targets, file, spec path, label, [(item index, rendered item)]): `inputs:`
        self.links: list[tuple[int, SpecFile, list[Any], str, list[tuple[int, str]], Any]] = []
        self.paths: dict[str, str] = {}  # output -> name of the target that writes it
        self._wheres: dict[tuple[str, int], str] = {}
        self._sizes: dict[tuple[str, str | None], tuple[str | None, str | None, tuple[str, ...]]] = {}
        self._lines: dict[tuple[str, int], int] = {}
        self._index: dict[str, int] | None = None  # name -> position in targets, once inputs are linked
        settings = project.settings
        self.project_vars = dict(settings.get("vars", {}))
        self.project_defaults = dict(settings.get("defaults", {}))
        # Model x region is checked here, before anything is priced or sent (§6).
        self.region = str(settings.get("region", "beijing"))
        main = project.files[0] if project.files else None
        if main is not None and "region" in main.data:
            line = yamlio.locate(main.data, ["region"])[0]
            self.region_source = f"region: {self.region} at {main.display}:{line}"
        else:
            self.region_source = "region: beijing, the default; set `region:` in the project file"

    def line_of(self, file: SpecFile, base: list[Any]) -> int:
        """Line of the spec at `base` (`images`, i): the same for each of its matrix targets."""
        key = (file.display, base[1])
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = yamlio.locate(file.data, base)[0]
        return line

    def where_of(self, file: SpecFile, line: int) -> str:
        key = (file.display, line)
        text = self._wheres.get(key)
        if text is None:
            text = self._wheres[key] = f"{file.display}:{line}"
        return text

    def owner(self, output: str) -> str | None:
        """Who already writes `output`: "images[name] (file:line)", or None."""
        name = self.paths.get(output)
        return None if name is None else f"images[{name}] ({self.names[name]})"

    def problem(self, file: SpecFile, path: list[Any], message: str, *, where: str | None = None,
                key: bool = False, at: tuple[int, int] | None = None) -> None:
        line, col = at or yamlio.locate(file.data, path, key=key)
        where = where if where is not None else describe_path(file.data, path)
        # One mistake in a matrix spec fails every row alike: say it once, with the count.
        same = (file.display, line, col, message)
        if same in self.repeats:
            self.repeats[same][1] += 1
            return
        self.repeats[same] = [len(self.problems), 1, where]
        self.problems.append(Problem(file.display, line, col, where, message))

    def count_repeats(self) -> None:
        for index, count, where in self.repeats.values():
            if count > 1:
                p = self.problems[index]
                self.problems[index] = Problem(p.file, p.line, p.col, f"{where} (and {count - 1} more "
                                               f"matrix row{'s' if count > 2 else ''})", p.message, p.hint)

    def run(self) -> list[Target]:
        refused: list[Problem] = []  # by the schema, in files read here (load_project's defer)
        for file in self.project.files:
            is_main = file is self.project.files[0]
            if file.data is None:  # read, checked and, once expanded, let go
                file = load_document(file.path, "specfile", refused, self.project.read_files)
            if file is None or refused:  # as before: no expansion once the schema refuses a file
                continue
            file_vars = {**self.project_vars, **({} if is_main else dict(file.data.get("vars", {})))}
            defaults = {**BUILTIN_DEFAULTS, **self.project_defaults,
                        **({} if is_main else dict(file.data.get("defaults", {})))}
            for i, spec in enumerate(file.data.get("images", [])):
                self.expand_spec(file, i, spec, file_vars, defaults)
        if refused:  # the schema's problems alone, as when every file was checked first
            raise SpecError(refused)
        self.link()
        return self.targets

    def link(self) -> None:
        """Resolve each rendered input to a target or a repository file; refuse cycles."""
        if not self.links:  # no target reads another: no cycle to look for
            return
        where: dict[str, tuple[SpecFile, list[Any], str]] = {}
        for index, file, base, label, items, model in self.links:
            inputs = [self.resolve_input(file, base + ["inputs", j], f"{label}.inputs[{j}]", text,
                                         model) for j, text in items]
            if all(inputs):
                target = self.targets[index]
                self.targets[index] = replace(target, inputs=tuple(i for i in inputs if i))
                where[target.name] = (file, base, label)
        cycle = graph.find_cycle(self.targets)
        if cycle is not None:
            file, base, label = where[cycle[0]]
            self.problem(file, base + ["inputs"], "inputs form a cycle: " + " -> ".join(cycle),
                         where=f"{label}.inputs")

    def resolve_input(self, file: SpecFile, path: list[Any], label: str, text: str,
                      model: Any) -> Input | None:
        if text in self.names:
            if self._index is None:  # made once: a scan per input is quadratic in a spool
                self._index = {t.name: i for i, t in enumerate(self.targets)}
            upstream = self.targets[self._index[text]] if text in self._index else None
            rule = model.input_rule
            why = (rule.check("PNG", upstream.request.width, upstream.request.height, 0)
                   if rule is not None and upstream is not None else None)
            if why:  # its size is known now; its bytes are checked again before sending
                self.problem(file, path, f"input '{text}' {why} by {model.name}", where=label)
                return None
            return Input(graph.TARGET, text)
        root = self.project.root.resolve()
        candidate = (root / text).resolve()
        if not candidate.is_relative_to(root):
            self.problem(file, path, f"input '{text}' is outside the project: an input is a target "
                         "or a file under the folder of imgbuild.yaml", where=label)
            return None
        if candidate.is_file():
            # the edit model's limits, before anything is paid (a file too large is refused
            # with the limit: imgbuild never re-encodes a repository file behind your back)
            rule = model.input_rule
            too_big = rule is not None and candidate.stat().st_size > rule.max_bytes
            data = b"" if too_big else candidate.read_bytes()
            # an input shapes the plan like a partial: the plan cache, the no-op snapshot and
            # `watch` see it change through this record
            self.project.read_files[str(candidate)] = hashlib.sha256(data).hexdigest()
            why = (f"is {candidate.stat().st_size:,} bytes; at most {rule.max_bytes:,} are accepted"
                   if too_big else graph.input_problem(rule, data) if rule else None)
            if why:
                self.problem(file, path, f"input '{text}' {why} by {model.name}", where=label)
                return None
            return Input(graph.FILE, candidate.relative_to(root).as_posix())
        hint = difflib.get_close_matches(text, list(self.names), n=1)
        self.problem(file, path, f"input '{text}' is neither a target nor a file of the project"
                     + (f" (did you mean '{hint[0]}'?)" if hint else ""), where=label)
        return None

    def expand_spec(self, file: SpecFile, i: int, spec: Any, file_vars: dict[str, Any],
                    defaults: dict[str, Any]) -> None:
        base = ["images", i]
        matrix = self.load_matrix(file, i, spec.get("matrix", {}))
        if matrix is None:
            return
        keys = list(matrix)
        count = math.prod(len(v) for v in matrix.values())
        limit = self.project.settings.get("max_targets_per_spec", MAX_TARGETS_PER_SPEC)
        if count > limit:  # refused before a single combination is built
            sizes = " × ".join(f"{len(matrix[k]):,} {k}" for k in keys)
            self.problem(file, base + ["matrix"], f"the matrix makes {count:,} targets ({sizes}), "
                         f"more than max_targets_per_spec ({limit:,}); split the spec, or raise "
                         "the limit in the project file", where=f"{describe_path(file.data, base)}.matrix")
            return
        spec_vars = {**file_vars, **dict(spec.get("vars", {}))}
        for combo in itertools.product(*(matrix[k] for k in keys)):
            context = {**spec_vars, **dict(zip(keys, combo))}
            self.expand_one(file, base, spec, context, defaults)

    def load_matrix(self, file: SpecFile, i: int, matrix: Any) -> dict[str, list[Any]] | None:
        out: dict[str, list[Any]] = {}
        for var, values in matrix.items():
            if isinstance(values, str):
                values = self.load_data_file(file, ["images", i, "matrix", var], values)
                if values is None:
                    return None
            out[var] = list(values)
        return out

    def load_data_file(self, file: SpecFile, path: list[Any], name: str) -> list[Any] | None:
        if _CONTROL.search(name):
            self.problem(file, path, f"matrix data {name!r} must not contain control characters")
            return None
        # Read through any link (not its resolved target), so the plan cache, keyed by this
        # path and the bytes read, notices the link being repointed.
        data_path = Path(os.path.normpath(file.path.parent / name))
        if not self.project.readable(data_path):
            self.problem(file, path, f"matrix data '{name}' is outside the repository "
                         f"({display_path(self.project.repo_root)}); imgbuild reads nothing outside it")
            return None
        try:
            data = yamlio.load_file(data_path, display_path(data_path), self.project.read_files)
        except yamlio.YamlError as e:
            if e.mark == (0, 0):
                self.problem(file, path, f"cannot load matrix data '{name}': {e.message}")
            else:
                self.problems.append(Problem(e.file, e.mark[0], e.mark[1], "", e.message, e.hint))
            return None
        if not isinstance(data, list) or not data:
            self.problem(file, path, f"matrix data file '{name}' must hold a non-empty list")
            return None
        return data

    def field(self, spec: Any, defaults: dict[str, Any], name: str) -> Any:
        return spec[name] if name in spec else defaults.get(name)

    def render_field(self, file: SpecFile, base: list[Any], spec: Any, name: str, text: str,
                     context: dict[str, Any], label: str | None) -> str | None:
        try:
            return self.renderer.render(text, context).strip()
        except Exception as e:  # any template failure is a user mistake, reported in place
            path = base + [name] if name in spec else base
            label = label if label is not None else describe_path(file.data, base)
            message = self.renderer.explain(e, context)
            self.problem(file, path, message, where=f"{label}.{name}",
                         at=_line_in_block(file, path, text, message) if name in spec else None)
            return None

    def sized(self, model: models.Model, written: str | None) -> tuple[str | None, str | None, tuple[str, ...]]:
        """(size, why not, rounding note) of a written size, worked out once per model and text:
        a matrix repeats them, and its targets (and their lock entries) share one size string."""
        key = (model.name, written)
        known = self._sizes.get(key)
        if known is None:
            size, why = models.resolve_size(model, written)
            known = self._sizes[key] = (size, why, _rounding_note(model, written, size) if size else ())
        return known

    def expand_one(self, file: SpecFile, base: list[Any], spec: Any, context: dict[str, Any],
                   defaults: dict[str, Any]) -> None:
        claimed = self.claim_name(file, base, spec, context)
        if claimed is None:
            return
        name, line = claimed
        label = f"images[{name}]"
        model_name = self.field(spec, defaults, "model")
        model = models.get(model_name)
        if model is None:  # only reachable through defaults of an include (schema checks the rest)
            hint = models.suggest(model_name)
            self.problem(file, base + ["model"], f"unknown model '{model_name}'"
                         + (f" (did you mean '{hint}'?)" if hint else ""), where=label)
            return
        context = {**context, "name": name, "model": model_name}

        def rendered(field_name: str) -> str | None:
            value = self.field(spec, defaults, field_name)
            if value is None:
                return None
            return self.render_field(file, base, spec, field_name, str(value), context, label)

        prompt = rendered("prompt")
        negative = rendered("negative_prompt") or ""
        written_size = rendered("size")
        size, why, rounding = self.sized(model, written_size)
        problems = [("size", why)] if why else []
        n = self.field(spec, defaults, "n")
        call = self.field(spec, defaults, "call")
        candidates = self.field(spec, defaults, "candidates")
        problems += self.request_problems(model, spec, prompt or "", negative, n, call, candidates)
        for field_name, message in problems:
            self.problem(file, base + [field_name] if field_name in spec else base, message,
                         where=f"{label}.{field_name}")
        outputs = self.render_outputs(file, base, spec, defaults, context, label, n)
        alt = rendered("alt")
        if problems or outputs is None or prompt is None or size is None:
            return
        derived = self.render_variants(file, base, spec, defaults, context, label, outputs, size)
        if derived is None:
            return
        variants, notes = derived
        notes = (*notes, *rounding)
        seed = spec.get("seed")
        if seed is None:  # image i uses seed + i: keep the last one in range
            seed = min(derive_seed(name), models.SEED_MAX - n + 1)
        request = Request(
            model=model.name, prompt=prompt, negative_prompt=negative, size=size, n=n,
            seed=seed,
            prompt_extend=bool(self.field(spec, defaults, "prompt_extend")),
            watermark=bool(self.field(spec, defaults, "watermark")), call=call,
        )
        self.targets.append(Target(name, request, outputs, file.display, line,
                                   spec.get("seed") is None, variants, alt, notes, candidates))
        self.pending_inputs(file, base, spec, context, label, model)

    def request_problems(self, model: models.Model, spec: Any, prompt: str, negative: str, n: int,
                         call: str | None, candidates: int) -> list[tuple[str, str]]:
        """(field, message) for every rule of the model table the rendered request breaks,
        the region's offer included (§6)."""
        problems = models.request_problems(model, prompt, negative, n, call, spec.get("seed"))
        why = models.region_problem(model, self.region, self.region_source)
        if why:
            problems.append(("model", why))
        if candidates > 1 and n > 1:  # one output to pin per target: a pick among n-image sets is ambiguous
            problems.append(("candidates", f"candidates: {candidates} needs n: 1 (n is {n}); "
                                           "use candidates to choose one image, or n for several outputs"))
        return problems

    def pending_inputs(self, file: SpecFile, base: list[Any], spec: Any, context: dict[str, Any],
                       label: str, model: Any) -> None:
        """Render `inputs:`; they are resolved once every target's name is known (`link`)."""
        items = spec.get("inputs") or []
        why = models.inputs_problem(model, len(items))
        if why:
            path = base + ["inputs"] if "inputs" in spec else base + ["model"] if "model" in spec else base
            self.problem(file, path, why, where=f"{label}.inputs")
            return
        rendered = []
        for j, item in enumerate(items):
            text = self.render_field(file, base + ["inputs", j], spec, "inputs", str(item), context,
                                     f"{label}.inputs[{j}]")
            if text is not None:
                rendered.append((j, text.strip()))
        if rendered:
            self.links.append((len(self.targets) - 1, file, base, label, rendered, model))

    def claim_name(self, file: SpecFile, base: list[Any], spec: Any,
                   context: dict[str, Any]) -> tuple[str, int] | None:
        """Render the target's name and reserve it; None (with a problem) if empty or taken."""
        name = self.render_field(file, base, spec, "name", spec["name"], context, None)
        if name is None:
            return None
        label = f"images[{name!r}]" if _CONTROL.search(name) else f"images[{name}]"
        if not name:
            self.problem(file, base + ["name"], "name renders to empty text", where=label)
            return None
        if _CONTROL.search(name):
            self.problem(file, base + ["name"], "name must not contain control characters "
                         "(NUL, newline, tab, escape…)", where=label)
            return None
        line = self.line_of(file, base)
        if name in self.names:
            other = self.names[name]
            hint = ("; a matrix spec's name must use its matrix variables"
                    if other == self.where_of(file, line) else "")
            self.problem(file, base + ["name"], f"duplicate name '{name}' (also defined at {other}){hint}",
                         where=label)
            return None
        self.names[name] = self.where_of(file, line)
        return name, line

    def render_variants(self, file: SpecFile, base: list[Any], spec: Any, defaults: dict[str, Any],
                        context: dict[str, Any], label: str, outputs: tuple[str, ...],
                        size: str) -> tuple[tuple[Variant, ...], tuple[str, ...]] | None:
        formats = self.field(spec, defaults, "formats")
        widths = self.field(spec, defaults, "widths")
        crop_spec = self.field(spec, defaults, "crop")
        if not formats and not widths and crop_spec is None:
            return (), ()
        crop = None
        if crop_spec is not None:
            aspect = crop_spec if isinstance(crop_spec, str) else crop_spec["aspect"]
            a, _, b = aspect.partition(":")
            focus = (0.5, 0.5) if isinstance(crop_spec, str) else tuple(crop_spec.get("focus", (0.5, 0.5)))
            if int(a) == 0 or int(b) == 0:
                self.problem(file, base + ["crop"] if "crop" in spec else base,
                             f"crop aspect '{aspect}' must have two positive numbers", where=f"{label}.crop")
                return None
            crop = ((int(a), int(b)), (float(focus[0]), float(focus[1])))
        template = self.field(spec, defaults, "outputs") or DEFAULT_OUTPUTS
        path = base + ["outputs"] if "outputs" in spec else base
        w, h = (int(x) for x in size.split("*"))
        variants: list[Variant] = []
        notes: list[str] = []
        failed = False
        for index, source in enumerate(outputs, start=1):
            def name(vw: int, vh: int, fmt: str, ext: str, stem: str, index: int = index) -> str:
                nonlocal failed
                ctx = {**context, "stem": stem, "width": vw, "height": vh, "format": fmt, "ext": ext, "index": index}
                text = self.render_field(file, base, spec, "outputs", template, ctx, label)
                failed = failed or text is None
                return text or ""

            found, why = plan_variants(source, w, h, formats=formats, widths=widths,
                                       quality=self.field(spec, defaults, "quality"), crop=crop,
                                       render_name=name)
            if failed:
                return None
            notes.extend(n for n in why if n not in notes)
            for v in found:
                norm = self.check_path(file, path, label, v.output, "outputs")
                if norm is None:
                    return None
                ext = posixpath.splitext(norm)[1].lower()
                if ext != FORMAT_EXT[v.format] and not (v.format == "jpeg" and ext == ".jpeg"):
                    self.problem(file, path, f"derivative '{norm}' must end in {FORMAT_EXT[v.format]} "
                                 f"for format {v.format}", where=f"{label}.outputs")
                    return None
                owner = self.owner(norm)
                if owner is not None or norm in outputs:
                    self.problem(file, path, f"derivative '{norm}' is also written by "
                                 f"{owner or 'this image'}; use {{{{ width }}}} and {{{{ ext }}}} in outputs",
                                 where=f"{label}.outputs")
                    return None
                self.paths[norm] = context["name"]
                variants.append(Variant(v.source, norm, v.format, v.width, v.height, v.quality, v.crop))
        return tuple(variants), tuple(notes)

    def check_path(self, file: SpecFile, path: list[Any], label: str, text: str, field_name: str) -> str | None:
        if _CONTROL.search(text):
            self.problem(file, path, f"{field_name} {text!r} must not contain control characters "
                         "(NUL, newline, tab, escape…)", where=f"{label}.{field_name}")
            return None
        norm = posixpath.normpath(text.replace("\\", "/"))
        if text.startswith(("/", "\\")) or _DRIVE.match(text) or norm == ".." or norm.startswith("../"):
            self.problem(file, path, f"{field_name} '{text}' points outside output_dir", where=f"{label}.{field_name}")
            return None
        return norm

    def render_outputs(self, file: SpecFile, base: list[Any], spec: Any, defaults: dict[str, Any],
                       context: dict[str, Any], label: str, n: int) -> tuple[str, ...] | None:
        template = self.field(spec, defaults, "output")
        path = base + ["output"] if "output" in spec else base
        outputs: list[str] = []
        for index in range(1, n + 1):
            if template is None:  # the default, spelled out without a render: most targets
                text: str | None = f"{context['name']}.png" if n == 1 else f"{context['name']}-{index}.png"
            else:
                text = self.render_field(file, base, spec, "output", template, {**context, "index": index}, label)
            if text is None:
                return None
            norm = self.check_path(file, path, label, text, "output")
            if norm is None:
                return None
            if posixpath.splitext(norm)[1].lower() not in FORMATS:
                self.problem(file, path, f"output '{text}' must end in .png, .jpg, .jpeg or .webp",
                             where=f"{label}.output")
                return None
            if norm in outputs:
                self.problem(file, path, f"every image of n={n} renders to '{norm}'; "
                             "use {{ index }} in output", where=f"{label}.output")
                return None
            owner = self.owner(norm)
            if owner is not None:
                self.problem(file, path, f"output '{norm}' is also written by {owner}", where=f"{label}.output")
                return None
            outputs.append(norm)
        for norm in outputs:
            self.paths[norm] = context["name"]
        return tuple(outputs)


def _rounding_note(model: models.Model, written: str | None, size: str) -> tuple[str, ...]:
    if not written or ":" in written or models.parse_size(written) == models.parse_size(size):
        return ()
    return (f"size {written} is sent as {size}: free sizes are rounded to multiples of "
            f"{model.size_rule.multiple}, the grid of every documented size",)


def expand(project: Project, spill: tuple[Path, int] | None = None) -> list[Target]:
    """The project's targets. With `spill` (folder, keep), a build's: those after the first
    `keep` wait on disk in folder until read (store/spool.py), so that a first build of 50k
    targets does not hold them all."""
    expander = _Expander(project, None if spill is None else _spool(*spill))
    targets = expander.run()
    expander.count_repeats()
    if expander.problems:
        raise SpecError(expander.problems)
    return targets


def _spool(folder: Path, keep: int) -> Spool[Target]:
    from imgbuild.store.spool import Spool  # a build's: check and validate never spool

    try:
        folder.mkdir(exist_ok=True)
    except OSError:  # a read-only checkout: the spool keeps its targets in memory
        pass
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

    def decode(data: bytes) -> Target:
        row = json.loads(data)
        return Target.from_row(row, row[3])

    return Spool(folder, lambda t: encode(t.to_row(t.file)).encode("utf-8"), decode, keep)
