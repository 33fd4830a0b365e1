"""An opt-in Prometheus endpoint serving the metrics registry.

Owns the translation of the registry's series into Prometheus metric
families (with prometheus_client, which also serves them over HTTP from a
daemon thread) and the parsing of ``metricsPrometheusAddress``. The
endpoint is off unless that address is set, and the documented examples
bind to loopback: the metrics name shards and workers, which is nobody
else's business by default.

Names: the KCL name in snake case with the prefix ``kcl_``
(``RecordsProcessed`` -> ``kcl_records_processed_total``); times become
summaries in seconds (``RecordProcessor.processRecords.Time`` ->
``kcl_record_processor_process_records_seconds``); dimensions become labels
(``operation``, ``shard_id``, ``worker_identifier``). The endpoint also
serves the daemon process's own CPU, memory and open files
(prometheus_client's ``process_*`` metrics).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from daemon.errors import ConfigError
from daemon.metrics import BYTES, MILLISECONDS, PERCENT, Kind, MetricsRegistry, Series

PREFIX = "kcl_"
_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_INVALID = re.compile(r"[^a-zA-Z0-9_]+")
#: host:port with a port of 1-65535; settings.py may validate metricsPrometheusAddress with it.
ADDRESS_PATTERN = (
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]*)):(?P<port>6553[0-5]|655[0-2][0-9]"
    r"|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)
_ADDRESS = re.compile(ADDRESS_PATTERN)


def snake_case(name: str) -> str:
    """``RecordProcessor.processRecords.Time`` -> ``record_processor_process_records_time``."""
    words = _WORD_BREAK.sub("_", name)
    return _INVALID.sub("_", words).strip("_").lower()


def family_name(series: Series) -> str:
    """The Prometheus name for a series (without the ``_total`` a counter gets on export)."""
    name = PREFIX + snake_case(series.name)
    if series.kind is Kind.DISTRIBUTION and series.unit == MILLISECONDS:
        return name.removesuffix("_time") + "_seconds"
    if series.kind is Kind.GAUGE and series.unit == BYTES and not name.endswith("_bytes"):
        return name + "_bytes"
    if series.kind is Kind.GAUGE and series.unit == PERCENT:
        return name + "_percent"
    return name


def label_name(dimension: str) -> str:
    return snake_case(dimension)


class RegistryCollector(Collector):
    """Exports a ``MetricsRegistry`` snapshot on every scrape."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        groups: dict[str, list[Series]] = {}
        for series in self._registry.snapshot():
            groups.setdefault(family_name(series), []).append(series)
        for name, members in sorted(groups.items()):
            yield _family(name, members)


def _family(name: str, members: list[Series]) -> Metric:
    first = members[0]
    dimensions = sorted({dim for series in members for dim, _ in series.dimensions})
    labels = [label_name(dim) for dim in dimensions]
    doc = f"{first.name} ({first.unit}), as the Kinesis Client Library names it"
    scale = 1 / 1000 if first.unit == MILLISECONDS and first.kind is Kind.DISTRIBUTION else 1
    family: CounterMetricFamily | GaugeMetricFamily | SummaryMetricFamily
    if first.kind is Kind.COUNTER:
        family = CounterMetricFamily(name, doc, labels=labels)
    elif first.kind is Kind.GAUGE:
        family = GaugeMetricFamily(name, doc, labels=labels)
    else:
        family = SummaryMetricFamily(name, doc, labels=labels)
    for series in members:
        values = dict(series.dimensions)
        label_values = [values.get(dim, "") for dim in dimensions]
        if isinstance(family, SummaryMetricFamily):
            family.add_metric(label_values, int(series.stats.count), series.stats.total * scale)
        else:
            family.add_metric(label_values, series.value)
    return family


def parse_address(text: str) -> tuple[str, int] | None:
    """``host:port`` (``127.0.0.1:9464``, ``[::1]:9464``, ``:9464`` = loopback); "" = off.

    Raises ``ConfigError`` for anything else.
    """
    text = text.strip()
    if not text:
        return None
    match = _ADDRESS.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"metricsPrometheusAddress {text!r} is not host:port: use e.g. 127.0.0.1:9464 "
            "(loopback only) or 0.0.0.0:9464 (every interface), or leave it empty for no endpoint"
        )
    host = match["v6"] or match["host"] or "127.0.0.1"
    return host, int(match["port"])


@dataclass
class PrometheusEndpoint:
    """A running endpoint; ``stop()`` closes it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start(registry: MetricsRegistry, address: str, port: int) -> PrometheusEndpoint:
    """Serve ``registry`` at http://address:port/metrics from a daemon thread.

    Raises ``ConfigError`` when the address cannot be bound (in use, not local).
    """
    served = CollectorRegistry(auto_describe=False)
    served.register(RegistryCollector(registry))
    ProcessCollector(registry=served)
    try:
        server, thread = start_http_server(port, addr=address, registry=served)
    except OSError as error:
        raise ConfigError(
            f"cannot serve Prometheus metrics on {address}:{port}: {error.strerror or error}; "
            "pick a free port in metricsPrometheusAddress"
        ) from None
    return PrometheusEndpoint(server, thread)


def start_from_setting(registry: MetricsRegistry, setting: str) -> PrometheusEndpoint | None:
    """Start the endpoint named by ``metricsPrometheusAddress``; None when it is empty."""
    parsed = parse_address(setting)
    if parsed is None:
        return None
    return start(registry, *parsed)
