"""Uploading the producer's metrics to CloudWatch, as the KPL does.

Owns the choice of datums (metric level and granularity filter, the KPL's dimension names
StreamName, ShardId and ErrorCode, every metric also at its coarser levels) and a daemon thread
that drains the metrics window every ``metrics_upload_delay`` ms and calls PutMetricData in
chunks of 20. A failed upload is logged (the exception type and code, never request details)
and that window is dropped, so memory stays bounded while CloudWatch is unreachable.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from typing import Any

import structlog

from producer.metrics import GRANULARITIES, LEVELS, METRICS, MetricKey, Metrics, Stat, rolled_up

__all__ = ["MetricsUploader", "datums_for_upload"]

_log = structlog.get_logger("producer.metrics")
_CHUNK = 20


def datums_for_upload(
    window: dict[MetricKey, Stat],
    level: str,
    granularity: str,
    timestamp: datetime.datetime,
) -> list[dict[str, Any]]:
    """PutMetricData datums for one window of finest-grained stats."""
    max_level = LEVELS.index(level)
    max_granularity = GRANULARITIES.index(granularity)
    datums: list[dict[str, Any]] = []
    for (name, stream, shard, code), stat in sorted(
        rolled_up(window).items(), key=lambda item: tuple(map(str, item[0]))
    ):
        metric_level, unit = METRICS.get(name, ("detailed", "None"))
        if LEVELS.index(metric_level) > max_level or stat.count == 0:
            continue
        depth = 2 if shard is not None else 1 if stream is not None else 0
        if depth > max_granularity:
            continue
        dimensions = []
        if code is not None:
            dimensions.append({"Name": "ErrorCode", "Value": code})
        if stream is not None:
            dimensions.append({"Name": "StreamName", "Value": stream})
        if shard is not None:
            dimensions.append({"Name": "ShardId", "Value": shard})
        datums.append(
            {
                "MetricName": name,
                "Dimensions": dimensions,
                "Timestamp": timestamp,
                "Unit": unit,
                "StatisticValues": {
                    "SampleCount": float(stat.count),
                    "Sum": stat.sum,
                    "Minimum": stat.min,
                    "Maximum": stat.max,
                },
            }
        )
    return datums


class MetricsUploader:
    """A daemon thread uploading ``metrics`` every ``delay_ms``; ``stop()`` ends it."""

    def __init__(
        self,
        metrics: Metrics,
        client_factory: Callable[[], Any],
        namespace: str,
        level: str,
        granularity: str,
        delay_ms: int,
    ):
        self._metrics = metrics
        self._client_factory = client_factory
        self._client: Any = None
        self._namespace = namespace
        self._level = level
        self._granularity = granularity
        self._delay = delay_ms / 1000.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kpl-metrics-upload", daemon=True)
        self.uploads = 0
        self.failures = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def upload_once(self) -> int:
        """Drains the window and uploads it; returns the number of datums sent."""
        datums = datums_for_upload(
            self._metrics.drain_window(),
            self._level,
            self._granularity,
            datetime.datetime.now(datetime.timezone.utc),
        )
        if not datums:
            return 0
        if self._client is None:
            self._client = self._client_factory()
        for start in range(0, len(datums), _CHUNK):
            self._client.put_metric_data(
                Namespace=self._namespace, MetricData=datums[start : start + _CHUNK]
            )
        self.uploads += 1
        return len(datums)

    def _run(self) -> None:
        while not self._stop.wait(self._delay):
            try:
                self.upload_once()
            except Exception as error:  # any failure: log it, drop the window, try next time
                self.failures += 1
                code = getattr(error, "response", {}).get("Error", {}).get("Code")
                _log.warning(
                    "metrics upload failed",
                    error=type(error).__name__,
                    code=code,
                    namespace=self._namespace,
                )
