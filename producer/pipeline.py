"""The producer's pipeline as one state machine, without threads or I/O (results and expiry are
in :mod:`producer.outcomes`, per-stream state in :mod:`producer.streams`).

Owns what happens to a user record between ``add_user_record`` and its future resolving:
prediction of its shard from the stream's :class:`~producer.shard_map.ShardMap`, aggregation
per predicted shard (a lane never mixes shards), closing an aggregate on count, size or its
earliest record's deadline, collection into PutRecords requests (via
:mod:`producer.collector`), results (success, per-record errors, whole-request errors, a record
that landed outside its predicted shard), retries with back-off, expiry at ``record_ttl``, the
outstanding-records and -bytes account, and metrics.

The shell (:mod:`producer.producer`) holds one lock around every call, runs the I/O the
:class:`Plan` asks for, and resolves futures from the returned :class:`Resolution` list after
releasing the lock (a future's callbacks may call back into the producer).

Records of a new stream wait for its first ListShards. If that fails (and for a hash key no
open shard covers), records go raw through a lane with shard None, as the KPL does, while the
fetch is retried with back-off. When a map arrives, records still waiting for shards that are
gone (or for none) are packed again for the shards the map names.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left as _bisect_left
from dataclasses import dataclass, field

from producer import records as kr_mod
from producer.collector import Lane, Request, StreamQueue
from producer.config import ProducerConfig
from producer.metrics import Metrics
from producer.ordering import KeyOrder
from producer.outcomes import Outcomes, Resolution, result_of
from producer.records import Entry, KinesisRecord
from producer.retry import Backoff
from producer.shard_map import ShardMap
from producer.streams import StreamState
from producer.timers import Timers
from protocol.aggregation import Aggregator

__all__ = ["Pipeline", "Plan", "Resolution", "result_of"]

_PENDING_SAMPLE_INTERVAL = 0.1
_INF = float("inf")


@dataclass
class Plan:
    """What the pump should do now, and when to look again if nothing else wakes it."""

    requests: list[Request] = field(default_factory=list)
    refreshes: list[str] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    wake_at: float = float("inf")
    # Every connection is busy with records still waiting: only a completion can help, so adds
    # need not wake the pump.
    saturated: bool = False
    # A stream is due but nothing in it may go now (back-off, rate limit, ordering): adds would
    # only wake the pump to find the same, so the pump looks again on its own, shortly.
    stalled: bool = False


class Pipeline(Outcomes):
    """Not thread-safe: the producer calls it under its lock."""

    def __init__(self, config: ProducerConfig, metrics: Metrics, backoff: Backoff | None = None):
        self.config = config
        self.metrics = metrics
        self.backoff = backoff or Backoff(config.retry_backoff_min, config.retry_backoff_max)
        self.order = KeyOrder(config.preserve_order)
        self.outstanding_records = 0
        self.outstanding_bytes = 0
        self.in_flight = 0
        self.wake_at = float("inf")
        self._streams: dict[str, StreamState] = {}
        self._open_timers: Timers[tuple[Lane, int]] = Timers(_still_open)
        self._expiry: Timers[KinesisRecord] = Timers(_still_waiting)
        self._requests: set[Request] = set()
        self._map_versions = itertools.count(1)
        self._last_pending_sample = float("-inf")

    # -- adding ----------------------------------------------------------------------------------

    def has_room(self, size: int) -> bool:
        if not self.outstanding_records:
            return True  # one record over the byte limit still goes, alone
        return (
            self.outstanding_records < self.config.max_outstanding_records
            and self.outstanding_bytes + size <= self.config.max_outstanding_bytes
        )

    def admit(self, entry: Entry) -> bool:
        """Takes a new user record; True when the pump must look before ``wake_at``.

        The hot path of the producer (once per add_user_record), hence written out flat: the
        shard prediction, the ordering link and the lane lookup are inlined."""
        stream = self._streams.get(entry.stream)
        due = _INF
        if stream is None:
            stream = self._stream(entry.stream)
            due = -_INF  # a new stream: the pump starts fetching its shard map
        self.outstanding_records += 1
        self.outstanding_bytes += entry.size
        stream.received += 1
        hash_key = entry.hash_key
        last = stream.last_by_key
        if last is not None:
            previous = last.get(hash_key)
            if previous is not None and not previous.finished:
                entry.prev = previous
            last[hash_key] = entry
        shard = None
        tables = stream.lookup
        if tables is not None:
            ends, starts, ids = tables
            index = _bisect_left(ends, hash_key)
            if index < len(ends) and starts[index] <= hash_key:
                shard = ids[index]
        lane = stream.lanes.get(shard)
        if lane is None:
            lane = stream.lane(shard, entry.arrival, self.config)
        aggregator = lane.aggregator
        if aggregator is None:
            self._enqueue(stream, kr_mod.single(entry, lane, stream.version))
            due = min(due, stream.due_time())
            if due < self.wake_at:
                self.wake_at = due  # one wake-up is enough until the pump plans again
                return True
            return False
        if not aggregator.try_add(entry):  # type: ignore[arg-type]  # has UserRecord's fields
            self._close(stream, lane)
            aggregator = lane.aggregator
            assert aggregator is not None
            aggregator.try_add(entry)  # type: ignore[arg-type]
            due = min(due, stream.due_time())
        open_entries = lane.open_entries
        open_entries.append(entry)
        if entry.deadline < lane.open_deadline:
            lane.open_deadline = entry.deadline
            self._open_timers.push(entry.deadline, (lane, lane.open_token))
            due = min(due, entry.deadline)
        if len(open_entries) >= aggregator.max_count:
            self._close(stream, lane)
            due = min(due, stream.due_time())
        if due < self.wake_at:
            self.wake_at = due  # one wake-up is enough until the pump plans again
            return True
        return False

    def _stream(self, name: str) -> StreamState:
        stream = self._streams.get(name)
        if stream is None:
            config = self.config
            queue = StreamQueue(name, config.collection_max_count, config.collection_max_size)
            stream = self._streams[name] = StreamState(name, queue, self.order.table(name))
        return stream

    def _close(self, stream: StreamState, lane: Lane) -> None:
        """Turns the lane's open aggregate into a ready Kinesis record."""
        aggregator = lane.aggregator
        if not lane.open_entries or aggregator is None:
            return
        kr = kr_mod.from_aggregator(aggregator, lane.open_entries, lane, stream.version)
        # The record keeps the full aggregator to encode it when it is sent.
        lane.aggregator = Aggregator(aggregator.max_size, aggregator.max_count)
        lane.open_entries = []
        lane.open_deadline = float("inf")
        lane.open_token += 1
        self._enqueue(stream, kr)

    def _enqueue(self, stream: StreamState, kr: KinesisRecord) -> None:
        stream.queue.enqueue(kr)
        self._expiry.push(kr.expires_at, kr)

    # -- the pump ---------------------------------------------------------------------------------

    def poll(self, now: float, free_slots: int) -> Plan:
        """Closes due aggregates, expires records, and plans requests for up to
        ``free_slots`` connections and any shard-map fetches that are due."""
        plan = Plan()
        self._close_due_aggregates(now)
        self._expire(now, plan.resolutions)
        self._sample(now)
        wake = min(self._open_timers.peek(), self._expiry.peek())
        for stream in self._streams.values():
            if stream.refresh.due(now):
                stream.refresh.start()
                plan.refreshes.append(stream.name)
            elif stream.refresh.wanted and not stream.refresh.in_progress:
                wake = min(wake, stream.refresh.not_before)
            queue = stream.queue
            while queue.ready_count and not stream.awaiting_first_map:
                if not queue.due(now):
                    wake = min(wake, queue.earliest_deadline())
                    break
                if free_slots <= 0:
                    plan.saturated = True
                    break  # a completion frees a connection and wakes the pump
                request, blocked_until = queue.take_request(now, self.order.may_send)
                wake = min(wake, blocked_until)
                if request is None:
                    plan.stalled = True
                    break
                self._sent(request, now)
                plan.requests.append(request)
                free_slots -= 1
        plan.wake_at = wake
        return plan

    def _close_due_aggregates(self, now: float) -> None:
        for lane, token in self._open_timers.pop_due(now):
            if token == lane.open_token and lane.open_entries:
                self._close(self._streams[lane.stream], lane)

    def _sent(self, request: Request, now: float) -> None:
        self.in_flight += 1
        self._requests.add(request)
        waited = [
            (now - entry.arrival) * 1000.0
            for kr in request.krs
            for entry in kr.entries
            if not entry.attempts
        ]
        self.metrics.put_values("BufferingTime", waited, request.stream)

    def _sample(self, now: float) -> None:
        if now - self._last_pending_sample < _PENDING_SAMPLE_INTERVAL:
            return
        self._last_pending_sample = now
        self.flush_counters()
        for stream in self._streams.values():
            self.metrics.put("UserRecordsPending", stream.received - stream.finished, stream.name)

    def flush_counters(self) -> None:
        """Moves the per-add counters into the metrics (kept out of the hot path)."""
        for stream in self._streams.values():
            if stream.received > stream.reported:
                count = stream.received - stream.reported
                stream.reported = stream.received
                self.metrics.put_many("UserRecordsReceived", count, count, 1, 1, stream.name)

    # -- shard maps -------------------------------------------------------------------------------

    def map_loaded(self, name: str, shard_map: ShardMap | None, now: float) -> None:
        """A fetch ended (``shard_map`` None: it failed). Records waiting for shards the new map
        no longer has are packed again for the shards that replaced them."""
        stream = self._stream(name)
        stream.awaiting_first_map = False
        if shard_map is None:
            stream.refresh.failed(now)
            return
        stream.refresh.succeeded(now)
        old = stream.shard_map
        if old is not None and old.shards == shard_map.shards:
            return  # nothing moved: keep the version, so records in flight are reused as built
        shard_map.version = next(self._map_versions)
        stream.shard_map = shard_map
        stream.lookup = shard_map.lookup_tables()
        stale = [
            lane
            for shard, lane in stream.lanes.items()
            if shard is None or not shard_map.get(shard)
        ]
        moved: list[Entry] = []
        for lane in stale:
            self._close(stream, lane)
            for kr in stream.queue.take_all(lane):
                moved.extend(kr.entries)
                kr.discard()
            del stream.lanes[lane.shard]
        moved.sort(key=lambda entry: entry.seq)
        for lane, krs in self._regroup(stream, moved, now).items():
            self._enqueue_front(stream, lane, krs)

    # -- flush and shutdown -----------------------------------------------------------------------

    def flush(self, now: float) -> None:
        """Closes every open aggregate and makes every waiting record due now."""
        for stream in self._streams.values():
            for lane in list(stream.lanes.values()):
                self._close(stream, lane)
            stream.queue.expedite(now)

    def abandon(self, code: str, message: str, now: float) -> list[Resolution]:
        """Fails every unfinished record (close() gave up, or the producer broke)."""
        out: list[Resolution] = []
        for stream in self._streams.values():
            entries: list[Entry] = []
            for lane in stream.lanes.values():
                entries.extend(lane.open_entries)
                lane.open_entries = []
                if lane.aggregator is not None:
                    lane.aggregator.clear()
            entries.extend(entry for kr in stream.queue.ready_records() for entry in kr.entries)
            entries.extend(self._in_flight_entries(stream))
            for entry in entries:
                if not entry.finished:
                    entry.add_attempt(now, now, code, message)
                    self._fail(entry, out)
        return out

    def _in_flight_entries(self, stream: StreamState) -> list[Entry]:
        return [
            entry
            for request in self._requests
            if request.stream == stream.name
            for kr in request.krs
            for entry in kr.entries
        ]

    def stream_names(self) -> list[str]:
        return list(self._streams)

    def ready_records(self, stream: str) -> list[KinesisRecord]:
        """The Kinesis records of ``stream`` waiting to be sent (for inspection and benchmarks)."""
        state = self._streams.get(stream)
        return state.queue.ready_records() if state is not None else []


def _still_open(when: float, item: tuple[Lane, int]) -> bool:
    lane, token = item
    return token == lane.open_token and bool(lane.open_entries)


def _still_waiting(when: float, kr: KinesisRecord) -> bool:
    return kr.state == kr_mod.READY and kr.expires_at == when
