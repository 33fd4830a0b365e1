"""The daemon's metrics: what is measured, under the KCL's names, and where it is kept.

Owns two things:

* ``MetricsRegistry``: a small in-process store of counters, gauges and
  distributions keyed by (name, dimensions). ``metricsLevel`` decides what is
  recorded: each metric has a level (SUMMARY or DETAILED, as in the KCL); a
  registry at SUMMARY keeps SUMMARY metrics only, at NONE nothing. Every
  recorded observation also goes to the registered sinks (the CloudWatch
  publisher); ``snapshot()`` gives the cumulative values (Prometheus, tests).
* ``MetricsSampler``: reads the running daemon every few seconds (consumer
  stats, coordinator counts, lease-table call stats, children's usage) and
  records the change since its previous reading. Nothing in the daemon calls
  into metrics; a pull costs O(shards) additions every interval, however many
  records flow.

Names, operations, dimensions and levels follow the Java KCL (2.x), so
dashboards built for it keep working:

Per shard (Operation=ProcessTask, ShardId):
    RecordsProcessed, DataBytesProcessed, MillisBehindLatest,
    RecordProcessor.processRecords.Time, CheckpointFailures*, ChildRestarts*,
    ChildMemoryLimitRestarts* (SUMMARY); ChildRss*, ChildCpu* (DETAILED).
Per worker (WorkerIdentifier):
    Operation=RenewAllLeases: CurrentLeases, LostLeases (SUMMARY);
    Operation=TakeLeases: TakenLeases, NumWorkers, StolenLeases* (SUMMARY),
    TotalLeases (DETAILED);
    lease-table calls: <Call>.Time and <Call>.Success (DETAILED) under the
    Operation the KCL uses for them (``LEASE_CALLS``).

(* not in the KCL.) Differences that come from sampling: a counter's
SampleCount is the number of samples, not of batches; a time's Sum and
SampleCount are exact but its Minimum and Maximum are the interval's mean
(the daemon keeps sums, not each call's time); lease-table times carry
WorkerIdentifier instead of the ShardId the KCL gives UpdateLease.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from daemon.child_limits import ProcessSample
from daemon.health import ConsumerView, DaemonView
from daemon.leases.store import CallStats
from daemon.logs import get_logger

SAMPLE_INTERVAL_S = 5.0

OPERATION = "Operation"
SHARD_ID = "ShardId"
WORKER_ID = "WorkerIdentifier"

PROCESS_TASK = "ProcessTask"
RENEW_ALL_LEASES = "RenewAllLeases"
TAKE_LEASES = "TakeLeases"

COUNT, BYTES, MILLISECONDS, PERCENT = "Count", "Bytes", "Milliseconds", "Percent"

#: LeaseStore operation -> (Operation dimension, metric prefix), as the KCL names them.
LEASE_CALLS: dict[str, tuple[str, str]] = {
    "renew": (RENEW_ALL_LEASES, "RenewLease"),
    "take": (TAKE_LEASES, "TakeLease"),
    "list_leases": (TAKE_LEASES, "ListLeases"),
    "checkpoint": (PROCESS_TASK, "UpdateLease"),
    "prepare_checkpoint": (PROCESS_TASK, "UpdateLease"),
    "evict": ("EvictLease", "EvictLease"),
    "create_lease": ("ShardSyncTask", "CreateLease"),
}
_OTHER_LEASE_CALLS = "LeaseTable"


class Level(enum.IntEnum):
    """A metric's level, and the registry's: a metric is kept if its level >= the registry's."""

    DETAILED = 1
    SUMMARY = 2
    NONE = 3

    @classmethod
    def parse(cls, text: str) -> Level:
        return cls[text.strip().upper()]


def recording_level(metrics_level: str, prometheus_enabled: bool) -> Level:
    """What the registry records: ``metricsLevel``, or DETAILED for Prometheus alone.

    metricsLevel is about CloudWatch (NONE: publish nothing); a Prometheus
    endpoint asked for with metrics off still gets every metric.
    """
    level = Level.parse(metrics_level)
    if level is Level.NONE and prometheus_enabled:
        return Level.DETAILED
    return level


class Kind(enum.Enum):
    COUNTER = "counter"  # cumulative total: records, bytes, restarts
    GAUGE = "gauge"  # last value: lag, leases held, memory
    DISTRIBUTION = "distribution"  # count, sum, min, max: times, success rates


