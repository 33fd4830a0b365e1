"""Publishing the metrics registry's observations to CloudWatch, as the KCL does.

Owns the buffer between the registry and PutMetricData: observations
(``add``, a registry sink) accumulate per (name, dimensions, unit) into one
StatisticSet, like the KCL's MetricAccumulatingQueue, and ``flush`` sends
them in PutMetricData calls of at most 20 datums to the namespace
``applicationName``. ``run`` flushes every ``metricsBufferTimeMillis`` in the
daemon's thread pool and once more when the daemon stops.

Dimensions not in ``metricsEnabledDimensions`` are dropped before
accumulating (Operation is always kept, as in the KCL), so datums that
differ only in a dropped dimension merge. At most ``metricsMaxQueueSize``
distinct datums wait at once; more are dropped and counted. A failed upload
is logged with its error code (never request details) and the window
dropped: memory stays bounded while CloudWatch is unreachable, and the next
window starts clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from daemon.config import Config
from daemon.kinesis_client import make_client
from daemon.logs import get_logger
from daemon.metrics import OPERATION, Datum, Dimensions, Level, MetricsRegistry, StatisticSet

BATCH_SIZE = 20
ALL_DIMENSIONS = "ALL"
ALWAYS_ENABLED = frozenset((OPERATION,))

_Key = tuple[str, Dimensions, str]


def enabled_dimension_filter(enabled: Iterable[str]) -> Callable[[Dimensions], Dimensions]:
    """A function keeping only the dimensions ``metricsEnabledDimensions`` allows."""
    names = frozenset(enabled)
    if ALL_DIMENSIONS in names:
        return lambda dims: dims
    keep = names | ALWAYS_ENABLED
    return lambda dims: tuple((name, value) for name, value in dims if name in keep)


def to_metric_datum(
    name: str, dims: Dimensions, unit: str, stats: StatisticSet, timestamp: float
) -> dict[str, Any]:
    """One PutMetricData ``MetricData`` entry."""
    return {
        "MetricName": name,
        "Dimensions": [{"Name": key, "Value": value} for key, value in dims],
        "Timestamp": datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc),
        "Unit": unit,
        "StatisticValues": {
            "SampleCount": float(stats.count),
            "Sum": float(stats.total),
            "Minimum": float(stats.minimum),
            "Maximum": float(stats.maximum),
        },
    }


class CloudWatchPublisher:
    """Accumulates datums and sends them with PutMetricData, 20 at a time."""

    def __init__(
        self,
        client: Any,
        namespace: str,
        *,
        enabled_dimensions: Iterable[str] = (ALL_DIMENSIONS,),
        max_queue_size: int = 10000,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self._client = client
        self.namespace = namespace
        self._filter = enabled_dimension_filter(enabled_dimensions)
        self._max_queue = max_queue_size
        self._batch = batch_size
        self._lock = threading.Lock()
        # Insertion order is first-seen order: the oldest datums go first.
        self._queue: dict[_Key, list[float]] = {}
        self._log = get_logger()
        self.dropped = 0
        self.sent = 0
        self.calls = 0

    def add(self, datum: Datum) -> bool:
        """Queue one observation; False (and counted in ``dropped``) when the queue is full."""
        key = (datum.name, self._filter(datum.dimensions), datum.unit)
        stats = datum.stats
        with self._lock:
            queued = self._queue.get(key)
            if queued is not None:
                # [count, sum, min, max, timestamp of the first observation], in place.
                queued[0] += stats.count
                queued[1] += stats.total
                queued[2] = min(queued[2], stats.minimum)
                queued[3] = max(queued[3], stats.maximum)
                return True
            if len(self._queue) >= self._max_queue:
                self.dropped += 1
                return False
            self._queue[key] = [
                stats.count,
                stats.total,
                stats.minimum,
                stats.maximum,
                datum.timestamp,
            ]
            return True

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def drain(self) -> list[dict[str, Any]]:
        """Everything queued, as PutMetricData entries; the queue is left empty."""
        with self._lock:
            queue, self._queue = self._queue, {}
        return [
            to_metric_datum(name, dims, unit, StatisticSet(*values[:4]), values[4])
            for (name, dims, unit), values in queue.items()
        ]

    def flush(self) -> int:
        """Send everything queued (blocking); the number of datums CloudWatch accepted."""
        data = self.drain()
        sent = 0
        for start in range(0, len(data), self._batch):
            chunk = data[start : start + self._batch]
            try:
                self._client.put_metric_data(Namespace=self.namespace, MetricData=chunk)
            except (ClientError, BotoCoreError) as error:
                lost = len(data) - start
                self.dropped += lost
                self._log.warning(
                    "metrics upload failed; dropping this window",
                    error=_describe(error),
                    datums_dropped=lost,
                )
                break
            self.calls += 1
            sent += len(chunk)
        self.sent += sent
        return sent

    async def run(
        self,
        stop: asyncio.Event,
        executor: Executor | None,
        buffer_time_s: float,
        *,
        before_final_flush: Callable[[], object] | None = None,
    ) -> None:
        """Flush every ``buffer_time_s`` until ``stop``; then (after the hook) flush once more."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=buffer_time_s)
            if stop.is_set():
                break
            await loop.run_in_executor(executor, self.flush)
        if before_final_flush is not None:
            before_final_flush()
        await loop.run_in_executor(executor, self.flush)


def _describe(error: ClientError | BotoCoreError) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "")) or type(error).__name__
    # BotoCoreError messages name the endpoint or credential source, never secrets.
    return f"{type(error).__name__}: {error}"


def publisher_from_config(
    config: Config, registry: MetricsRegistry, client: Any = None
) -> CloudWatchPublisher | None:
    """The publisher for ``config``, registered as ``registry``'s sink; None if metricsLevel=NONE."""
    if Level.parse(config.metrics_level) is Level.NONE:
        return None
    if client is None and publishes_to_aws_from_local_setup(config):
        get_logger().info(
            "metrics are not published: kinesisEndpoint is on this machine and "
            "cloudWatchEndpoint is not set (set it to publish to a local CloudWatch)"
        )
        return None
    if client is None:
        client = make_client(
            "cloudwatch", config.cloudwatch_region_name, config.cloudwatch_endpoint
        )
    publisher = CloudWatchPublisher(
        client,
        config.application_name,
        enabled_dimensions=config.metrics_enabled_dimensions,
        max_queue_size=config.metrics_max_queue_size,
    )
    registry.add_sink(publisher.add)
    return publisher


def publishes_to_aws_from_local_setup(config: Config) -> bool:
    """True when a local (loopback) Kinesis would be paired with AWS's real CloudWatch.

    Someone running against emulators on this machine never wants their
    metrics sent to (or failing against) the public CloudWatch endpoint.
    """
    if config.cloudwatch_endpoint:
        return False
    endpoint = config.kinesis_endpoint or config.dynamodb_endpoint
    if not endpoint:
        return False
    host = (urlsplit(endpoint).hostname or "").lower()
    return host == "localhost" or host == "::1" or host.startswith("127.")
