"""The Prometheus endpoint: a real HTTP server on loopback, scraped with urllib."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest

from daemon.errors import ConfigError
from daemon.metrics import Level, MetricsRegistry
from daemon.metrics_prometheus import PrometheusEndpoint, start, start_from_setting

pytestmark = pytest.mark.integration


@pytest.fixture
def registry() -> MetricsRegistry:
    registry = MetricsRegistry(Level.DETAILED)
    dims = {"Operation": "ProcessTask", "ShardId": "shardId-000000000000"}
    registry.count("RecordsProcessed", 12, dims, level=Level.SUMMARY)
    return registry


@pytest.fixture
def endpoint(registry: MetricsRegistry) -> Iterator[PrometheusEndpoint]:
    served = start(registry, "127.0.0.1", 0)
    yield served
    served.stop()


def scrape(endpoint: PrometheusEndpoint) -> str:
    host, port = endpoint.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_endpoint_serves_the_registry_and_the_process_metrics(
    endpoint: PrometheusEndpoint, registry: MetricsRegistry
) -> None:
    text = scrape(endpoint)
    assert (
        'kcl_records_processed_total{operation="ProcessTask",shard_id="shardId-000000000000"} 12.0'
        in text
    )
    assert "process_resident_memory_bytes" in text


def test_every_scrape_sees_the_current_values(
    endpoint: PrometheusEndpoint, registry: MetricsRegistry
) -> None:
    scrape(endpoint)
    dims = {"Operation": "ProcessTask", "ShardId": "shardId-000000000000"}
    registry.count("RecordsProcessed", 3, dims, level=Level.SUMMARY)
    assert 'shardId-000000000000"} 15.0' in scrape(endpoint)


def test_endpoint_binds_to_the_address_it_is_given(endpoint: PrometheusEndpoint) -> None:
    assert endpoint.address[0] == "127.0.0.1"


def test_a_port_in_use_is_a_config_error(registry: MetricsRegistry) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            start(registry, "127.0.0.1", port)


def test_an_empty_setting_starts_nothing(registry: MetricsRegistry) -> None:
    assert start_from_setting(registry, "") is None
