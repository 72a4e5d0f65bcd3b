"""The Jinja2 environment prompts are rendered in: no way out to Python internals, and no way to
make imgbuild allocate without bound.

Jinja's SandboxedEnvironment blocks attribute escapes (__class__, __globals__, ...) and caps
range() at 100,000 items, but lets a template build values of any size: {{ 'x' * 10**9 }}
allocates a gigabyte, `|join` of 99,999 items with a 99,999-character separator ten. Prompts are
at most a few thousand characters, so every value a template builds (string, list, digits of a
number) is capped far below harm, and every operation that can amplify its input is checked
*before* it runs, from the sizes of its inputs: `*`, `~`, `+`, `%`, str.format, the filters
join, replace, indent, center, format, wordwrap, urlize, tojson, pprint, sum, batch, slice and
every filter that turns its input into text, the string methods that pad, repeat or join, and
the lipsum() global. Iteration is counted: all `for` loops and range() of one rendering
together may take MAX_TEMPLATE_STEPS steps. Results are checked again after each call.
"""
from __future__ import annotations

import functools
import itertools
import re
from typing import Any

MAX_TEMPLATE_VALUE = 100_000  # characters or items of any value a template builds
MAX_TEMPLATE_STEPS = 1_000_000  # loop iterations (and range() items) of one rendering
MAX_TEMPLATE_NUMBER = 10_000_000  # largest number a template may pass to a call
_WIDTH = re.compile(r"\d{6,}")  # a format width/precision of 100,000 or more
_PCT_SPEC = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\d+|\*)?(?:\.(\d+|\*))?")
_BRACE_FIELD = re.compile(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")
# Filters whose first step is turning their input into text (str() of a list repeats every
# item: a list of 100,000 references to one 100,000-character string is 10 GB of text).
_TEXT_FILTERS = frozenset({
    "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower", "pprint",
    "replace", "safe", "string", "striptags", "title", "tojson", "trim", "truncate", "upper",
    "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr",
})


def size_of(value: Any, budget: int = MAX_TEMPLATE_VALUE) -> int:
    """About len(str(value)) without building it; stops counting once past `budget`, so the
    walk itself is bounded. Shared references (a list repeating one big string) count in full,
    exactly as str() would spell them out."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if _is_undefined(value):
        return 64  # printing it raises the undefined-variable error, as it should
    if value is None or isinstance(value, (bool, float)):
        return 8
    if isinstance(value, int):
        return value.bit_length() * 3 // 10 + 2
    attrs = getattr(value, "_Namespace__attrs", None)  # jinja2's namespace() prints its values
    if isinstance(attrs, dict):
        value = attrs
    if isinstance(value, dict):
        items: Any = itertools.chain.from_iterable(value.items())
    elif isinstance(value, (list, tuple, set, frozenset)) or type(value).__name__.startswith("dict_"):
        items = value
    else:
        return 64  # a function, an Undefined, a loop: a short repr
    total = 2
    for item in items:
        total += 2 + (len(item) + 2 if isinstance(item, (str, bytes))
                      else size_of(item, budget - total) if total < budget else 1)
        if total > budget:
            break
    return total


def format_budget(fmt: str, args: Any, kwargs: Any) -> int:
    """About the length of `fmt` formatted with `args`/`kwargs` (% or str.format), counting
    every field as large as the largest argument (fields may repeat one: '{0}{0}{0}') plus the
    widths the format spells out, and numbers passed for `*` or `{:{}}` widths."""
    values = [*args, *kwargs.values()]
    largest = max((size_of(v) for v in values), default=0)
    pct = _PCT_SPEC.findall(fmt)
    fields = _BRACE_FIELD.findall(fmt)
    widths = sum(int(n) for spec in pct for n in spec if n.isdigit())
    widths += sum(int(n) for field in fields for n in re.findall(r"\d+", field.partition(":")[2]))
    if any("*" in spec for spec in pct) or any(field.count("{") > 1 for field in fields):
        widths += sum(abs(v) for v in values if isinstance(v, int) and not isinstance(v, bool))
    return len(fmt) + widths + (len(pct) + len(fields)) * largest


def guarded_sandbox() -> Any:
    """The SandboxedEnvironment subclass (built on first use: importing jinja2 is not free)."""
    return _sandbox_class()


@functools.lru_cache(maxsize=1)
def _sandbox_class() -> Any:
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import SandboxedEnvironment

    class CodeGen(CodeGenerator):
        def visit_Concat(self, node: Any, frame: Any) -> None:  # `a ~ b`: sized before joining
            self.write("environment.guarded_concat((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class Sandbox(_Guards, SandboxedEnvironment):  # type: ignore[misc]
        code_generator_class = CodeGen

    return Sandbox


def printable(value: Any) -> bool:
    """May `{{ value }}` turn it into text? What the sandbox's finalize enforces, asked also
    where a template is rendered without Jinja."""
    return isinstance(value, str) or size_of(value) <= MAX_TEMPLATE_VALUE


def _refused(message: str) -> Exception:
    from jinja2.exceptions import SecurityError

    return SecurityError(message)


def _too_big(what: str) -> Exception:
    return _refused(f"{what} would exceed {MAX_TEMPLATE_VALUE:,} characters or items")


def _need(estimate: int, what: str) -> None:
    if estimate > MAX_TEMPLATE_VALUE:
        raise _too_big(what)


def _check_args(args: Any, kwargs: Any) -> None:
    # A number passed to a call can be a size (center(width), range(n)); prompts also format
    # real numbers ("{:,}".format(150000)), so the bound is generous and the allocation itself
    # is estimated separately, before each amplifying call.
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TEMPLATE_NUMBER:
            shown = value if abs(value) < 10**12 else "given"
            raise _refused(f"the number {shown} is too large for a template (limit {MAX_TEMPLATE_NUMBER:,})")


def _check_size(value: Any, what: str) -> Any:
    if isinstance(value, (str, bytes, list, tuple)) and len(value) > MAX_TEMPLATE_VALUE:
        raise _too_big(what)
    if isinstance(value, int) and value.bit_length() > 4 * MAX_TEMPLATE_VALUE:
        raise _too_big(what)
    return value


def _check_format(fmt: Any, args: Any, kwargs: Any, what: str) -> None:
    if isinstance(fmt, (str, bytes)):
        text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
        if _WIDTH.search(text):
            raise _refused("a format width or precision that large is not allowed in a template")
        _need(format_budget(text, args, kwargs), what)


class _Guards:
    """What the sandbox adds to jinja2's SandboxedEnvironment (mixed in before it)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    steps = 0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(finalize=self._finalize, **kwargs)  # type: ignore[call-arg]
        filters: dict[str, Any] = self.filters  # type: ignore[attr-defined]
        for name, fn in list(filters.items()):
            filters[name] = self._guard_filter(name, fn)
        globals_: dict[str, Any] = self.globals  # type: ignore[attr-defined]
        globals_["range"] = self._range
        globals_["lipsum"] = self._lipsum(globals_["lipsum"])

    # --- loops --------------------------------------------------------------------------

    def _parse(self, source: str, name: str | None, filename: str | None) -> Any:
        """Every `for` loop iterates through count_steps(); recursive loops (whose inner calls
        would iterate uncounted) are refused."""
        from jinja2 import nodes
        from jinja2.exceptions import TemplateSyntaxError

        tree = super()._parse(source, name, filename)  # type: ignore[misc]
        for loop in list(tree.find_all(nodes.For)):
            if loop.recursive:
                raise TemplateSyntaxError("recursive loops are not allowed in prompts",
                                          loop.lineno, name, filename)
            counter = nodes.EnvironmentAttribute("count_steps", lineno=loop.lineno)
            loop.iter = nodes.Call(counter, [loop.iter], [], None, None, lineno=loop.lineno)
        return tree

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_TEMPLATE_STEPS:
            raise _refused(f"the template loops more than {MAX_TEMPLATE_STEPS:,} times")

    def count_steps(self, iterable: Any) -> Any:
        for item in iterable:
            self.step()
            yield item

    def _range(self, *args: int) -> Any:
        _check_args(args, {})
        if len(range(*args)) > MAX_TEMPLATE_STEPS:
            raise _refused(f"range() of more than {MAX_TEMPLATE_STEPS:,} items")
        for item in range(*args):
            self.step()
            yield item

    @staticmethod
    def _lipsum(real: Any) -> Any:
        def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:  # noqa: A002
            _check_args((n, min, max), {})
            # each word is at most 12 characters with its space; html adds <p></p>
            _need(max_int(n) * (max_int(max) * 13 + 9), "lipsum()")
            return real(n=n, html=html, min=min, max=max)

        return lipsum

    def concat(self, parts: Any) -> str:  # the text of every {% set %} block, macro, filter block
        parts = list(parts)
        _need(sum(map(len, parts)), "the block's text")
        return "".join(parts)

    # --- filters ------------------------------------------------------------------------

    def _guard_filter(self, name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            # skip what jinja passes first: the context, eval context or environment
            lead = next((i for i, a in enumerate(args)
                         if not (a is self or hasattr(a, "environment"))), len(args))
            plain = list(args[lead:])
            _check_args(plain[1:], kwargs)
            if plain:
                value = _before_filter(name, plain[0], plain[1:], kwargs)
                args = (*args[:lead], value, *plain[1:])
            return _check_size(fn(*args, **kwargs), f"the |{name} filter's result")

        return guarded

    # --- operators, calls, output -------------------------------------------------------

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _before_binop(operator, left, right)
        return _check_size(super().call_binop(context, operator, left, right), "the result")  # type: ignore[misc]

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_args(args, kwargs)
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, (str, bytes)):
            args = _before_text_method(owner, name, args, kwargs)
        elif isinstance(owner, list) and name in ("append", "insert", "extend") and args:
            if name == "extend":
                args = (_bounded_list(args[0]),)
            _need(len(owner) + (len(args[0]) if name == "extend" else 1), f"{name}()")
        return _check_size(super().call(__context, __obj, *args, **kwargs),  # type: ignore[misc]
                           f"{name or 'the'}() result")

    def wrap_str_format(self, value: Any) -> Any:
        """'x{}'.format is replaced on attribute access (never reaching `call` as a method of
        a str): size the formatting before the replacement runs."""
        wrapped = super().wrap_str_format(value)  # type: ignore[misc]
        owner = getattr(value, "__self__", None)
        if wrapped is None or not isinstance(owner, str):
            return wrapped
        if _WIDTH.search(owner):
            raise _refused("a format width or precision that large is not allowed in a template")
        by_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> Any:
            mapping = args[0] if by_map and args and isinstance(args[0], dict) else kwargs
            _check_format(owner, args if not by_map or mapping is kwargs else (), mapping,
                          f"that {value.__name__}()")
            return wrapped(*args, **kwargs)

        return functools.update_wrapper(checked, value)

    def guarded_concat(self, values: tuple[Any, ...]) -> str:
        _need(sum(size_of(v) for v in values), "joining with ~")
        return "".join(str(v) for v in values)

    def _finalize(self, value: Any) -> Any:  # every {{ value }} is about to become text
        if not printable(value):
            raise _too_big("printing that value")
        return value


def _before_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        seq, num = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(num, int):
            _need(len(seq) * max(num, 0), f"repeating a value {num:,} times")
        elif isinstance(left, int) and isinstance(right, int):
            _need((left.bit_length() + right.bit_length()) // 4, "that product")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right * max(abs(left).bit_length(), 1) > 4 * MAX_TEMPLATE_VALUE:
            raise _too_big("that power")
    elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        _need(len(left) + len(right), "that sum")
    elif operator == "%":
        values = right if isinstance(right, tuple) else (right,)
        _check_args(values, {})  # '%*d' widths
        if isinstance(right, dict):
            _check_format(left, (), right, "that % formatting")
        else:
            _check_format(left, values, {}, "that % formatting")


def _before_filter(name: str, value: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Refuse a filter call whose result would be too large, from its inputs; returns the value
    to filter (an iterator read to estimate its size, as a list)."""
    what = f"the |{name} filter"

    def arg(i: int, key: str, default: Any = None) -> Any:
        return kwargs.get(key, args[i] if len(args) > i else default)

    if name in _TEXT_FILTERS:
        _need(size_of(value), what)
    if name in ("join", "sum"):
        value = _bounded_list(value)
    if name == "join":
        sep = str(arg(0, "d", ""))
        _need(sum(size_of(i) for i in value) + len(sep) * max(len(value) - 1, 0), what)
    elif name == "sum":
        _need(sum(len(i) for i in value if isinstance(i, (list, tuple, str))), what)
    elif name in ("batch", "slice"):
        _need(max_int(arg(0, "linecount" if name == "batch" else "slices", 1)), what)
    elif name in _TEXT_ESTIMATES:
        _need(_TEXT_ESTIMATES[name](str(value), arg, args, kwargs), what)
    return value


def _replace_size(text: str, arg: Any, args: Any, kwargs: Any) -> int:
    old, new, count = str(arg(0, "old", "")), str(arg(1, "new", "")), arg(2, "count")
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * len(new)


def _indent_size(text: str, arg: Any, args: Any, kwargs: Any) -> int:
    width = arg(0, "width", 4)
    pad = len(width) if isinstance(width, str) else max_int(width)
    return len(text) + (text.count("\n") + 1) * pad


def _wordwrap_size(text: str, arg: Any, args: Any, kwargs: Any) -> int:
    width = max(max_int(arg(0, "width", 79)), 1)
    wrap = str(arg(2, "wrapstring") or "\n")
    return len(text) + (len(text) // width + text.count("\n") + 1) * len(wrap)


def _urlize_size(text: str, arg: Any, args: Any, kwargs: Any) -> int:
    extra = sum(size_of(v) for v in (*args, *kwargs.values()) if isinstance(v, str))
    return 3 * len(text) + (len(text) // 4 + 1) * (extra + 64)


def _format_size(text: str, arg: Any, args: Any, kwargs: Any) -> int:
    if _WIDTH.search(text):
        raise _refused("a format width or precision that large is not allowed in a template")
    return format_budget(text, args, kwargs)


# Filters whose result grows with an argument: their size, from the input text and arguments.
_TEXT_ESTIMATES = {
    "replace": _replace_size, "indent": _indent_size, "wordwrap": _wordwrap_size,
    "urlize": _urlize_size, "format": _format_size,
    "center": lambda text, arg, args, kwargs: max(len(text), max_int(arg(0, "width", 80))),
    "tojson": lambda text, arg, args, kwargs: len(text) * (2 + max_int(arg(0, "indent") or 0)),
}


def _before_text_method(owner: Any, name: str, args: Any, kwargs: Any) -> Any:
    what = f"that {name}()"
    if name == "replace" and len(args) >= 2 and isinstance(args[0], type(owner)) \
            and isinstance(args[1], type(owner)):
        hits = owner.count(args[0]) if args[0] else len(owner) + 1
        _need(len(owner) + hits * len(args[1]), what)
    elif name == "join" and args:
        items = _bounded_list(args[0])
        args = (items, *args[1:])
        _need(sum(size_of(x) for x in items) + len(owner) * len(items), what)
    elif name in ("center", "ljust", "rjust", "zfill") and args:
        _need(max(len(owner), max_int(args[0])), what)
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        _need(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * max_int(tab), what)
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((size_of(v) for v in args[0].values()), default=1)
        _need(len(owner) * max(longest, 1), what)
    return args


def _is_undefined(value: Any) -> bool:
    from jinja2 import Undefined

    return isinstance(value, Undefined)


def max_int(value: Any) -> int:
    """A number used as a size; anything else counts as 0 (the call itself will complain)."""
    return abs(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _bounded_list(value: Any) -> list[Any]:
    """The items of `value`, refusing (before materialising more) past the cap."""
    from jinja2.exceptions import SecurityError

    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = list(itertools.islice(iter(value), MAX_TEMPLATE_VALUE + 1))
    if len(items) > MAX_TEMPLATE_VALUE:
        raise SecurityError(f"more than {MAX_TEMPLATE_VALUE:,} items")
    return items
