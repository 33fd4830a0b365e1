"""The real kcl-daemon under injected backend faults: a fault proxy between it and moto.

Every test checks the same three promises: no record is lost (each shard's records arrive, in
order, at least once), no checkpoint ever moves backwards (the lease table is polled all along,
straight at moto), and the daemon never crashes (it runs throughout and exits 0 on SIGTERM).

Faults begin once the worker runs (start-up retries a failed call only a few times, on
purpose, and gives up with exit 1; one test covers those retries). The outage of each backend lasts OUTAGE_S, the issue's 30 s, with failoverTimeMillis
3000, so the DynamoDB outage is 10x the failover time; one more DynamoDB outage (10 s) hangs
every call instead of refusing it. Records are written straight to moto during the outages.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.monitor import CheckpointMonitor
from tests.faults.proxy import (
    DYNAMODB,
    KINESIS,
    Delay,
    FaultProxy,
    LoseResponse,
    Reset,
    Rule,
    dynamodb_capacity_exceeded,
    expired_iterator,
    server_error,
    throttle,
)
from tests.support.daemon_runner import (
    DaemonRun,
    aws_client,
    create_stream,
    put_records,
    python_processor,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

OUTAGE_S = 30.0
FAILOVER_MS = 3000
LIFECYCLE_LOGGER = python_processor("tests.faults.children.lifecycle_logger")
READS = ("GetRecords", "GetShardIterator")


@pytest.fixture
def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"stream-{suffix}", f"app-{suffix}"


@pytest.fixture
def proxy(moto_server) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.endpoint, seed=7) as running:
        yield running
    assert not running.handler_errors, "the proxy itself failed"


@pytest.fixture
def monitor(moto_server, names) -> Iterator[CheckpointMonitor]:
    watcher = CheckpointMonitor(aws_client("dynamodb", moto_server.endpoint), names[1]).start()
    yield watcher
    watcher.stop()


class Writer:
    """Writes numbered records straight to moto and remembers each shard's, in order."""

    def __init__(self, endpoint: str, stream: str) -> None:
        self.kinesis = aws_client("kinesis", endpoint)
        self.stream = stream
        self.written: dict[str, list[str]] = defaultdict(list)
        self.count = 0

    def put(self, count: int, tag: str) -> None:
        records = [(f"key-{i % 37}", f"{tag}-{i}".encode()) for i in range(count)]
        for shard, data in put_records(self.kinesis, self.stream, records).items():
            self.written[shard].extend(data)
        self.count += count


def _start(tmp_path: Path, proxy: FaultProxy, names: tuple[str, str], **extra: object) -> DaemonRun:
    stream, application = names
    return DaemonRun(
        tmp_path,
        proxy.endpoint,
        stream,
        application,
        LIFECYCLE_LOGGER,
        extra={"failoverTimeMillis": FAILOVER_MS, "metricsLevel": "NONE", **extra},
        env={"KCL_CHILD_EVENTS": str(tmp_path / "events.tsv")},
    ).start()


def _setup(moto_server, names, shards: int, count: int) -> Writer:
    writer = Writer(moto_server.endpoint, names[0])
    create_stream(writer.kinesis, names[0], shards)
    writer.put(count, "before")
    return writer