Dimensions = tuple[tuple[str, str], ...]


def dimensions(values: Mapping[str, str]) -> Dimensions:
    return tuple(sorted(values.items()))


@dataclass(frozen=True)
class StatisticSet:
    count: float
    total: float
    minimum: float
    maximum: float

    @classmethod
    def one(cls, value: float) -> StatisticSet:
        return cls(1, value, value, value)

    def merged(self, other: StatisticSet) -> StatisticSet:
        return StatisticSet(
            self.count + other.count,
            self.total + other.total,
            min(self.minimum, other.minimum),
            max(self.maximum, other.maximum),
        )


@dataclass(frozen=True)
class Datum:
    """One recorded observation, as a sink receives it."""

    name: str
    dimensions: Dimensions
    unit: str
    kind: Kind
    stats: StatisticSet
    timestamp: float  # epoch seconds


@dataclass(frozen=True)
class Series:
    """Everything recorded under one (name, dimensions) since it was first seen."""

    name: str
    dimensions: Dimensions
    unit: str
    kind: Kind
    stats: StatisticSet
    last: float

    @property
    def value(self) -> float:
        """A counter's total, a gauge's last value, a distribution's sum."""
        return self.last if self.kind is Kind.GAUGE else self.stats.total

    def dimension(self, name: str) -> str | None:
        return dict(self.dimensions).get(name)


class MetricsSnapshot:
    """A consistent copy of a registry's series."""

    def __init__(self, series: Mapping[tuple[str, Dimensions], Series]) -> None:
        self._series = dict(series)

    def get(self, name: str, **dims: str) -> Series | None:
        return self._series.get((name, dimensions(dims)))

    def value(self, name: str, **dims: str) -> float | None:
        series = self.get(name, **dims)
        return series.value if series else None

    def named(self, name: str) -> list[Series]:
        return [s for (n, _), s in sorted(self._series.items()) if n == name]

    def __iter__(self) -> Iterator[Series]:
        return iter([self._series[key] for key in sorted(self._series)])

    def __len__(self) -> int:
        return len(self._series)


Sink = Callable[[Datum], object]


class _Accumulator:
    """One series' running values, updated in place (a sample touches thousands)."""

    __slots__ = ("count", "kind", "last", "maximum", "minimum", "total", "unit")

    def __init__(self, unit: str, kind: Kind, stats: StatisticSet) -> None:
        self.unit = unit
        self.kind = kind
        self.count = stats.count
        self.total = stats.total
        self.minimum = stats.minimum
        self.maximum = stats.maximum
        self.last = stats.maximum

    def add(self, stats: StatisticSet) -> None:
        self.count += stats.count
        self.total += stats.total
        self.minimum = min(self.minimum, stats.minimum)
        self.maximum = max(self.maximum, stats.maximum)
        self.last = stats.maximum

    def series(self, name: str, dims: Dimensions) -> Series:
        stats = StatisticSet(self.count, self.total, self.minimum, self.maximum)
        return Series(name, dims, self.unit, self.kind, stats, self.last)


class MetricsRegistry:
    """Counters, gauges and distributions by (name, dimensions); thread-safe."""

    def __init__(self, level: Level, *, clock: Callable[[], float] = time.time) -> None:
        self.level = level
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[tuple[str, Dimensions], _Accumulator] = {}
        self._sinks: list[Sink] = []

    def enabled(self, level: Level) -> bool:
        return self.level is not Level.NONE and level >= self.level

    def add_sink(self, sink: Sink) -> None:
        """``sink(datum)`` is called, in the recording thread, for every observation kept."""
        self._sinks.append(sink)

    def count(
        self, name: str, value: float, dims: Mapping[str, str], *, level: Level, unit: str = COUNT
    ) -> None:
        self._record(name, dims, unit, Kind.COUNTER, StatisticSet.one(value), level)

    def gauge(
        self, name: str, value: float, dims: Mapping[str, str], *, level: Level, unit: str = COUNT
    ) -> None:
        self._record(name, dims, unit, Kind.GAUGE, StatisticSet.one(value), level)

    def distribution(
        self,
        name: str,
        stats: StatisticSet,
        dims: Mapping[str, str],
        *,
        level: Level,
        unit: str = MILLISECONDS,
    ) -> None:
        if stats.count > 0:
            self._record(name, dims, unit, Kind.DISTRIBUTION, stats, level)

    def _record(
        self,
        name: str,
        dims: Mapping[str, str],
        unit: str,
        kind: Kind,
        stats: StatisticSet,
        level: Level,
    ) -> None:
        if not self.enabled(level):
            return
        key = (name, dimensions(dims))
        with self._lock:
            accumulator = self._series.get(key)
            if accumulator is None:
                self._series[key] = _Accumulator(unit, kind, stats)
            else:
                accumulator.add(stats)
        if self._sinks:
            datum = Datum(name, key[1], unit, kind, stats, self._clock())
            for sink in self._sinks:
                sink(datum)

    def forget(self, dimension: str, value: str) -> int:
        """Drop every series with ``dimension`` = ``value`` (a shard no longer held)."""
        with self._lock:
            gone = [key for key in self._series if (dimension, value) in key[1]]
            for key in gone:
                del self._series[key]
        return len(gone)

    def snapshot(self) -> MetricsSnapshot:
        with self._lock:
            return MetricsSnapshot({key: acc.series(*key) for key, acc in self._series.items()})


