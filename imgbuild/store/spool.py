"""A sequence whose items wait on disk, encoded, once there are more than a few of them.

A first build of 50k targets held every expanded target (~570 bytes of objects, and as much
again in the holes their expansion left), then every step that would make it, until the step
ran: the share of its memory that grew with the number of targets. A build now puts them in a
`Spool`: the first `keep` items stay in memory as they are; the ones after that are encoded and
appended to an unnamed temporary file in `.imgbuild/` (a `Spill`, gone when the build ends),
and memory holds one integer per item: where its bytes are. Reading one decodes it anew, so
nothing read is held by the spool.

What it offers is what the build does with a list of targets and a deque of steps: `append`,
`len`, iterating in order (as often as needed), and `popleft` for the executor, which takes
each step out as it starts it. Items are read back as new objects: equal to what went in, not
the same. If the file cannot be made or written, items stay in memory, as before.
"""
from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from imgbuild.store.parked import Spill

T = TypeVar("T")
_SHIFT = 32  # an item's bytes: (offset << 32) | length
_WINDOW = 1 << 18  # read ahead when iterating: items appended in turn lie side by side


class Spool(Generic[T]):
    def __init__(self, folder: Path | None, encode: Callable[[T], bytes], decode: Callable[[bytes], T],
                 keep: int = 0) -> None:
        self._held: list[T] = []  # the first `keep` items, or all of them without a file
        self._where = array("Q")  # the items after those: where their bytes are
        self._head = 0  # items taken out by `popleft` (in `_held` first, then in `_where`)
        self._spill = Spill(folder) if folder is not None else None
        self._encode, self._decode, self._keep = encode, decode, keep

    def append(self, item: T) -> None:
        if not self._where and (len(self._held) < self._keep or self._spill is None
                                or not self._spill.usable()):
            self._held.append(item)
            return
        data = self._encode(item)
        start = self._spill.append(data) if self._spill is not None else None
        if start is None:  # the file failed after it was made (a full disk): on in memory
            self._to_memory()
            self._held.append(item)
            return
        self._where.append(start << _SHIFT | len(data))

    def _to_memory(self) -> None:
        """Bring every spilled item back, in order (positions and `popleft`'s count stay true)."""
        held = len(self._held)
        self._held.extend(None if held + i < self._head else self._read(i)  # type: ignore[misc]
                          for i in range(len(self._where)))
        self._where = array("Q")
        self._spill = None

    def extend(self, items: Iterable[T]) -> None:
        for item in items:
            self.append(item)

    @property
    def spilled(self) -> int:
        """How many items wait on disk (for tests and measurements)."""
        return len(self._where)

    def __len__(self) -> int:
        return len(self._held) + len(self._where) - self._head

    def __bool__(self) -> bool:
        return len(self) > 0

    def __iter__(self) -> Iterator[T]:
        held = len(self._held)
        for i in range(self._head, held):
            yield self._held[i]
        buffer, start = b"", 0
        for i in range(max(self._head - held, 0), len(self._where)):
            where = self._where[i]
            offset, length = where >> _SHIFT, where & ((1 << _SHIFT) - 1)
            if offset < start or offset + length > start + len(buffer):
                start = offset
                buffer = self._spill.read_upto(offset, max(length, _WINDOW))  # type: ignore[union-attr]
            yield self._decode(buffer[offset - start:offset - start + length])

    def __getitem__(self, i: int) -> T:
        """Item `i` counted from the first one appended (expansion links an edit to its inputs
        by position); one already taken by `popleft` is gone."""
        held = len(self._held)
        if not self._head <= i < held + len(self._where):
            raise IndexError(i)
        return self._held[i] if i < held else self._read(i - held)

    def __setitem__(self, i: int, item: T) -> None:
        held = len(self._held)
        if not self._head <= i < held + len(self._where):
            raise IndexError(i)
        if i < held:
            self._held[i] = item
            return
        data = self._encode(item)
        start = self._spill.append(data)  # type: ignore[union-attr]
        if start is None:
            self._to_memory()
            self._held[i] = item
            return
        self._where[i - held] = start << _SHIFT | len(data)

    def popleft(self) -> T:
        """The first item not taken yet, which the spool then lets go of."""
        if not self:
            raise IndexError("pop from an empty spool")
        held = len(self._held)
        i, self._head = self._head, self._head + 1
        if i < held:
            item = self._held[i]
            self._held[i] = None  # type: ignore[call-overload]
            return item
        return self._read(i - held)

    def _read(self, i: int) -> T:
        where = self._where[i]
        return self._decode(self._spill.read(where >> _SHIFT, where & ((1 << _SHIFT) - 1)))  # type: ignore[union-attr]
