"""Read the generation records that imgbuild 0.x stored as pickles, as plain data, without
unpickling them.

Unpickling runs whatever the bytes ask for, so a cache someone else wrote must never be
unpickled. Earlier versions stored each record (a dict of strings, numbers, booleans, None
and lists) with pickle; those records still name paid originals. This walks the opcode stream
with `pickletools.genops`, which only decodes opcodes, and rebuilds the value with a tiny stack
machine that knows only the opcodes that build those plain types. Anything else (a global, a
call, a persistent id, an object) makes the whole record unreadable: a cache miss.
"""
from __future__ import annotations

import pickletools
from typing import Any

MAX_BYTES = 1 << 20  # a record is a few hundred bytes; anything larger is not ours
_MARK = object()

_PUSH_ARG = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "BININT", "BININT1",
             "BININT2", "LONG1", "BINFLOAT", "SHORT_BINBYTES", "BINBYTES", "INT", "LONG"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_IGNORED = {"PROTO", "FRAME", "STOP"}


class NotData(ValueError):
    """The bytes are not a pickle of plain data."""


def loads(data: bytes) -> Any:
    """The plain value a pickle of dicts/lists/str/int/float/bool/None encodes."""
    if len(data) > MAX_BYTES:
        raise NotData("too large")
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            _step(opcode.name, arg, stack, memo)
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise NotData(str(e)) from None
    if len(stack) != 1:
        raise NotData("not a single value")
    return stack[0]


def _pop_mark(stack: list[Any]) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1:]
            del stack[i:]
            return items
    raise NotData("no mark")


def _step(name: str, arg: Any, stack: list[Any], memo: dict[int, Any]) -> None:
    if name in _IGNORED:
        return
    if name in _PUSH_ARG:
        stack.append(arg)
    elif name in _CONSTANTS:
        stack.append(_CONSTANTS[name])
    elif name == "EMPTY_DICT":
        stack.append({})
    elif name in ("EMPTY_LIST", "EMPTY_TUPLE"):
        stack.append([])
    elif name == "MARK":
        stack.append(_MARK)
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
        memo[int(arg)] = stack[-1]
    elif name in ("BINGET", "LONG_BINGET", "GET"):
        stack.append(memo[int(arg)])
    elif name == "APPEND":
        item = stack.pop()
        _as(stack[-1], list).append(item)
    elif name == "APPENDS":
        items = _pop_mark(stack)
        _as(stack[-1], list).extend(items)
    elif name == "SETITEM":
        value, key = stack.pop(), stack.pop()
        _as(stack[-1], dict)[_key(key)] = value
    elif name == "SETITEMS":
        items = _pop_mark(stack)
        target = _as(stack[-1], dict)
        for key, value in zip(items[::2], items[1::2]):
            target[_key(key)] = value
    elif name in ("TUPLE", "LIST"):
        stack.append(_pop_mark(stack))
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        count = int(name[-1])
        items = stack[-count:]
        del stack[-count:]
        stack.append(items)
    else:  # GLOBAL, STACK_GLOBAL, REDUCE, BUILD, INST, OBJ, NEWOBJ, PERSID, EXT*, ...
        raise NotData(f"opcode {name} is not plain data")


def _as(value: Any, kind: type) -> Any:
    if type(value) is not kind:
        raise NotData(f"expected a {kind.__name__}")
    return value


def _key(key: Any) -> Any:
    if not isinstance(key, (str, int)):
        raise NotData("a key that is not a string")
    return key
