"""Metrics published to moto's CloudWatch: namespace, dimensions, statistics, batches of 20.

Each test uses its own namespace (the moto server is shared by the session).
"""

from __future__ import annotations

import asyncio
import datetime
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from daemon.consumer import ConsumerStats
from daemon.leases.model import Lease
from daemon.metrics import Level, MetricsRegistry, MetricsSampler
from daemon.metrics_cloudwatch import CloudWatchPublisher
from tests import servers
from tests.support.waiting import wait_until
from tests.unit.test_metrics import FakeConsumer, FakeDaemon

pytestmark = pytest.mark.integration


@pytest.fixture
def cloudwatch(moto_server: servers.LocalServer) -> Any:
    return servers.client("cloudwatch", moto_server.endpoint)


def count_put_metric_data(client: Any) -> list[int]:
    """The number of datums of every PutMetricData request the client sends."""
    sizes: list[int] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sizes.append(len(params["MetricData"]))

    client.meta.events.register("provide-client-params.cloudwatch.PutMetricData", record)
    return sizes


def metrics_in(client: Any, namespace: str) -> dict[str, list[dict[str, str]]]:
    """Metric name -> its dimension sets, as ListMetrics reports them."""
    found: dict[str, list[dict[str, str]]] = {}
    for page in client.get_paginator("list_metrics").paginate(Namespace=namespace):
        for metric in page["Metrics"]:
            dims = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
            found.setdefault(metric["MetricName"], []).append(dims)
    return found


def statistic(client: Any, namespace: str, name: str, dims: dict[str, str], stat: str) -> float:
    now = datetime.datetime.now(datetime.timezone.utc)
    points = client.get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=now - datetime.timedelta(hours=1),
        EndTime=now + datetime.timedelta(minutes=5),
        Period=3600,
        Statistics=[stat],
    )["Datapoints"]
    return float(sum(point[stat] for point in points))


def test_sampled_daemon_metrics_reach_cloudwatch_with_kcl_names_and_dimensions(
    cloudwatch: Any, unique_name: Any
) -> None:
    namespace = unique_name("app")
    daemon = FakeDaemon()
    consumer = FakeConsumer("shardId-000000000000", ConsumerStats(records=40, bytes=4000))
    consumer.stats.millis_behind_latest = 1200
    daemon.consumers[consumer.shard_id] = consumer
    daemon.coordinator.held = [consumer.shard_id]
    daemon.coordinator.last_scan = [Lease(consumer.shard_id, lease_owner="w1")]
    registry = MetricsRegistry(Level.SUMMARY)
    publisher = CloudWatchPublisher(cloudwatch, namespace)
    registry.add_sink(publisher.add)
    sampler = MetricsSampler(registry, daemon, worker_id="w1")
    sampler.sample()
    consumer.stats.records = 100
    sampler.sample()
    assert publisher.flush() > 0

    found = metrics_in(cloudwatch, namespace)
    shard = {"Operation": "ProcessTask", "ShardId": "shardId-000000000000"}
    assert shard in found["RecordsProcessed"]
    assert shard in found["MillisBehindLatest"]
    assert {"Operation": "RenewAllLeases", "WorkerIdentifier": "w1"} in found["CurrentLeases"]
    assert statistic(cloudwatch, namespace, "RecordsProcessed", shard, "Sum") == 100
    assert statistic(cloudwatch, namespace, "RecordsProcessed", shard, "SampleCount") == 2
    assert statistic(cloudwatch, namespace, "DataBytesProcessed", shard, "Sum") == 4000
    # SUMMARY level: the DETAILED TotalLeases is not published.
    assert "TotalLeases" not in found


def test_many_metrics_go_out_twenty_per_request(cloudwatch: Any, unique_name: Any) -> None:
    namespace = unique_name("app")
    sizes = count_put_metric_data(cloudwatch)
    registry = MetricsRegistry(Level.DETAILED)
    publisher = CloudWatchPublisher(cloudwatch, namespace)
    registry.add_sink(publisher.add)
    for shard in range(47):
        dims = {"Operation": "ProcessTask", "ShardId": f"shardId-{shard:012d}"}
        registry.count("RecordsProcessed", shard, dims, level=Level.SUMMARY)
    assert publisher.flush() == 47
    assert sizes == [20, 20, 7]
    assert len(metrics_in(cloudwatch, namespace)["RecordsProcessed"]) == 47


def test_publisher_task_flushes_every_buffer_time_and_once_more_on_stop(
    cloudwatch: Any, unique_name: Any
) -> None:
    namespace = unique_name("app")
    registry = MetricsRegistry(Level.SUMMARY)
    publisher = CloudWatchPublisher(cloudwatch, namespace)
    registry.add_sink(publisher.add)
    dims = {"Operation": "ProcessTask", "ShardId": "shardId-000000000000"}

    async def scenario(executor: ThreadPoolExecutor) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(
            publisher.run(
                stop,
                executor,
                0.05,
                before_final_flush=lambda: registry.count(
                    "RecordsProcessed", 5, dims, level=Level.SUMMARY
                ),
            )
        )
        registry.count("RecordsProcessed", 10, dims, level=Level.SUMMARY)
        for _ in range(200):
            if publisher.sent:
                break
            await asyncio.sleep(0.05)
        assert publisher.sent == 1
        stop.set()
        await asyncio.wait_for(task, 10)

    with ThreadPoolExecutor(2) as executor:
        asyncio.run(scenario(executor))
    assert publisher.sent == 2
    wait_until(
        lambda: statistic(cloudwatch, namespace, "RecordsProcessed", dims, "Sum") == 15,
        timeout=5,
        message="both flushes visible in CloudWatch",
    )


def test_unreachable_cloudwatch_drops_the_window_without_raising(unique_name: Any) -> None:
    client = servers.client(
        "cloudwatch",
        servers.UNSERVED_ENDPOINT,
        connect_timeout=0.5,
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    publisher = CloudWatchPublisher(client, unique_name("app"))
    registry = MetricsRegistry(Level.SUMMARY)
    registry.add_sink(publisher.add)
    registry.count("RecordsProcessed", 1, {"Operation": "ProcessTask"}, level=Level.SUMMARY)
    assert publisher.flush() == 0
    assert publisher.dropped == 1
    assert publisher.pending() == 0
