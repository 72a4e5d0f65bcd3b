"""Lock entries that wait on disk, already encoded, until the lock is written.

A first build of 50k targets held every new lock entry as a dict until the end: ~1 KB each (an
11-key dict, its request dict, two sha256 strings), the largest share of its peak memory. A
build now hands each finished target's entries to `ParkedEntries.park`, which encodes them as
the lock will write them and appends the bytes to an unnamed temporary file in the project's
`.imgbuild/` (deleted by the system when the build ends, however it ends). What stays in memory
is the output's name and one integer: where its bytes are.

It is a mapping of output -> entry like the dict it replaces, so the lock's readers are
unchanged:
- `mapping[output]` and `get` bring an entry back into memory for good, so that a change made
  to it (an accepted pick's fields) is what the lock writes;
- iterating `items()` and `values()` reads entries from disk without keeping them (a build
  looks at every entry once or twice after generating: it must not end holding them all);
  a change made to such an entry is not kept;
- `raw(output)` is the bytes as parked, which the lock writer copies as they are.
If the file cannot be made or written (a read-only checkout, a full disk), entries stay in
memory, as before.

The unnamed file itself is a `Spill`, which the stat cache uses too (plan/caches.py) for the
stamps of the files a build writes.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, ItemsView, Iterator, MutableMapping, ValuesView
from pathlib import Path
from typing import Any

Entry = dict[str, Any]
_SHIFT = 32  # an entry's bytes: (offset << 32) | length, one int per output


class Spill:
    """Bytes appended to an unnamed temporary file in `folder` and read back by position; the
    system removes the file when it is closed or the process ends, however it ends. `append`
    answers None when there is no such file (no folder, read-only, not Linux, a full disk):
    the caller then keeps its data in memory, as it did before."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._fd = -1  # opened on the first append
        self.end = 0
        self._broken = False

    def usable(self) -> bool:
        """Whether there is a file to append to (made on the first ask)."""
        return self._file() >= 0

    def append(self, data: bytes) -> int | None:
        """Where `data` now starts, or None if it could not be written."""
        fd = self._file()
        if fd < 0:
            return None
        try:
            written = 0
            while written < len(data):
                n = os.pwrite(fd, data[written:], self.end + written)
                if n <= 0:
                    raise OSError("no progress writing to a spill file")
                written += n
        except OSError:
            self._broken = True
            return None
        start, self.end = self.end, self.end + len(data)
        return start

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:  # the file is ours alone: this is a bug, not a user's mistake
            raise OSError(f"spill file: {len(data)} of {length} bytes read back at {offset}")
        return data

    def read_upto(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (fewer at the end of the file)."""
        return os.pread(self._fd, length, offset)

    def _file(self) -> int:
        if self._fd < 0 and not self._broken:
            try:  # O_TMPFILE: no name, removed when closed (or when the process dies)
                self._fd = os.open(self._folder, os.O_TMPFILE | os.O_RDWR, 0o600)
            except (OSError, AttributeError):  # no such folder, read-only, not Linux
                self._broken = True
        return -1 if self._broken else self._fd

    def __del__(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


class ParkedEntries(MutableMapping[str, Entry]):
    def __init__(self, entries: dict[str, Entry], folder: Path, encode: Callable[[Entry], bytes]) -> None:
        self._held = entries  # in memory: read from the lock, brought back, or not parkable
        self._parked: dict[str, int] = {}
        self._spill = Spill(folder)
        self._encode = encode

    def park(self, output: str, entry: Entry) -> None:
        """Record `entry` for `output`, kept on disk if possible."""
        if self._spill.usable():  # encoded only when there is somewhere to put the bytes
            data = self._encode(entry)
            start = self._spill.append(data)
            if start is not None:
                self._held.pop(output, None)
                self._parked[output] = start << _SHIFT | len(data)
                return
        self._parked.pop(output, None)
        self._held[output] = entry

    def raw(self, output: str) -> bytes | None:
        """The bytes parked for `output`; None when its entry is in memory."""
        where = self._parked.get(output)
        if where is None:
            return None
        return self._spill.read(where >> _SHIFT, where & ((1 << _SHIFT) - 1))

    def peek(self, output: str) -> Entry:
        """The entry of `output`, read from disk if parked there, not kept in memory."""
        if output in self._held:
            return self._held[output]
        data = self.raw(output)
        if data is None:
            raise KeyError(output)
        entry: Entry = json.loads(data)
        return entry

    # --- the mapping --------------------------------------------------------------------------

    def __getitem__(self, output: str) -> Entry:
        entry = self._held.get(output)
        if entry is None:
            entry = self.peek(output)  # KeyError when absent
            del self._parked[output]
            self._held[output] = entry
        return entry

    def __setitem__(self, output: str, entry: Entry) -> None:
        self._parked.pop(output, None)
        self._held[output] = entry

    def __delitem__(self, output: str) -> None:
        if output in self._held:
            del self._held[output]
        else:
            del self._parked[output]

    def __contains__(self, output: object) -> bool:
        return output in self._held or output in self._parked

    def __iter__(self) -> Iterator[str]:
        yield from list(self._held)
        yield from list(self._parked)

    def __len__(self) -> int:
        return len(self._held) + len(self._parked)

    def items(self) -> ItemsView[str, Entry]:
        return _PeekedItems(self)

    def values(self) -> ValuesView[Entry]:
        return _PeekedValues(self)


class _PeekedItems(ItemsView[str, Entry]):
    _mapping: ParkedEntries

    def __iter__(self) -> Iterator[tuple[str, Entry]]:
        for output in self._mapping:
            yield output, self._mapping.peek(output)


class _PeekedValues(ValuesView[Entry]):
    _mapping: ParkedEntries

    def __iter__(self) -> Iterator[Entry]:
        for output in self._mapping:
            yield self._mapping.peek(output)
