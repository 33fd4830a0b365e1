"""Lanes and PutRecords collection for one stream.

Owns :class:`Lane` (one predicted shard: its open aggregate, its queue of Kinesis records ready
to send, its rate limiter) and :class:`StreamQueue` (the lanes of a stream, how many bytes and
records wait, the earliest deadline among them, and :meth:`StreamQueue.take_request`, which
fills one PutRecords request of at most ``collection_max_count`` records and
``collection_max_size`` bytes). Pure logic: the caller passes the time.

A stream is *due* when its waiting records fill a request or the earliest deadline among them
has passed (``record_max_buffered_time`` after its oldest user record arrived), as in the KPL's
collector. Taking a request walks the lanes round-robin so one busy shard cannot starve the
others, and within a lane looks a little past records that must wait (a retry back-off, a
predecessor with the same key still in flight) so that they do not hold up unrelated records.
A lane whose rate limiter says no is skipped until its buckets refill.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from producer.limiter import ShardLimiter
from producer.records import IN_FLIGHT, READY, Entry, KinesisRecord
from producer.timers import Timers
from protocol.aggregation import Aggregator

__all__ = ["LOOKAHEAD", "Lane", "Request", "StreamQueue"]

# How far past a waiting record a lane is searched for one that may go.
LOOKAHEAD = 64
# Shortest wait the pump is told about, so float rounding in a bucket never makes it spin.
MIN_WAIT = 0.001


class Lane:
    """One predicted shard of a stream (``shard`` None: records sent raw, no map yet)."""

    __slots__ = (
        "aggregator",
        "limiter",
        "open_deadline",
        "open_entries",
        "open_token",
        "ready",
        "shard",
        "stream",
    )

    def __init__(
        self,
        stream: str,
        shard: str | None,
        aggregator: Aggregator | None,
        limiter: ShardLimiter | None,
    ):
        self.stream = stream
        self.shard = shard
        self.aggregator = aggregator
        self.limiter = limiter
        self.open_entries: list[Entry] = []
        self.open_deadline = float("inf")
        # Bumped whenever the open aggregate closes, which voids its pending deadline timers.
        self.open_token = 0
        self.ready: deque[KinesisRecord] = deque()


class Request:
    """One PutRecords call's worth of Kinesis records, all for ``stream``."""

    __slots__ = ("krs", "size", "stream")

    def __init__(self, stream: str, krs: list[KinesisRecord], size: int):
        self.stream = stream
        self.krs = krs
        self.size = size


class StreamQueue:
    """The ready Kinesis records of one stream, by lane."""

    def __init__(self, stream: str, max_count: int, max_size: int):
        self.stream = stream
        self.max_count = max_count
        self.max_size = max_size
        self.ready_count = 0
        self.ready_bytes = 0
        # Lanes that have ready records, in round-robin order (a dict used as an ordered set).
        self._active: dict[Lane, None] = {}
        self._deadlines: Timers[KinesisRecord] = Timers(_waiting_since)

    def enqueue(self, kr: KinesisRecord) -> None:
        """Appends a freshly built record behind the others of its lane."""
        lane: Lane = kr.lane
        lane.ready.append(kr)
        self._added(lane, (kr,))

    def enqueue_front(self, lane: Lane, krs: list[KinesisRecord]) -> None:
        """Puts records being retried ahead of the lane's others, keeping their order."""
        if krs:
            lane.ready.extendleft(reversed(krs))
            self._added(lane, krs)

    def _added(self, lane: Lane, krs: tuple[KinesisRecord, ...] | list[KinesisRecord]) -> None:
        for kr in krs:
            kr.state = READY
            self.ready_count += 1
            self.ready_bytes += kr.size
            self._deadlines.push(kr.deadline, kr)
        if lane not in self._active:
            self._active[lane] = None

    def remove(self, kr: KinesisRecord) -> None:
        """Takes a ready record out (it expired)."""
        lane: Lane = kr.lane
        lane.ready.remove(kr)
        self._taken(kr)
        if not lane.ready:
            self._active.pop(lane, None)

    def replace(self, kr: KinesisRecord, replacements: list[KinesisRecord]) -> None:
        """Swaps a ready record for others in the same place (some of its entries expired)."""
        lane: Lane = kr.lane
        index = lane.ready.index(kr)
        del lane.ready[index]
        self._taken(kr)
        for offset, new in enumerate(replacements):
            lane.ready.insert(index + offset, new)
        if replacements:
            self._added(lane, replacements)
        elif not lane.ready:
            self._active.pop(lane, None)

    def take_all(self, lane: Lane) -> list[KinesisRecord]:
        """Every ready record of ``lane``, removed (the lane's shard is gone)."""
        krs = list(lane.ready)
        lane.ready.clear()
        for kr in krs:
            self._taken(kr)
        self._active.pop(lane, None)
        return krs

    def _taken(self, kr: KinesisRecord) -> None:
        self.ready_count -= 1
        self.ready_bytes -= kr.size

    def ready_records(self) -> list[KinesisRecord]:
        return [kr for lane in self._active for kr in lane.ready]

    def earliest_deadline(self) -> float:
        return self._deadlines.peek()

    def expedite(self, now: float) -> None:
        """Makes every ready record due now (flush), its entries too, so that the flush holds
        if they are packed again (a shard map arrives) before they go."""
        for lane in self._active:
            for kr in lane.ready:
                for entry in kr.entries:
                    entry.deadline = min(entry.deadline, now)
                if kr.deadline > now:
                    kr.deadline = now
                    self._deadlines.push(now, kr)

    def due(self, now: float) -> bool:
        if not self.ready_count:
            return False
        return (
            self.ready_count >= self.max_count
            or self.ready_bytes >= self.max_size
            or self.earliest_deadline() <= now
        )

    def take_request(
        self, now: float, may_send: Callable[[KinesisRecord], bool]
    ) -> tuple[Request | None, float]:
        """Fills one request; returns it (None if nothing may go) and the earliest time a
        record that had to wait for a back-off or a rate limit may go."""
        krs: list[KinesisRecord] = []
        size = 0
        wake = float("inf")
        full = False
        revisit: list[Lane] = []
        for lane in list(self._active):
            queue = lane.ready
            limiter = lane.limiter
            took = False
            index = 0
            while index < len(queue) and index < LOOKAHEAD:
                kr = queue[index]
                if kr.not_before > now:
                    wake = min(wake, kr.not_before)
                    index += 1
                    continue
                if not may_send(kr):
                    index += 1
                    continue
                if len(krs) >= self.max_count or (krs and size + kr.size > self.max_size):
                    full = True
                    break
                if limiter is not None and not limiter.try_take(1, kr.size, now):
                    wake = min(wake, now + max(MIN_WAIT, limiter.wait_time(1, kr.size, now)))
                    break
                del queue[index]
                self._taken(kr)
                kr.state = IN_FLIGHT
                krs.append(kr)
                size += kr.size
                took = True
            if not queue:
                self._active.pop(lane, None)
            elif took:
                revisit.append(lane)
            if full:
                break
        # Lanes served this time go to the back of the round.
        for lane in revisit:
            self._active.pop(lane, None)
            self._active[lane] = None
        if not krs:
            return None, wake
        return Request(self.stream, krs, size), wake


def _waiting_since(deadline: float, kr: KinesisRecord) -> bool:
    return kr.state == READY and kr.deadline == deadline
