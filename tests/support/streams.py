"""Kinesis chores for tests against a local server: create a stream and wait for it, read a shard.

Works on moto and kinesis-local alike. Differences that matter when reading: on kinesis-local (as
on AWS) a closed shard ends with NextShardIterator absent and ChildShards listed; on moto a closed
shard never ends (its iterator keeps coming back), so drain_shard also stops at the first empty
read that is caught up (MillisBehindLatest == 0) and says which of the two happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.support.waiting import wait_until


def wait_stream_active(kinesis: Any, stream: str, timeout: float = 10.0) -> dict[str, Any]:
    """Polls DescribeStreamSummary until the stream is ACTIVE; returns the summary."""

    def active() -> dict[str, Any] | None:
        summary: dict[str, Any] = kinesis.describe_stream_summary(StreamName=stream)[
            "StreamDescriptionSummary"
        ]
        return summary if summary["StreamStatus"] == "ACTIVE" else None

    return wait_until(active, timeout, message=f"stream {stream} never became ACTIVE")


def create_stream(
    kinesis: Any, stream: str, shard_count: int = 1, timeout: float = 10.0
) -> dict[str, Any]:
    """Creates a provisioned stream and waits until it is ACTIVE; returns its summary."""
    kinesis.create_stream(StreamName=stream, ShardCount=shard_count)
    return wait_stream_active(kinesis, stream, timeout)


@dataclass
class ShardRead:
    """What draining a shard found."""

    records: list[dict[str, Any]] = field(default_factory=list)
    # True when the server said the shard is closed and fully read (no NextShardIterator).
    ended: bool = False
    child_shards: list[dict[str, Any]] = field(default_factory=list)

    @property
    def data(self) -> list[bytes]:
        return [record["Data"] for record in self.records]


def drain_shard(
    kinesis: Any,
    stream: str,
    shard_id: str,
    iterator_type: str = "TRIM_HORIZON",
    max_calls: int = 200,
    limit: int = 1000,
) -> ShardRead:
    """Reads a shard until its end, or until an empty read that is caught up with the tip."""
    iterator: str | None = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType=iterator_type
    )["ShardIterator"]
    result = ShardRead()
    for _ in range(max_calls):
        if iterator is None:
            break
        response = kinesis.get_records(ShardIterator=iterator, Limit=limit)
        result.records.extend(response["Records"])
        result.child_shards = response.get("ChildShards") or result.child_shards
        iterator = response.get("NextShardIterator")
        if iterator is None:
            result.ended = True
        elif not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
            break
    else:
        raise AssertionError(f"{stream}/{shard_id}: still reading after {max_calls} GetRecords")
    return result
