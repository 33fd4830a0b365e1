"""Per-stream state of the producer's pipeline.

Owns :class:`StreamState`: a stream's shard map (and the lookup tables the hot path inlines),
its refresh schedule, its lanes (one per predicted shard, plus shard None for records sent raw),
its queue of ready Kinesis records, its ordering table and its counters. Pure data with small
helpers; the pipeline drives it under the producer's lock.
"""

from __future__ import annotations

from producer.collector import Lane, StreamQueue
from producer.config import ProducerConfig
from producer.limiter import ShardLimiter
from producer.records import Entry
from producer.shard_map import RefreshSchedule, ShardMap
from protocol.aggregation import Aggregator

__all__ = ["StreamState"]


class StreamState:
    """One stream as the pipeline sees it."""

    __slots__ = (
        "awaiting_first_map",
        "finished",
        "last_by_key",
        "lanes",
        "lookup",
        "name",
        "queue",
        "received",
        "refresh",
        "reported",
        "shard_map",
    )

    def __init__(self, name: str, queue: StreamQueue, last_by_key: dict[int, Entry] | None):
        self.name = name
        # The newest unfinished entry per hash key (None: ordering is off); see KeyOrder.
        self.last_by_key = last_by_key
        self.queue = queue
        self.shard_map: ShardMap | None = None
        # The map's lookup tables, inlined in Pipeline.admit (None until a map arrives).
        self.lookup: tuple[list[int], list[int], list[str]] | None = None
        self.refresh = RefreshSchedule()
        # Until the first ListShards ends, records wait instead of going out raw: when the map
        # arrives they are aggregated (a fast producer would otherwise send its first thousands
        # of records one by one while the map loads).
        self.awaiting_first_map = True
        self.lanes: dict[str | None, Lane] = {}
        # Cumulative counts; pending = received - finished, and the UserRecordsReceived metric
        # gets received - reported (one increment per add is all the hot path pays).
        self.received = 0
        self.finished = 0
        self.reported = 0

    @property
    def version(self) -> int:
        """The version of the shard map records are predicted with (0: none yet)."""
        return self.shard_map.version if self.shard_map is not None else 0

    def predict(self, hash_key: int) -> str | None:
        shard_map = self.shard_map
        return shard_map.shard_for(hash_key) if shard_map is not None else None

    def lane(self, shard: str | None, now: float, config: ProducerConfig) -> Lane:
        """The lane of ``shard``, made on first use: a rate limiter and an aggregator for a
        known shard, neither for shard None (records sent raw while no map says where)."""
        lane = self.lanes.get(shard)
        if lane is None:
            aggregator = None
            limiter = None
            if shard is not None:
                limiter = ShardLimiter(config.rate_limit, now)
                if config.aggregation_enabled:
                    aggregator = Aggregator(
                        config.aggregation_max_size, config.aggregation_max_count
                    )
            lane = self.lanes[shard] = Lane(self.name, shard, aggregator, limiter)
        return lane

    def due_time(self) -> float:
        """When the waiting records become due (minus infinity when they fill a request)."""
        queue = self.queue
        if queue.ready_count >= queue.max_count or queue.ready_bytes >= queue.max_size:
            return float("-inf")
        return queue.earliest_deadline()
