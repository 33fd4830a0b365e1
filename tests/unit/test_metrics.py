"""The metrics registry, the daemon sampler, the CloudWatch buffer and the Prometheus export.

No servers: the daemon is a set of small fakes with the real ``ConsumerStats`` and
``CallStats``; CloudWatch is a recording fake client (tests/integration has the moto one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from daemon.child_limits import ProcessSample
from daemon.consumer import ConsumerStats
from daemon.consumer_states import ConsumerState
from daemon.errors import ConfigError
from daemon.leases.model import Lease
from daemon.leases.store import CallStats
from daemon.metrics import (
    Datum,
    Kind,
    Level,
    MetricsRegistry,
    MetricsSampler,
    StatisticSet,
    mean_time,
    recording_level,
    success_set,
)
from daemon.metrics_cloudwatch import (
    CloudWatchPublisher,
    enabled_dimension_filter,
    publisher_from_config,
    to_metric_datum,
)
from daemon.metrics_prometheus import RegistryCollector, parse_address, snake_case

SHARD = {"Operation": "ProcessTask", "ShardId": "shardId-000000000000"}


# -- fakes of the daemon's parts ----------------------------------------------------


@dataclass
class FakeConsumer:
    shard_id: str
    stats: ConsumerStats = field(default_factory=ConsumerStats)
    state: ConsumerState = ConsumerState.PROCESSING
    child_pid: int | None = None

    def kill_child(self) -> None:
        raise AssertionError("not expected")


@dataclass
class FakeCoordinator:
    counts: dict[str, int] = field(
        default_factory=lambda: {"taken": 0, "lost": 0, "stolen": 0, "released": 0, "renewed": 0}
    )
    last_scan: list[Lease] = field(default_factory=list)
    held: list[str] = field(default_factory=list)

    def held_keys(self) -> list[str]:
        return sorted(self.held)


@dataclass
class FakeStore:
    stats: dict[str, CallStats] = field(default_factory=dict)

    def call_stats(self) -> dict[str, CallStats]:
        return dict(self.stats)


@dataclass
class FakeDaemon:
    consumers: dict[str, FakeConsumer] = field(default_factory=dict)
    coordinator: FakeCoordinator = field(default_factory=FakeCoordinator)
    store: FakeStore = field(default_factory=FakeStore)


@dataclass
class FakeChildren:
    latest: dict[str, ProcessSample] = field(default_factory=dict)
    kills: dict[str, int] = field(default_factory=dict)


def detailed() -> MetricsRegistry:
    return MetricsRegistry(Level.DETAILED, clock=lambda: 1_700_000_000.0)


# -- the registry ---------------------------------------------------------------------


def test_summary_registry_keeps_summary_metrics_and_drops_detailed_ones() -> None:
    registry = MetricsRegistry(Level.SUMMARY)
    registry.count("RecordsProcessed", 3, SHARD, level=Level.SUMMARY)
    registry.gauge("ChildRss", 100, SHARD, level=Level.DETAILED)
    snapshot = registry.snapshot()
    assert snapshot.value("RecordsProcessed", **SHARD) == 3
    assert snapshot.get("ChildRss", **SHARD) is None


def test_detailed_registry_keeps_both_levels() -> None:
    registry = detailed()
    registry.count("RecordsProcessed", 3, SHARD, level=Level.SUMMARY)
    registry.gauge("ChildRss", 100, SHARD, level=Level.DETAILED)
    assert len(registry.snapshot()) == 2


def test_none_registry_records_nothing_and_tells_no_sink() -> None:
    registry = MetricsRegistry(Level.NONE)
    seen: list[Datum] = []
    registry.add_sink(seen.append)
    registry.count("RecordsProcessed", 3, SHARD, level=Level.SUMMARY)
    assert len(registry.snapshot()) == 0
    assert seen == []


def test_metrics_level_none_still_records_everything_for_a_prometheus_endpoint() -> None:
    assert recording_level("NONE", prometheus_enabled=True) is Level.DETAILED
    assert recording_level("NONE", prometheus_enabled=False) is Level.NONE
    assert recording_level("summary", prometheus_enabled=True) is Level.SUMMARY


def test_counter_accumulates_gauge_keeps_last_distribution_merges() -> None:
    registry = detailed()
    registry.count("RecordsProcessed", 3, SHARD, level=Level.SUMMARY)
    registry.count("RecordsProcessed", 4, SHARD, level=Level.SUMMARY)
    registry.gauge("MillisBehindLatest", 900, SHARD, level=Level.SUMMARY)
    registry.gauge("MillisBehindLatest", 20, SHARD, level=Level.SUMMARY)
    registry.distribution("X.Time", StatisticSet(2, 30, 10, 20), SHARD, level=Level.SUMMARY)
    registry.distribution("X.Time", StatisticSet(1, 50, 50, 50), SHARD, level=Level.SUMMARY)
    snapshot = registry.snapshot()
    assert snapshot.value("RecordsProcessed", **SHARD) == 7
    assert snapshot.value("MillisBehindLatest", **SHARD) == 20
    timing = snapshot.get("X.Time", **SHARD)
    assert timing is not None
    assert timing.stats == StatisticSet(3, 80, 10, 50)


def test_sinks_receive_each_observation_with_sorted_dimensions_and_time() -> None:
    registry = detailed()
    seen: list[Datum] = []
    registry.add_sink(seen.append)
    registry.count("RecordsProcessed", 3, SHARD, level=Level.SUMMARY)
    assert seen == [
        Datum(
            "RecordsProcessed",
            (("Operation", "ProcessTask"), ("ShardId", "shardId-000000000000")),
            "Count",
            Kind.COUNTER,
            StatisticSet(1, 3, 3, 3),
            1_700_000_000.0,
        )
    ]


def test_empty_distribution_is_not_recorded() -> None:
    registry = detailed()
    registry.distribution("X.Time", mean_time(0, 0), SHARD, level=Level.SUMMARY)
    assert len(registry.snapshot()) == 0


def test_forget_drops_every_series_of_a_shard_only() -> None:
    registry = detailed()
    other = {**SHARD, "ShardId": "shardId-000000000001"}
    registry.count("RecordsProcessed", 1, SHARD, level=Level.SUMMARY)
    registry.gauge("MillisBehindLatest", 1, SHARD, level=Level.SUMMARY)
    registry.count("RecordsProcessed", 1, other, level=Level.SUMMARY)
    assert registry.forget("ShardId", "shardId-000000000000") == 2
    assert [s.dimension("ShardId") for s in registry.snapshot()] == ["shardId-000000000001"]


def test_success_set_is_exact_for_zero_one_outcomes() -> None:
    assert success_set(4, 1) == StatisticSet(4, 3, 0.0, 1.0)
    assert success_set(2, 0) == StatisticSet(2, 2, 1.0, 1.0)
    assert success_set(2, 2) == StatisticSet(2, 0, 0.0, 0.0)


def test_mean_time_keeps_count_and_sum_exact() -> None:
    assert mean_time(4, 100.0) == StatisticSet(4, 100.0, 25.0, 25.0)


# -- the sampler -------------------------------------------------------------------------


def sampler_for(daemon: FakeDaemon, registry: MetricsRegistry, **kw: Any) -> MetricsSampler:
    return MetricsSampler(registry, daemon, worker_id="w1", **kw)


def test_sampler_records_the_change_since_the_previous_sample() -> None:
    daemon = FakeDaemon()
    consumer = FakeConsumer("shardId-000000000000")
    daemon.consumers[consumer.shard_id] = consumer
    registry = detailed()
    seen: list[Datum] = []
    registry.add_sink(seen.append)
    sampler = sampler_for(daemon, registry)
    consumer.stats.records, consumer.stats.bytes, consumer.stats.batches = 10, 1000, 2
    consumer.stats.process_records_seconds = 0.5
    consumer.stats.millis_behind_latest = 700
    sampler.sample()
    consumer.stats.records, consumer.stats.batches = 15, 3
    consumer.stats.process_records_seconds = 0.6
    sampler.sample()
    records = [d.stats.total for d in seen if d.name == "RecordsProcessed"]
    assert records == [10, 5]
    times = [d.stats for d in seen if d.name == "RecordProcessor.processRecords.Time"]
    assert [(t.count, round(t.total, 6)) for t in times] == [(2, 500.0), (1, 100.0)]
    snapshot = registry.snapshot()
    assert snapshot.value("RecordsProcessed", **SHARD) == 15
    assert snapshot.value("DataBytesProcessed", **SHARD) == 1000
    assert snapshot.value("MillisBehindLatest", **SHARD) == 700


def test_sampler_counts_a_finished_consumers_last_records_once_and_forgets_the_shard() -> None:
    daemon = FakeDaemon()
    consumer = FakeConsumer("shardId-000000000000")
    daemon.consumers[consumer.shard_id] = consumer
    registry = detailed()
    seen: list[Datum] = []
    registry.add_sink(seen.append)
    sampler = sampler_for(daemon, registry)
    consumer.stats.records = 10
    sampler.sample()
    consumer.stats.records = 12
    del daemon.consumers[consumer.shard_id]
    sampler.sample()
    sampler.sample()
    assert [d.stats.total for d in seen if d.name == "RecordsProcessed"] == [10, 2]
    assert registry.snapshot().named("RecordsProcessed") == []


def test_sampler_starts_a_replacement_consumer_from_zero() -> None:
    daemon = FakeDaemon()
    first = FakeConsumer("shardId-000000000000")
    daemon.consumers[first.shard_id] = first
    registry = detailed()
    sampler = sampler_for(daemon, registry)
    first.stats.records = 10
    sampler.sample()
    second = FakeConsumer("shardId-000000000000")
    second.stats.records = 3
    daemon.consumers[first.shard_id] = second
    sampler.sample()
    assert registry.snapshot().value("RecordsProcessed", **SHARD) == 13


def test_sampler_records_worker_lease_metrics_under_the_kcl_operations() -> None:
    daemon = FakeDaemon()
    daemon.coordinator.held = ["shardId-000000000000", "shardId-000000000001"]
    daemon.coordinator.counts.update(taken=2, stolen=1, lost=1)
    daemon.coordinator.last_scan = [
        Lease("shardId-000000000000", lease_owner="w1"),
        Lease("shardId-000000000001", lease_owner="w2"),
        Lease("shardId-000000000002"),
    ]
    registry = detailed()
    sampler_for(daemon, registry).sample()
    snapshot = registry.snapshot()
    renew = {"Operation": "RenewAllLeases", "WorkerIdentifier": "w1"}
    take = {"Operation": "TakeLeases", "WorkerIdentifier": "w1"}
    assert snapshot.value("CurrentLeases", **renew) == 2
    assert snapshot.value("LostLeases", **renew) == 1
    assert snapshot.value("TakenLeases", **take) == 2
    assert snapshot.value("StolenLeases", **take) == 1
    assert snapshot.value("NumWorkers", **take) == 2
    assert snapshot.value("TotalLeases", **take) == 3


def test_sampler_turns_lease_table_call_stats_into_time_and_success() -> None:
    daemon = FakeDaemon()
    registry = detailed()
    sampler = sampler_for(daemon, registry)
    daemon.store.stats = {
        "checkpoint": CallStats(3, 1, 0.3, 0.2),
        "prepare_checkpoint": CallStats(1, 0, 0.1, 0.1),
        "delete_lease": CallStats(1, 0, 0.05, 0.05),
    }
    sampler.sample()
    snapshot = registry.snapshot()
    update = {"Operation": "ProcessTask", "WorkerIdentifier": "w1"}
    time_series = snapshot.get("UpdateLease.Time", **update)
    assert time_series is not None
    assert (time_series.stats.count, round(time_series.stats.total, 6)) == (4, 400.0)
    success = snapshot.get("UpdateLease.Success", **update)
    assert success is not None and success.stats == StatisticSet(4, 3, 0.0, 1.0)
    other = {"Operation": "LeaseTable", "WorkerIdentifier": "w1"}
    assert snapshot.get("DeleteLease.Time", **other) is not None
    # Nothing new since: no new observation.
    sampler.sample()
    assert registry.snapshot().get("UpdateLease.Time", **update) == time_series


def test_sampler_publishes_child_usage_and_memory_limit_restarts() -> None:
    daemon = FakeDaemon()
    daemon.consumers["shardId-000000000000"] = FakeConsumer("shardId-000000000000", child_pid=42)
    children = FakeChildren(
        latest={"shardId-000000000000": ProcessSample(42, 50 * 2**20, 12.5, 2)},
        kills={"shardId-000000000000": 1},
    )
    registry = detailed()
    sampler = sampler_for(daemon, registry, children=children)
    sampler.sample()
    children.kills["shardId-000000000000"] = 3
    sampler.sample()
    snapshot = registry.snapshot()
    assert snapshot.value("ChildRss", **SHARD) == 50 * 2**20
    assert snapshot.value("ChildCpu", **SHARD) == 12.5
    assert snapshot.value("ChildMemoryLimitRestarts", **SHARD) == 3


def test_sampler_does_nothing_when_metrics_are_off() -> None:
    daemon = FakeDaemon()
    daemon.consumers["s"] = FakeConsumer("s", stats=ConsumerStats(records=5))
    registry = MetricsRegistry(Level.NONE)
    sampler_for(daemon, registry).sample()
    assert len(registry.snapshot()) == 0


# -- the CloudWatch buffer -------------------------------------------------------------


class FakeCloudWatch:
    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_on_call = fail_on_call

    def put_metric_data(self, **kwargs: Any) -> dict[str, Any]:
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            raise ClientError(
                {"Error": {"Code": "InvalidParameterValue", "Message": "bad"}}, "PutMetricData"
            )
        self.calls.append(kwargs)
        return {}


def datum(name: str, value: float, **dims: str) -> Datum:
    return Datum(
        name,
        tuple(sorted(dims.items())),
        "Count",
        Kind.COUNTER,
        StatisticSet.one(value),
        1_700_000_000.0,
    )


def test_publisher_accumulates_observations_of_one_metric_into_one_statistic_set() -> None:
    client = FakeCloudWatch()
    publisher = CloudWatchPublisher(client, "app")
    for value in (1, 5, 3):
        publisher.add(datum("RecordsProcessed", value, **SHARD))
    assert publisher.flush() == 1
    [entry] = client.calls[0]["MetricData"]
    assert client.calls[0]["Namespace"] == "app"
    assert entry["StatisticValues"] == {
        "SampleCount": 3.0,
        "Sum": 9.0,
        "Minimum": 1.0,
        "Maximum": 5.0,
    }


def test_publisher_sends_at_most_twenty_datums_per_call() -> None:
    client = FakeCloudWatch()
    publisher = CloudWatchPublisher(client, "app")
    for shard in range(45):
        publisher.add(datum("RecordsProcessed", 1, Operation="ProcessTask", ShardId=f"s{shard}"))
    assert publisher.flush() == 45
    assert [len(call["MetricData"]) for call in client.calls] == [20, 20, 5]
    assert publisher.pending() == 0


def test_disabled_dimensions_are_dropped_and_their_datums_merged() -> None:
    client = FakeCloudWatch()
    publisher = CloudWatchPublisher(client, "app", enabled_dimensions=("WorkerIdentifier",))
    publisher.add(datum("RecordsProcessed", 2, Operation="ProcessTask", ShardId="s0"))
    publisher.add(datum("RecordsProcessed", 3, Operation="ProcessTask", ShardId="s1"))
    publisher.flush()
    [entry] = client.calls[0]["MetricData"]
    assert entry["Dimensions"] == [{"Name": "Operation", "Value": "ProcessTask"}]
    assert entry["StatisticValues"]["Sum"] == 5.0


def test_all_keeps_every_dimension() -> None:
    keep = enabled_dimension_filter(["ALL"])
    assert keep((("Operation", "x"), ("ShardId", "s"))) == (("Operation", "x"), ("ShardId", "s"))


def test_a_full_queue_drops_new_metrics_but_still_accumulates_queued_ones() -> None:
    publisher = CloudWatchPublisher(FakeCloudWatch(), "app", max_queue_size=2)
    assert publisher.add(datum("A", 1))
    assert publisher.add(datum("B", 1))
    assert not publisher.add(datum("C", 1))
    assert publisher.add(datum("A", 1))
    assert (publisher.pending(), publisher.dropped) == (2, 1)


def test_a_failed_upload_is_logged_and_the_rest_of_the_window_dropped() -> None:
    client = FakeCloudWatch(fail_on_call=2)
    publisher = CloudWatchPublisher(client, "app")
    for shard in range(45):
        publisher.add(datum("RecordsProcessed", 1, ShardId=f"s{shard}"))
    with capture_logs() as logs:
        assert publisher.flush() == 20
    assert publisher.dropped == 25
    assert publisher.pending() == 0
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["error"] == "InvalidParameterValue"
    assert warning["datums_dropped"] == 25


def test_metric_datum_carries_unit_timestamp_and_statistics() -> None:
    entry = to_metric_datum(
        "MillisBehindLatest", (("ShardId", "s0"),), "Milliseconds", StatisticSet.one(5), 0.0
    )
    assert entry["Unit"] == "Milliseconds"
    assert entry["Timestamp"].isoformat() == "1970-01-01T00:00:00+00:00"
    assert entry["Dimensions"] == [{"Name": "ShardId", "Value": "s0"}]


@dataclass
class MetricsConfig:
    metrics_level: str = "SUMMARY"
    application_name: str = "orders"
    metrics_enabled_dimensions: tuple[str, ...] = ("ALL",)
    metrics_max_queue_size: int = 100
    cloudwatch_region_name: str = "us-east-1"
    cloudwatch_endpoint: str | None = None


def test_publisher_from_config_is_none_when_metrics_are_off() -> None:
    registry = MetricsRegistry(Level.NONE)
    config: Any = MetricsConfig(metrics_level="NONE")
    assert publisher_from_config(config, registry, client=FakeCloudWatch()) is None


def test_publisher_from_config_becomes_the_registrys_sink_in_the_application_namespace() -> None:
    registry = MetricsRegistry(Level.SUMMARY)
    config: Any = MetricsConfig()
    publisher = publisher_from_config(config, registry, client=FakeCloudWatch())
    assert publisher is not None and publisher.namespace == "orders"
    registry.count("RecordsProcessed", 1, SHARD, level=Level.SUMMARY)
    assert publisher.pending() == 1


# -- the Prometheus export ------------------------------------------------------------------


def scrape(registry: MetricsRegistry) -> str:
    served = CollectorRegistry(auto_describe=False)
    served.register(RegistryCollector(registry))
    return generate_latest(served).decode()


def test_prometheus_names_are_the_kcl_names_in_snake_case() -> None:
    assert snake_case("RecordProcessor.processRecords.Time") == (
        "record_processor_process_records_time"
    )
    assert snake_case("MillisBehindLatest") == "millis_behind_latest"
    assert snake_case("ChildRss") == "child_rss"


def test_prometheus_exports_counters_gauges_and_times_in_seconds() -> None:
    registry = detailed()
    registry.count("RecordsProcessed", 7, SHARD, level=Level.SUMMARY)
    registry.gauge("ChildRss", 2048, SHARD, level=Level.DETAILED, unit="Bytes")
    registry.distribution(
        "RecordProcessor.processRecords.Time", mean_time(2, 500.0), SHARD, level=Level.SUMMARY
    )
    text = scrape(registry)
    labels = 'operation="ProcessTask",shard_id="shardId-000000000000"'
    assert f"kcl_records_processed_total{{{labels}}} 7.0" in text
    assert f"kcl_child_rss_bytes{{{labels}}} 2048.0" in text
    assert f"kcl_record_processor_process_records_seconds_count{{{labels}}} 2.0" in text
    assert f"kcl_record_processor_process_records_seconds_sum{{{labels}}} 0.5" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9464", ("::1", 9464)),
        ("metrics.local:80", ("metrics.local", 80)),
    ],
)
def test_prometheus_address_parses_host_and_port(
    text: str, expected: tuple[str, int] | None
) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["9464", "127.0.0.1", "127.0.0.1:0", "host:70000", "a b:1"])
def test_bad_prometheus_address_is_a_config_error_naming_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match="metricsPrometheusAddress"):
        parse_address(text)


def test_local_emulator_setups_never_publish_to_the_real_cloudwatch():
    from daemon.config import config_from_properties
    from daemon.metrics import Level, MetricsRegistry
    from daemon.metrics_cloudwatch import publisher_from_config

    base = {"executableName": "/bin/true", "applicationName": "app", "streamName": "s"}
    local = {**base, "kinesisEndpoint": "http://127.0.0.1:4567", "regionName": "us-east-1"}
    config, _ = config_from_properties(local)
    assert publisher_from_config(config, MetricsRegistry(Level.DETAILED)) is None
    with_cloudwatch = {**local, "cloudWatchEndpoint": "http://127.0.0.1:4567"}
    config, _ = config_from_properties(with_cloudwatch)
    assert publisher_from_config(config, MetricsRegistry(Level.DETAILED)) is not None
