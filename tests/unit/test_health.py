"""The health summary, its periodic log line, and when the daemon counts as started."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from structlog.testing import capture_logs

from daemon.consumer import ConsumerStats
from daemon.consumer_states import ConsumerState
from daemon.health import (
    ConsumerTotals,
    HealthLogger,
    HealthSummary,
    HealthTracker,
    Readiness,
    started_check,
    summarize,
)
from daemon.leases.model import Lease
from daemon.leases.store import CallStats

P = ConsumerState.PROCESSING
I = ConsumerState.INITIALIZING  # noqa: E741 (a state's initial, like P)
W = ConsumerState.WAITING_ON_PARENTS


@dataclass
class FakeConsumer:
    shard_id: str
    stats: ConsumerStats = field(default_factory=ConsumerStats)
    state: ConsumerState = P
    child_pid: int | None = None

    def kill_child(self) -> None:
        raise AssertionError("not expected")


@dataclass
class FakeCoordinator:
    counts: dict[str, int] = field(default_factory=dict)
    last_scan: list[Lease] = field(default_factory=list)
    held: list[str] = field(default_factory=list)

    def held_keys(self) -> list[str]:
        return list(self.held)


@dataclass
class FakeStore:
    def call_stats(self) -> dict[str, CallStats]:
        return {}


@dataclass
class FakeDaemon:
    consumers: dict[str, FakeConsumer] = field(default_factory=dict)
    coordinator: FakeCoordinator = field(default_factory=FakeCoordinator)
    store: FakeStore = field(default_factory=FakeStore)

    def add(self, shard: str, **stats: int) -> FakeConsumer:
        consumer = FakeConsumer(shard, ConsumerStats(**stats))  # type: ignore[arg-type]
        self.consumers[shard] = consumer
        self.coordinator.held.append(shard)
        return consumer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the summary ------------------------------------------------------------------------


def test_summary_rate_is_records_over_the_interval() -> None:
    summary = summarize(
        {1: ConsumerTotals(100, 0)},
        {1: ConsumerTotals(700, 0), 2: ConsumerTotals(300, 1)},
        leases_held=2,
        lags={"a": 50, "b": 4000},
        states=[P, P],
        interval_s=60.0,
    )
    assert summary.records == 900
    assert summary.records_per_s == 15.0
    assert (summary.max_lag_ms, summary.max_lag_shard) == (4000, "b")
    assert summary.child_restarts == 1
    assert summary.processing == 2


def test_summary_lag_is_unknown_when_no_shard_has_reported_one() -> None:
    summary = summarize({}, {}, leases_held=1, lags={"a": None}, states=[I], interval_s=1.0)
    assert summary.max_lag_ms is None and summary.max_lag_shard is None
    assert "lag unknown" in summary.status_text()


def test_status_text_is_short_and_names_leases_rate_lag_and_restarts() -> None:
    summary = HealthSummary(
        leases_held=3,
        consumers=3,
        processing=3,
        records=600,
        interval_s=60.0,
        max_lag_ms=1340,
        max_lag_shard="shardId-2",
        child_restarts=2,
    )
    assert summary.status_text() == ("3 leases, 10.0 records/s, max lag 1.3 s, 2 child restarts")


def test_tracker_covers_the_time_since_its_previous_summary() -> None:
    daemon = FakeDaemon()
    clock = Clock()
    consumer = daemon.add("shardId-0")
    tracker = HealthTracker(daemon, clock=clock)
    consumer.stats.records = 500
    consumer.stats.millis_behind_latest = 20
    clock.now += 10
    first = tracker.summary()
    consumer.stats.records = 600
    consumer.stats.restarts = 1
    clock.now += 20
    second = tracker.summary()
    assert (first.records, first.interval_s, first.max_lag_ms) == (500, 10.0, 20)
    assert (second.records, second.interval_s, second.child_restarts) == (100, 20.0, 1)
    assert second.leases_held == 1


def test_tracker_counts_the_last_records_of_a_consumer_that_ended() -> None:
    daemon = FakeDaemon()
    consumer = daemon.add("shardId-0", records=10)
    tracker = HealthTracker(daemon, clock=Clock())
    tracker.summary()
    consumer.stats.records = 25
    del daemon.consumers["shardId-0"]
    assert tracker.summary().records == 15
    assert tracker.summary().records == 0


def test_health_logger_logs_one_line_with_every_field() -> None:
    daemon = FakeDaemon()
    daemon.add("shardId-0", records=120)
    clock = Clock()
    logger = HealthLogger(daemon, 60, clock=clock)
    clock.now += 60
    with capture_logs() as logs:
        logger.log_once()
    [line] = logs
    assert line["event"] == "health"
    assert line["log_level"] == "info"
    assert line["records_per_s"] == 2.0
    assert line["leases_held"] == 1
    assert {"max_lag_ms", "max_lag_shard", "child_restarts"} <= set(line)


def test_health_logger_runs_every_interval_until_stopped() -> None:
    daemon = FakeDaemon()
    daemon.add("shardId-0")
    logger = HealthLogger(daemon, 0.01)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(logger.run(stop))
        for _ in range(500):
            if logger.last is not None:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert logger.last is not None and logger.last.leases_held == 1


def test_health_logger_with_interval_zero_never_logs() -> None:
    logger = HealthLogger(FakeDaemon(), 0)

    async def scenario() -> None:
        await asyncio.wait_for(logger.run(asyncio.Event()), 5)

    asyncio.run(scenario())
    assert logger.last is None


# -- readiness ----------------------------------------------------------------------------


def test_ready_as_soon_as_a_consumer_processes() -> None:
    readiness = Readiness()
    assert not readiness.observe(0.0, scanned=False, states=[I])
    assert readiness.observe(0.1, scanned=True, states=[I, P])


def test_a_worker_with_nothing_to_take_is_ready_after_a_quiet_period() -> None:
    readiness = Readiness(quiet_s=2.0)
    assert not readiness.observe(0.0, scanned=False, states=[])
    assert not readiness.observe(1.0, scanned=True, states=[])
    assert not readiness.observe(2.5, scanned=True, states=[])
    assert readiness.observe(3.0, scanned=True, states=[])


def test_a_take_during_the_quiet_period_restarts_it() -> None:
    readiness = Readiness(quiet_s=2.0)
    assert not readiness.observe(0.0, scanned=True, states=[])
    assert not readiness.observe(1.0, scanned=True, states=[I])
    assert not readiness.observe(2.5, scanned=True, states=[W])
    assert readiness.observe(4.5, scanned=True, states=[W])


def test_children_that_never_start_do_not_block_readiness_forever() -> None:
    readiness = Readiness(max_wait_s=60.0)
    assert not readiness.observe(0.0, scanned=True, states=[I])
    assert not readiness.observe(59.0, scanned=True, states=[ConsumerState.RESTARTING])
    assert readiness.observe(60.0, scanned=True, states=[I])


def test_started_check_reads_the_daemon() -> None:
    daemon = FakeDaemon()
    clock = Clock()
    started = started_check(daemon, clock=clock)
    assert not started()
    daemon.coordinator.last_scan = [Lease("shardId-0")]
    daemon.add("shardId-0").state = P
    assert started()
