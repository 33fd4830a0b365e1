r"""Splitting a child's stdout into protocol lines: pure, no I/O.

Bytes arrive in arbitrary chunks; lines end with ``\n``. Blank lines are
dropped (both official child libraries write ``"\n" + json + "\n"``). A line
longer than the limit is never buffered whole: only its head is kept while
the rest streams past, and it comes out as an :class:`OversizedLine`, so a
child cannot make the daemon hold gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OversizedLine:
    """Stands for a stdout line longer than ``max_line_bytes``; its body was discarded."""

    length: int
    head: bytes


StdoutLine = bytes | OversizedLine


class LineSplitter:
    """Splits a byte stream on b"\\n"; drops blank lines; caps line size.

    A line longer than ``max_bytes`` is kept only up to ``head_bytes`` while the
    rest streams past, and comes out as :class:`OversizedLine`.
    """

    def __init__(self, max_bytes: int, head_bytes: int) -> None:
        self._max = max_bytes
        self._head = min(head_bytes, max_bytes)
        self._buf = bytearray()
        self._length = 0
        self._oversized = False

    def feed(self, data: bytes) -> list[StdoutLine]:
        out: list[StdoutLine] = []
        parts = data.split(b"\n")
        tail = parts.pop()
        for part in parts:
            if self._length == 0 and len(part) <= self._max:
                # The common case: a whole line inside one chunk, no copy.
                if part and not part.isspace():
                    out.append(part)
                continue
            self._add(part)
            item = self._take()
            if item is not None:
                out.append(item)
        if tail:
            self._add(tail)
        return out

    def finish(self) -> list[StdoutLine]:
        """The unterminated last line at end of stream, if any."""
        item = self._take() if self._length else None
        return [] if item is None else [item]

    def _add(self, part: bytes) -> None:
        self._length += len(part)
        if self._oversized:
            return
        if self._length <= self._max:
            self._buf += part
            return
        self._oversized = True
        if len(self._buf) >= self._head:
            del self._buf[self._head :]
        else:
            self._buf += part[: self._head - len(self._buf)]

    def _take(self) -> StdoutLine | None:
        item: StdoutLine | None
        if self._oversized:
            item = OversizedLine(self._length, bytes(self._buf))
        else:
            line = bytes(self._buf)
            item = line if line and not line.isspace() else None
        self._buf = bytearray()
        self._length = 0
        self._oversized = False
        return item