# -- sampling the daemon ---------------------------------------------------------


class ChildUsage(Protocol):
    """Children's latest usage and memory-limit restarts (``ChildWatcher`` is one)."""

    @property
    def latest(self) -> Mapping[str, ProcessSample]: ...
    @property
    def kills(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class _ShardTotals:
    records: int = 0
    bytes: int = 0
    batches: int = 0
    restarts: int = 0
    checkpoint_failures: int = 0
    process_seconds: float = 0.0


def _totals(consumer: ConsumerView) -> _ShardTotals:
    stats = consumer.stats
    return _ShardTotals(
        stats.records,
        stats.bytes,
        stats.batches,
        stats.restarts,
        stats.checkpoint_failures,
        stats.process_records_seconds,
    )


def mean_time(count: float, total_ms: float) -> StatisticSet:
    """A distribution of ``count`` times summing to ``total_ms`` whose extremes are unknown."""
    mean = total_ms / count if count else 0.0
    return StatisticSet(count, total_ms, mean, mean)


def success_set(calls: int, failures: int) -> StatisticSet:
    """``calls`` 0/1 outcomes as the KCL's ``*.Success`` metric (exact: values are 0 or 1)."""
    successes = calls - failures
    return StatisticSet(calls, successes, 0.0 if failures else 1.0, 1.0 if successes else 0.0)


class MetricsSampler:
    """Records the daemon's activity since the previous sample into a registry."""

    def __init__(
        self,
        registry: MetricsRegistry,
        view: DaemonView,
        *,
        worker_id: str,
        children: ChildUsage | None = None,
    ) -> None:
        self._registry = registry
        self._view = view
        self._worker = worker_id
        self._children = children
        self._log = get_logger(worker_id=worker_id)
        self._seen: dict[str, tuple[ConsumerView, _ShardTotals]] = {}
        self._counts: dict[str, int] = {}
        self._calls: dict[str, CallStats] = {}
        self._kills: dict[str, int] = {}

    def sample(self) -> None:
        if self._registry.level is Level.NONE:
            return
        self._sample_shards()
        self._sample_leases()
        self._sample_lease_calls()

    # -- per shard --------------------------------------------------------------

    def _sample_shards(self) -> None:
        current = dict(self._view.consumers)
        for shard, (consumer, before) in self._seen.items():
            if current.get(shard) is not consumer:
                # Ended (or replaced) since the last sample: its last activity still counts.
                self._record_shard(shard, before, _totals(consumer), None)
                if shard not in current:
                    self._registry.forget(SHARD_ID, shard)
        seen: dict[str, tuple[ConsumerView, _ShardTotals]] = {}
        for shard, consumer in current.items():
            previous = self._seen.get(shard)
            before = previous[1] if previous and previous[0] is consumer else _ShardTotals()
            now = _totals(consumer)
            self._record_shard(shard, before, now, consumer)
            seen[shard] = (consumer, now)
        self._seen = seen
        if self._children is not None:
            self._sample_children(current)

    def _record_shard(
        self,
        shard: str,
        before: _ShardTotals,
        now: _ShardTotals,
        consumer: ConsumerView | None,
    ) -> None:
        registry = self._registry
        dims = {OPERATION: PROCESS_TASK, SHARD_ID: shard}
        summary = Level.SUMMARY
        registry.count("RecordsProcessed", now.records - before.records, dims, level=summary)
        registry.count(
            "DataBytesProcessed", now.bytes - before.bytes, dims, level=summary, unit=BYTES
        )
        registry.count(
            "CheckpointFailures",
            now.checkpoint_failures - before.checkpoint_failures,
            dims,
            level=summary,
        )
        registry.count("ChildRestarts", now.restarts - before.restarts, dims, level=summary)
        batches = now.batches - before.batches
        registry.distribution(
            "RecordProcessor.processRecords.Time",
            mean_time(batches, (now.process_seconds - before.process_seconds) * 1000),
            dims,
            level=summary,
        )
        if consumer is not None and consumer.stats.millis_behind_latest is not None:
            registry.gauge(
                "MillisBehindLatest",
                consumer.stats.millis_behind_latest,
                dims,
                level=summary,
                unit=MILLISECONDS,
            )

    def _sample_children(self, current: Mapping[str, ConsumerView]) -> None:
        assert self._children is not None
        registry = self._registry
        for shard, sample in self._children.latest.items():
            if shard not in current:
                continue
            dims = {OPERATION: PROCESS_TASK, SHARD_ID: shard}
            registry.gauge("ChildRss", sample.rss_bytes, dims, level=Level.DETAILED, unit=BYTES)
            registry.gauge("ChildCpu", sample.cpu_percent, dims, level=Level.DETAILED, unit=PERCENT)
        kills = dict(self._children.kills)
        for shard, total in kills.items():
            delta = total - self._kills.get(shard, 0)
            if delta:
                dims = {OPERATION: PROCESS_TASK, SHARD_ID: shard}
                registry.count("ChildMemoryLimitRestarts", delta, dims, level=Level.SUMMARY)
        self._kills = kills

    # -- per worker -----------------------------------------------------------------

    def _sample_leases(self) -> None:
        registry = self._registry
        coordinator = self._view.coordinator
        counts = dict(coordinator.counts)

        def delta(name: str) -> int:
            return counts.get(name, 0) - self._counts.get(name, 0)

        renew = {OPERATION: RENEW_ALL_LEASES, WORKER_ID: self._worker}
        take = {OPERATION: TAKE_LEASES, WORKER_ID: self._worker}
        summary = Level.SUMMARY
        registry.gauge("CurrentLeases", len(coordinator.held_keys()), renew, level=summary)
        registry.count("LostLeases", delta("lost"), renew, level=summary)
        registry.count("TakenLeases", delta("taken"), take, level=summary)
        registry.count("StolenLeases", delta("stolen"), take, level=summary)
        scan = list(coordinator.last_scan)
        if scan:
            owners = {lease.lease_owner for lease in scan if lease.lease_owner} | {self._worker}
            registry.gauge("NumWorkers", len(owners), take, level=summary)
            registry.gauge("TotalLeases", len(scan), take, level=Level.DETAILED)
        self._counts = counts

    def _sample_lease_calls(self) -> None:
        stats = dict(self._view.store.call_stats())
        grouped: dict[tuple[str, str], list[CallStats]] = {}
        for op, now in stats.items():
            before = self._calls.get(op, CallStats())
            if now.count <= before.count:
                continue
            operation, prefix = LEASE_CALLS.get(op, (_OTHER_LEASE_CALLS, _camel(op)))
            grouped.setdefault((operation, prefix), []).append(
                CallStats(
                    now.count - before.count,
                    now.failures - before.failures,
                    now.total_seconds - before.total_seconds,
                )
            )
        for (operation, prefix), parts in sorted(grouped.items()):
            calls = sum(part.count for part in parts)
            failures = sum(part.failures for part in parts)
            millis = sum(part.total_seconds for part in parts) * 1000
            dims = {OPERATION: operation, WORKER_ID: self._worker}
            self._registry.distribution(
                f"{prefix}.Time", mean_time(calls, millis), dims, level=Level.DETAILED
            )
            self._registry.distribution(
                f"{prefix}.Success",
                success_set(calls, failures),
                dims,
                level=Level.DETAILED,
                unit=COUNT,
            )
        self._calls = stats

    async def run(self, stop: asyncio.Event, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        """Sample every ``interval_s`` until ``stop`` is set (the final sample is the caller's)."""
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            if not stop.is_set():
                self.sample()


def _camel(op: str) -> str:
    return "".join(part.capitalize() for part in op.split("_"))