def _child_events(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / "events.tsv"
    if not path.exists():
        return []
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    return [parts[2] for parts in lines if len(parts) == 3 and parts[0] == name]


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _delivered(run: DaemonRun) -> dict[str, list[str]]:
    per_shard: dict[str, list[str]] = defaultdict(list)
    for record in run.processed():
        per_shard[record.shard_id].append(record.data)
    return per_shard


def _all_delivered(run: DaemonRun, writer: Writer) -> bool:
    delivered = _delivered(run)
    return all(set(data) <= set(delivered[shard]) for shard, data in writer.written.items())


def _assert_promises_kept(run: DaemonRun, writer: Writer, monitor: CheckpointMonitor) -> None:
    """No record lost (in order per shard), no checkpoint backwards, no bug logged."""
    delivered = _delivered(run)
    for shard, data in writer.written.items():
        assert _dedupe(delivered[shard]) == data, f"{shard}: records lost or out of order"
    monitor.stop()
    assert not monitor.backwards(), monitor.describe()
    assert monitor.latest(), "the monitor saw no checkpoint at all"
    unexpected = [
        e for e in run.events() if "exception" in e or "unexpectedly" in e.get("event", "")
    ]
    assert not unexpected, unexpected[:3]


def test_throttling_server_errors_slow_answers_and_resets_lose_nothing(
    moto_server, proxy, monitor, tmp_path, names
):
    writer = _setup(moto_server, names, shards=4, count=400)
    rules = [
        Rule(throttle(KINESIS), service=KINESIS, operations=READS, probability=0.15),
        Rule(server_error(500), service=KINESIS, operations=READS, probability=0.05),
        Rule(server_error(503), service=KINESIS, operations=READS, probability=0.05),
        Rule(Reset(), service=KINESIS, operations=READS, probability=0.05),
        Rule(Delay(0.5), service=KINESIS, operations=READS, probability=0.05),
        Rule(throttle(KINESIS), service=KINESIS, operations={"ListShards"}, probability=0.5),
        Rule(throttle(DYNAMODB), service=DYNAMODB, probability=0.1),
        Rule(dynamodb_capacity_exceeded(), service=DYNAMODB, probability=0.05),
        Rule(server_error(500), service=DYNAMODB, probability=0.05),
        Rule(Reset(), service=DYNAMODB, probability=0.05),
        Rule(LoseResponse(), service=DYNAMODB, operations={"UpdateItem"}, probability=0.1),
        Rule(Delay(0.3), service=DYNAMODB, probability=0.1),
    ]
    run = _start(tmp_path, proxy, names)
    try:
        # Start-up gives up after a few failed attempts, and these rules fail up to half the
        # calls of some kinds: the faults begin once the worker runs.
        run.wait_for(lambda: bool(run.find_events("worker started")), 60, "the worker to start")
        for rule in rules:
            proxy.add(rule)
        run.wait_for(lambda: len(run.processed()) >= 200, 60, "a first half processed")
        writer.put(200, "during")
        run.wait_for(lambda: _all_delivered(run, writer), 90, "every record processed")
        unfired = [rule.fault for rule in rules if not rule.fired]
        run.wait_for(lambda: all(rule.fired for rule in rules), 60, f"all of {unfired} to fire")
    finally:
        proxy.clear()
        assert run.stop() == 0
    _assert_promises_kept(run, writer, monitor)


def test_throttling_during_start_up_is_retried_not_fatal(moto_server, proxy, tmp_path, names):
    writer = _setup(moto_server, names, shards=1, count=10)
    proxy.add(Rule(throttle(KINESIS), service=KINESIS, operations={"ListShards"}, limit=2))
    proxy.add(Rule(throttle(DYNAMODB), service=DYNAMODB, operations={"DescribeTable"}, limit=2))
    run = _start(tmp_path, proxy, names)
    try:
        run.wait_for(lambda: _all_delivered(run, writer), 30, "every record processed")
    finally:
        assert run.stop() == 0
    assert proxy.injected("throttle") == 4


def test_expired_iterators_are_renewed_without_a_gap_or_a_repeat(
    moto_server, proxy, monitor, tmp_path, names
):
    writer = _setup(moto_server, names, shards=2, count=200)
    rule = proxy.add(
        Rule(expired_iterator(), service=KINESIS, operations={"GetRecords"}, probability=0.3)
    )
    run = _start(tmp_path, proxy, names)
    try:
        run.wait_for(lambda: len(run.processed()) >= 200, 60, "the first records processed")
        run.wait_for(lambda: rule.fired >= 6, 30, "iterators to expire while caught up")
        writer.put(200, "during")
        run.wait_for(lambda: _all_delivered(run, writer), 60, "every record processed")
    finally:
        assert run.stop() == 0
    _assert_promises_kept(run, writer, monitor)
    assert run.find_events("shard iterator expired")
    # One reader, no restarts: a renewed iterator starts right after the last record fetched.
    assert _delivered(run) == writer.written


def test_a_kinesis_outage_pauses_reading_and_it_resumes_by_itself(
    moto_server, proxy, monitor, tmp_path, names
):
    writer = _setup(moto_server, names, shards=2, count=100)
    run = _start(tmp_path, proxy, names)
    try:
        run.wait_for(lambda: _all_delivered(run, writer), 60, "the first records processed")
        outage = proxy.outage(KINESIS, OUTAGE_S)
        run.wait_for(
            lambda: proxy.injected("reset", KINESIS, "GetRecords") >= 2,
            OUTAGE_S,
            "reads to fail during the outage",
        )
        writer.put(100, "during")
        run.wait_for(lambda: not proxy.schedule.is_live(outage), OUTAGE_S + 5, "outage over")
        assert len({r.data for r in run.processed()}) == 100, "nothing can be read in an outage"
        run.wait_for(lambda: _all_delivered(run, writer), 45, "reading to resume by itself")
    finally:
        proxy.clear()
        assert run.stop() == 0
    _assert_promises_kept(run, writer, monitor)
    assert not _child_events(tmp_path, "leaseLost"), "DynamoDB was up: no lease was lost"


def _dynamodb_outage_loses_leases_then_recovers(
    moto_server, proxy, monitor, tmp_path, names, *, seconds: float, blackhole: bool
) -> None:
    writer = _setup(moto_server, names, shards=2, count=100)
    shards = sorted(writer.written)
    run = _start(tmp_path, proxy, names)
    try:
        run.wait_for(lambda: _all_delivered(run, writer), 60, "the first records processed")
        outage = proxy.outage(DYNAMODB, seconds, blackhole=blackhole)
        writer.put(100, "during")
        # The last renewal was at most F/3 before the outage, so every lease expires locally
        # at most F into it; 3F leaves room for a slow machine.
        run.wait_for(
            lambda: sorted(_child_events(tmp_path, "leaseLost")) == shards,
            3 * FAILOVER_MS / 1000,
            "every child to get leaseLost during the outage",
        )
        assert proxy.schedule.is_live(outage)
        taken_before = len(run.find_events("lease taken"))
        run.wait_for(lambda: not proxy.schedule.is_live(outage), seconds + 5, "outage over")
        writer.put(100, "after")
        run.wait_for(lambda: _all_delivered(run, writer), 60, "processing to resume by itself")
        assert len(run.find_events("lease taken")) >= taken_before + len(shards)
    finally:
        proxy.clear()
        assert run.stop() == 0
    _assert_promises_kept(run, writer, monitor)
    assert proxy.injected("blackhole" if blackhole else "reset", DYNAMODB) > 0


def test_a_dynamodb_outage_longer_than_the_failover_time_loses_leases_then_recovers(
    moto_server, proxy, monitor, tmp_path, names
):
    _dynamodb_outage_loses_leases_then_recovers(
        moto_server, proxy, monitor, tmp_path, names, seconds=OUTAGE_S, blackhole=False
    )


def test_a_hanging_dynamodb_still_sends_lease_lost_within_the_failover_time(
    moto_server, proxy, monitor, tmp_path, names
):
    _dynamodb_outage_loses_leases_then_recovers(
        moto_server, proxy, monitor, tmp_path, names, seconds=10.0, blackhole=True
    )
