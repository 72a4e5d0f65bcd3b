"""YAML loading that remembers where every key and value came from, so that every error can
name `file:line:col`. Duplicate keys are errors (PyYAML silently keeps the last one)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

try:  # the C parser is ~10x faster; construction stays in Python so we can keep marks
    _Base: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Base = yaml.SafeLoader

Mark = tuple[int, int]  # 1-based (line, column)

# Refuse documents that would expand to more nodes than any real spec needs (alias bombs).
MAX_NODES = 2_000_000
MAX_BYTES = 32 * 2**20
# Composing a node costs ~0.5 KB of memory before any check can run: a flat 8 MB list of
# 4 million numbers took 1.8 GB. Larger documents are first scanned as an event stream
# (constant memory) and refused beyond this many nodes.
MAX_PARSED_NODES = 500_000
MAX_DEPTH = 100  # nesting levels; real specs use fewer than 10


class LocDict(dict):  # type: ignore[type-arg]
    """A mapping that knows the position of itself, of each key and of each value."""

    mark: Mark = (0, 0)

    def __init__(self) -> None:
        super().__init__()
        self.key_marks: dict[Any, Mark] = {}
        self.value_marks: dict[Any, Mark] = {}


class LocList(list):  # type: ignore[type-arg]
    mark: Mark = (0, 0)

    def __init__(self) -> None:
        super().__init__()
        self.item_marks: list[Mark] = []


class YamlError(Exception):
    def __init__(self, file: str, mark: Mark, message: str) -> None:
        super().__init__(message)
        self.file = file
        self.mark = mark
        self.message = message


def _mark(node: yaml.Node) -> Mark:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(_Base):  # type: ignore[misc, valid-type]
    pass


def _expanded_size(obj: Any, memo: dict[int, int]) -> int:
    """Node count with aliases expanded, computed in linear time (shared objects memoised).

    Aliases share one Python object, so loading a "billion laughs" document is cheap; walking
    it later (schema validation, rendering) is not. This count is what that walk would cost.
    """
    if not isinstance(obj, (dict, list)):
        return 1
    known = memo.get(id(obj))
    if known is not None:
        return known
    memo[id(obj)] = 1  # a self-referencing structure counts once instead of looping
    items = obj.values() if isinstance(obj, dict) else obj
    total = 1
    for item in items:
        total += _expanded_size(item, memo)
        if total > MAX_NODES:
            break
    memo[id(obj)] = total
    return total


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocDict:
    result = LocDict()
    result.mark = _mark(node)
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise YamlError("", _mark(key_node), "a mapping key must be a plain value") from None
        if key in result:
            first = result.key_marks[key][0]
            raise YamlError("", _mark(key_node), f"duplicate key '{key}' (first defined on line {first})")
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_marks[key] = _mark(key_node)
        result.value_marks[key] = _mark(value_node)
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocList:
    result = LocList()
    result.mark = _mark(node)
    for child in node.value:
        result.append(loader.construct_object(child, deep=True))
        result.item_marks.append(_mark(child))
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def _scan(text: str) -> str | None:
    """Why `text` must not be composed (too many nodes, nested too deep), or None. The event
    stream takes constant memory and no recursion; composing takes both (a list nested 50,000
    deep crashed the interpreter with SIGSEGV)."""
    count = depth = 0
    kinds = (yaml.ScalarEvent, yaml.AliasEvent)
    for event in yaml.parse(text, Loader=_Base):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            count += 1
            depth += 1
            if depth > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep"
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
        elif isinstance(event, kinds):
            count += 1
        if count > MAX_PARSED_NODES:
            return f"more than {MAX_PARSED_NODES:,} values"
    return None


def load_text(text: str, file: str) -> Any:
    # A value needs at least two characters ("1," or "- "), a level of nesting one ("["):
    # short texts need no scan.
    if len(text) > MAX_DEPTH:
        try:
            why = _scan(text)
        except yaml.YAMLError:
            why = None  # the loader below reports the syntax error with its location
        if why:
            raise YamlError(file, (1, 1), f"document too large: {why}")
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
        if _expanded_size(data, {}) > MAX_NODES:
            raise YamlError(file, (1, 1), f"document too large: more than {MAX_NODES:,} values once aliases are expanded")
        return data
    except YamlError as e:
        raise YamlError(file, e.mark, e.message) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        text = " ".join(filter(None, [e.context, e.problem]))
        raise YamlError(file, where, f"YAML syntax error: {text}") from None
    except yaml.YAMLError as e:
        raise YamlError(file, (0, 0), f"YAML error: {e}") from None
    finally:
        loader.dispose()


def load_file(path: Path, display: str, digests: dict[str, str] | None = None) -> Any:
    """The document in `path`; with `digests`, also records sha256 of the bytes read, keyed
    by `path` as given (a symlink repointed later then reads, and hashes, differently)."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise YamlError(display, (0, 0), f"file is {size:,} bytes; the limit is {MAX_BYTES:,}")
        raw = path.read_bytes()
    except OSError as e:
        raise YamlError(display, (0, 0), f"cannot read: {e.strerror}") from None
    if digests is not None:
        import hashlib

        digests[str(path)] = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlError(display, (0, 0), f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    return load_text(text, display)


def locate(data: Any, path: list[Any] | tuple[Any, ...], *, key: bool = False) -> Mark:
    """The position of the value at `path` inside `data` (of its key when `key`), falling back
    to the deepest existing parent when the path does not fully exist."""
    mark: Mark = getattr(data, "mark", (1, 1))
    node = data
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, LocDict) and step in node:
            mark = node.key_marks[step] if (last and key) else node.value_marks[step]
            node = node[step]
        elif isinstance(node, LocList) and isinstance(step, int) and 0 <= step < len(node):
            mark = node.item_marks[step]
            node = node[step]
        else:
            break
    return mark
