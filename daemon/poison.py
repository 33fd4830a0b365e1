"""Poison records: find the record(s) a child keeps failing on, and get past them.

Pure logic, no I/O. A child that fails again and again on the same batch
(crash, hang past timeoutInSeconds, protocol violation) would stall its shard
forever. With ``poisonRecordPolicy = DEAD_LETTER``, after
``poisonRecordMaxAttempts`` failures of the same batch the consumer narrows
the batch down by bisection, in order:

* the batch is split into segments processed left to right, so records
  still reach the child in sequence order;
* a segment that is processed (its ``status`` comes back) is done;
* a segment of several records that fails is split in two halves, which take
  its place at the front of the queue;
* a single record that fails ``max_attempts`` times on its own is poison: it
  goes to the dead-letter destination and the consumer checkpoints past it.

Everything before a poison record was processed by a child (its segment's
status came back), so checkpointing at the poison record skips nothing that
was not either processed or dead-lettered. The default policy (RETRY) never
bisects: the batch is retried with back-off forever, and nothing is skipped
unless the user asks for it.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")


class PoisonPolicy(enum.Enum):
    RETRY = "RETRY"
    DEAD_LETTER = "DEAD_LETTER"


class FailureCounter:
    """Counts consecutive failures of the batch that starts at one position."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self._position: object = None
        self.failures = 0

    def failed(self, batch_start: object) -> bool:
        """Record a failure; True when this batch has now failed max_attempts times."""
        if batch_start != self._position:
            self._position = batch_start
            self.failures = 0
        self.failures += 1
        return self.failures >= self.max_attempts

    def succeeded(self) -> None:
        self._position = None
        self.failures = 0


@dataclass
class Verdict(Generic[R]):
    """What a failed segment means: split further, retry, or give the record up."""

    poison: R | None = None
    attempts: int = 0


@dataclass
class BatchBisector(Generic[R]):
    """Narrows one failing batch down to its poison records, keeping order."""

    records: list[R]
    max_attempts: int
    _queue: deque[tuple[int, int]] = field(init=False)
    _single_failures: dict[int, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._queue = deque([(0, len(self.records))]) if self.records else deque()
        self.poisoned: list[R] = []

    @property
    def done(self) -> bool:
        return not self._queue

    def current(self) -> list[R]:
        """The segment to deliver next (records in stream order)."""
        start, end = self._queue[0]
        return self.records[start:end]

    def succeeded(self) -> None:
        start, _ = self._queue.popleft()
        self._single_failures.pop(start, None)

    def failed(self) -> Verdict[R]:
        start, end = self._queue[0]
        if end - start > 1:
            middle = (start + end) // 2
            self._queue.popleft()
            self._queue.appendleft((middle, end))
            self._queue.appendleft((start, middle))
            return Verdict()
        attempts = self._single_failures.get(start, 0) + 1
        self._single_failures[start] = attempts
        if attempts < self.max_attempts:
            return Verdict(attempts=attempts)
        self._queue.popleft()
        del self._single_failures[start]
        record = self.records[start]
        self.poisoned.append(record)
        return Verdict(poison=record, attempts=attempts)
