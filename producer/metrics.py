"""The producer's metrics, with the KPL's names, levels, units and dimensions.

Owns the accumulators (count, sum, min, max per metric name and dimensions), the in-process
:class:`MetricsSnapshot` (cumulative since start, rolled up to stream and global level), and the
per-interval window that :mod:`producer.metrics_upload` drains for CloudWatch. Everything is
collected whatever ``metrics_level`` says; level and granularity only filter the upload, as in
the KPL.

Dimensions are (stream, shard, error code); None means "all" in a snapshot and "not set" when a
value is put (a metric put without a shard, such as ``UserRecordsReceived``, exists only at
stream and global level).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["LEVELS", "METRICS", "MetricKey", "Metrics", "MetricsSnapshot", "Stat"]

# name -> (level, CloudWatch unit); from the KPL's metrics_constants.
METRICS: dict[str, tuple[str, str]] = {
    "UserRecordsReceived": ("detailed", "Count"),
    "UserRecordsPending": ("detailed", "Count"),
    "UserRecordsPut": ("summary", "Count"),
    "UserRecordsDataPut": ("detailed", "Bytes"),
    "KinesisRecordsPut": ("summary", "Count"),
    "KinesisRecordsDataPut": ("detailed", "Bytes"),
    "ErrorsByCode": ("summary", "Count"),
    "AllErrors": ("summary", "Count"),
    "RetriesPerRecord": ("detailed", "Count"),
    "UserRecordExpired": ("summary", "Count"),
    "BufferingTime": ("summary", "Milliseconds"),
    "RequestTime": ("detailed", "Milliseconds"),
    "UserRecordsPerKinesisRecord": ("detailed", "Count"),
    "KinesisRecordsPerPutRecordsRequest": ("detailed", "Count"),
    "UserRecordsPerPutRecordsRequest": ("detailed", "Count"),
}
LEVELS = ("none", "summary", "detailed")
GRANULARITIES = ("global", "stream", "shard")

MetricKey = tuple[str, str | None, str | None, str | None]
"""(metric name, stream, shard id, error code)."""


@dataclass(frozen=True, slots=True)
class Stat:
    count: int
    sum: float
    min: float
    max: float

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def merged(self, other: Stat) -> Stat:
        return Stat(
            self.count + other.count,
            self.sum + other.sum,
            min(self.min, other.min),
            max(self.max, other.max),
        )


class _Acc:
    __slots__ = ("count", "max", "min", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")

    def add(self, count: int, total: float, low: float, high: float) -> None:
        self.count += count
        self.sum += total
        if low < self.min:
            self.min = low
        if high > self.max:
            self.max = high

    def stat(self) -> Stat:
        return Stat(self.count, self.sum, self.min, self.max)


class Metrics:
    """Thread-safe accumulators. Callers put per Kinesis record or per request, not per user
    record, where they can (``put_many``), to keep the hot path short."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total: dict[MetricKey, _Acc] = {}
        self._window: dict[MetricKey, _Acc] = {}

    def put(
        self,
        name: str,
        value: float,
        stream: str | None = None,
        shard: str | None = None,
        error_code: str | None = None,
    ) -> None:
        self.put_many(name, 1, value, value, value, stream, shard, error_code)

    def put_values(
        self,
        name: str,
        values: Iterable[float],
        stream: str | None = None,
        shard: str | None = None,
    ) -> None:
        items = list(values)
        if items:
            self.put_many(name, len(items), sum(items), min(items), max(items), stream, shard)

    def put_many(
        self,
        name: str,
        count: int,
        total: float,
        low: float,
        high: float,
        stream: str | None = None,
        shard: str | None = None,
        error_code: str | None = None,
    ) -> None:
        """Adds ``count`` samples summing to ``total`` with the given extremes."""
        key = (name, stream, shard, error_code)
        with self._lock:
            for table in (self._total, self._window):
                acc = table.get(key)
                if acc is None:
                    acc = table[key] = _Acc()
                acc.add(count, total, low, high)

    def snapshot(self) -> MetricsSnapshot:
        """Cumulative values since the producer started, with stream and global roll-ups."""
        with self._lock:
            finest = {key: acc.stat() for key, acc in self._total.items()}
        return MetricsSnapshot(rolled_up(finest))

    def drain_window(self) -> dict[MetricKey, Stat]:
        """The values put since the last drain (finest dimensions only), and a new window."""
        with self._lock:
            window, self._window = self._window, {}
        return {key: acc.stat() for key, acc in window.items()}


def rolled_up(finest: dict[MetricKey, Stat]) -> dict[MetricKey, Stat]:
    """``finest`` plus its stream-level (shard None) and global (stream None) totals."""
    out: dict[MetricKey, Stat] = {}
    for (name, stream, shard, code), stat in finest.items():
        keys: list[MetricKey] = [(name, stream, shard, code)]
        if shard is not None:
            keys.append((name, stream, None, code))
        if stream is not None:
            keys.append((name, None, None, code))
        for key in keys:
            seen = out.get(key)
            out[key] = stat if seen is None else seen.merged(stat)
    return out


class MetricsSnapshot:
    """Read-only metrics. ``get("UserRecordsPut")`` is the global value;
    ``get("UserRecordsPut", stream="s", shard="shardId-000000000000")`` one shard's."""

    def __init__(self, stats: dict[MetricKey, Stat]):
        self._stats = stats

    def get(
        self,
        name: str,
        stream: str | None = None,
        shard: str | None = None,
        error_code: str | None = None,
    ) -> Stat | None:
        return self._stats.get((name, stream, shard, error_code))

    def sum(
        self,
        name: str,
        stream: str | None = None,
        shard: str | None = None,
        error_code: str | None = None,
    ) -> float:
        """The sum of a metric's samples (0 when it has none): for Count metrics, the count."""
        stat = self.get(name, stream, shard, error_code)
        return stat.sum if stat else 0.0

    def errors_by_code(self, stream: str | None = None) -> dict[str, int]:
        """ErrorsByCode per error code, for all streams or one."""
        return {
            code: int(stat.sum)
            for (name, s, shard, code), stat in self._stats.items()
            if name == "ErrorsByCode" and s == stream and shard is None and code is not None
        }

    def __iter__(self) -> Iterator[tuple[MetricKey, Stat]]:
        return iter(sorted(self._stats.items(), key=lambda item: tuple(map(str, item[0]))))

    def __len__(self) -> int:
        return len(self._stats)
