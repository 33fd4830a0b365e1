"""A min-heap of timers whose items may go stale, with memory bounded by the live ones.

Owns lazy deletion done safely: an item that no longer counts (its record was sent, its
aggregate closed early) stays in the heap until it reaches the top or until the heap has grown
to several times the size it had after the last compaction, when the stale items are dropped in
one pass. So the heap never holds much more than the live timers, whatever the throughput, at
an amortised O(log n) per push.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Timers"]

T = TypeVar("T")
_MIN_COMPACT = 1024


class Timers(Generic[T]):
    """``valid(when, item)`` says whether a pushed timer still counts."""

    __slots__ = ("_counter", "_heap", "_limit", "_valid")

    def __init__(self, valid: Callable[[float, T], bool]):
        self._valid = valid
        self._heap: list[tuple[float, int, T]] = []
        self._counter = itertools.count()
        self._limit = _MIN_COMPACT

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, when: float, item: T) -> None:
        heapq.heappush(self._heap, (when, next(self._counter), item))
        if len(self._heap) > self._limit:
            self._compact()

    def peek(self) -> float:
        """The time of the earliest valid timer (infinity if none)."""
        heap = self._heap
        valid = self._valid
        while heap:
            when, _, item = heap[0]
            if valid(when, item):
                return when
            heapq.heappop(heap)
        return float("inf")

    def pop_due(self, now: float) -> list[T]:
        """Removes and returns the valid items due at ``now``, earliest first."""
        out: list[T] = []
        heap = self._heap
        valid = self._valid
        while heap and heap[0][0] <= now:
            when, _, item = heapq.heappop(heap)
            if valid(when, item):
                out.append(item)
        return out

    def items(self) -> list[T]:
        """Every valid item, in no particular order."""
        return [item for when, _, item in self._heap if self._valid(when, item)]

    def _compact(self) -> None:
        valid = self._valid
        self._heap = [entry for entry in self._heap if valid(entry[0], entry[2])]
        heapq.heapify(self._heap)
        self._limit = max(_MIN_COMPACT, 4 * len(self._heap))
