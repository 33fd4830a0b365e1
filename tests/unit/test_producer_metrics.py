"""Metrics: accumulation, roll-ups in the snapshot, and what goes to CloudWatch."""

from __future__ import annotations

import datetime
from typing import Any

from producer.metrics import METRICS, Metrics
from producer.metrics_upload import MetricsUploader, datums_for_upload

NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def filled() -> Metrics:
    metrics = Metrics()
    metrics.put_many("UserRecordsPut", 3, 3, 1, 1, "s", "shard-0")
    metrics.put_many("UserRecordsPut", 2, 2, 1, 1, "s", "shard-1")
    metrics.put("ErrorsByCode", 1, "s", "shard-0", "Throttled")
    metrics.put("BufferingTime", 40.0, "s")
    metrics.put("BufferingTime", 10.0, "t")
    return metrics


def test_snapshot_rolls_shards_up_to_stream_and_global():
    snapshot = filled().snapshot()
    assert snapshot.sum("UserRecordsPut", "s", "shard-0") == 3
    assert snapshot.sum("UserRecordsPut", "s") == 5
    assert snapshot.sum("UserRecordsPut") == 5
    buffering = snapshot.get("BufferingTime")
    assert buffering is not None
    assert (buffering.count, buffering.min, buffering.max, buffering.mean) == (2, 10.0, 40.0, 25.0)
    assert snapshot.errors_by_code() == {"Throttled": 1}
    assert snapshot.errors_by_code("s") == {"Throttled": 1}


def test_snapshot_is_cumulative_while_the_upload_window_is_drained():
    metrics = filled()
    assert metrics.drain_window()
    assert metrics.drain_window() == {}
    assert metrics.snapshot().sum("UserRecordsPut") == 5


def test_every_kpl_metric_has_a_level_and_unit():
    assert {level for level, _ in METRICS.values()} == {"summary", "detailed"}
    assert METRICS["BufferingTime"] == ("summary", "Milliseconds")
    assert METRICS["UserRecordsDataPut"] == ("detailed", "Bytes")


def names_and_dims(datums: list[dict[str, Any]]) -> set[tuple[str, tuple[str, ...]]]:
    return {(d["MetricName"], tuple(x["Name"] for x in d["Dimensions"])) for d in datums}


def test_upload_at_shard_granularity_sends_every_level_of_dimensions():
    datums = datums_for_upload(filled().drain_window(), "detailed", "shard", NOW)
    got = names_and_dims(datums)
    assert ("UserRecordsPut", ()) in got
    assert ("UserRecordsPut", ("StreamName",)) in got
    assert ("UserRecordsPut", ("StreamName", "ShardId")) in got
    assert ("ErrorsByCode", ("ErrorCode", "StreamName", "ShardId")) in got
    put = next(d for d in datums if d["MetricName"] == "UserRecordsPut" and not d["Dimensions"])
    assert put["StatisticValues"] == {"SampleCount": 5.0, "Sum": 5.0, "Minimum": 1, "Maximum": 1}
    assert put["Unit"] == "Count"


def test_upload_granularity_and_level_filter_datums():
    window = filled().drain_window()
    stream_level = names_and_dims(datums_for_upload(window, "detailed", "stream", NOW))
    assert all(len(dims) <= 2 and "ShardId" not in dims for _, dims in stream_level)
    summary = {
        name for name, _ in names_and_dims(datums_for_upload(window, "summary", "global", NOW))
    }
    assert summary == {"UserRecordsPut", "ErrorsByCode", "BufferingTime"}
    assert datums_for_upload(window, "none", "shard", NOW) == []


class RecordingCloudWatch:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def put_metric_data(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def test_uploader_sends_chunks_of_twenty_to_the_namespace():
    metrics = Metrics()
    for i in range(30):
        metrics.put("UserRecordsPut", 1, "s", f"shard-{i}")
    cloudwatch = RecordingCloudWatch()
    uploader = MetricsUploader(metrics, lambda: cloudwatch, "Ns", "detailed", "shard", 60000)
    sent = uploader.upload_once()
    assert sent == 32  # 30 shards, the stream and the global value
    assert [len(c["MetricData"]) for c in cloudwatch.calls] == [20, 12]
    assert {c["Namespace"] for c in cloudwatch.calls} == {"Ns"}
    assert uploader.upload_once() == 0
