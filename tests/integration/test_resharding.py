"""Splits and merges while records flow: real kcl-daemon processes on kinesis-local + dynalite.

kinesis-local reshards as AWS does (writes after a split go to the children; a closed parent's
iterator runs out, with ChildShards); moto does not, so only the shard-end test for moto's
never-ending iterator runs on moto. kinesis-local is slow to write to: record counts stay small.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from protocol.aggregation import UserRecord, effective_hash_key, encode_aggregate
from tests.servers import LocalServer
from tests.support.daemon_runner import (
    DaemonRun,
    ProcessedRecord,
    aws_client,
    checkpoints_moving_backwards,
    lease_items,
    python_processor,
)
from tests.support.streams import create_stream, wait_stream_active
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

RECORD_LOGGER = python_processor("processors.samples.record_logger")
KEYS = [f"key-{n}" for n in range(24)]
SETTINGS = {
    "failoverTimeMillis": 3000,
    "parentShardPollIntervalMillis": 1000,
    "shardSyncIntervalMillis": 2000,
}


class Writer(threading.Thread):
    """Writes "key:n" records (n counting up per key) in small batches until stopped."""

    def __init__(self, kinesis: Any, stream: str) -> None:
        super().__init__(daemon=True)
        self.kinesis = kinesis
        self.stream = stream
        self.written: dict[str, list[int]] = defaultdict(list)
        self.count = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.halt.wait(0.05):
                batch = [(key, len(self.written[key])) for key in KEYS]
                response = self.kinesis.put_records(
                    StreamName=self.stream,
                    Records=[{"PartitionKey": k, "Data": f"{k}:{n}".encode()} for k, n in batch],
                )
                assert not response.get("FailedRecordCount"), response
                for key, n in batch:
                    self.written[key].append(n)
                self.count += len(batch)
        except BaseException as error:  # reported by stop()
            self.error = error

    def wait_for(self, count: int) -> None:
        wait_until(lambda: self.count >= count or self.error, 30, message=f"{count} written")

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        if self.error is not None:
            raise self.error


def first_deliveries_per_key(records: list[ProcessedRecord]) -> dict[str, list[int]]:
    """Per key, the counters in the order they were first delivered (the output file's order)."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for record in records:
        if record.data in seen or ":" not in record.data:
            continue
        seen.add(record.data)
        key, n = record.data.rsplit(":", 1)
        order[key].append(int(n))
    return order


class Resharding:
    """A stream on kinesis-local, a lease table on dynalite, and the workers reading it."""

    def __init__(self, folder: Path, kinesis_local: LocalServer, dynalite: LocalServer) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.folder = folder
        self.kinesis_endpoint = kinesis_local.endpoint
        self.dynamodb_endpoint = dynalite.endpoint
        self.stream = f"reshard-{suffix}"
        self.application = f"reshard-app-{suffix}"
        self.kinesis = aws_client("kinesis", kinesis_local.endpoint)
        self.dynamodb = aws_client("dynamodb", dynalite.endpoint)
        self.workers: list[DaemonRun] = []

    def create(self, shards: int) -> list[dict[str, Any]]:
        create_stream(self.kinesis, self.stream, shards)
        return self.shards()

    def shards(self) -> list[dict[str, Any]]:
        return list(self.kinesis.list_shards(StreamName=self.stream)["Shards"])

    def start(self, name: str, **settings: Any) -> DaemonRun:
        run = DaemonRun(
            self.folder,
            self.kinesis_endpoint,
            self.stream,
            self.application,
            RECORD_LOGGER,
            name=name,
            extra={**SETTINGS, **settings},
            dynamodb_endpoint=self.dynamodb_endpoint,
            log_level="debug",
        ).start()
        self.workers.append(run)
        return run

    def processed(self) -> list[ProcessedRecord]:
        return self.workers[0].processed()

    def leases(self) -> dict[str, dict[str, Any]]:
        return lease_items(self.dynamodb, self.application)

    def wait_for_records(self, expected: set[str], timeout: float = 60) -> None:
        def done() -> bool:
            return expected <= {record.data for record in self.processed()}

        wait_until(done, timeout, interval=0.2, message=self._describe("every record processed"))

    def wait_for_some_records_of(self, *shards: str, timeout: float = 30) -> None:
        """Wait until the workers are reading ``shards`` (so a reshard happens mid-flow)."""

        def reading() -> bool:
            counts: dict[str, int] = defaultdict(int)
            for record in self.processed():
                counts[record.shard_id] += 1
            return all(counts[shard] >= 50 for shard in shards)

        wait_until(reading, timeout, interval=0.1, message=self._describe(f"reading {shards}"))

    def wait_for_leases(self, predicate: Any, what: str, timeout: float = 30) -> None:
        wait_until(lambda: predicate(self.leases()), timeout, message=self._describe(what))

    def _describe(self, what: str) -> Any:
        def message() -> str:
            tails = "\n".join(f"--- {w.name} ---\n{w.log_tail(30)}" for w in self.workers)
            return f"{what}; leases {sorted(self.leases())}\n{tails}"

        return message

    def stop(self) -> None:
        for run in self.workers:
            if run.is_running():
                assert run.stop() == 0

    def kill(self) -> None:
        for run in self.workers:
            run.kill()

    def checkpoints_backwards(self) -> list[Any]:
        return checkpoints_moving_backwards([c for w in self.workers for c in w.checkpoints()])


@pytest.fixture
def resharding(tmp_path: Path, kinesis_local: LocalServer, dynalite: LocalServer) -> Any:
    setup = Resharding(tmp_path, kinesis_local, dynalite)
    yield setup
    setup.kill()


def written_data(writer: Writer) -> set[str]:
    return {f"{key}:{n}" for key, numbers in writer.written.items() for n in numbers}


def middle_hash_key(shard: dict[str, Any]) -> str:
    hash_range = shard["HashKeyRange"]
    return str((int(hash_range["StartingHashKey"]) + int(hash_range["EndingHashKey"])) // 2)


def test_split_while_records_flow_keeps_per_key_order_and_finishes_the_parent(
    resharding: Resharding,
) -> None:
    parent, other = resharding.create(2)
    writer = Writer(resharding.kinesis, resharding.stream)
    writer.start()
    resharding.start("w1", cleanupLeasesUponShardCompletion="false")
    resharding.start("w2", cleanupLeasesUponShardCompletion="false")
    try:
        resharding.wait_for_some_records_of(parent["ShardId"])
        resharding.kinesis.split_shard(
            StreamName=resharding.stream,
            ShardToSplit=parent["ShardId"],
            NewStartingHashKey=middle_hash_key(parent),
        )
        wait_stream_active(resharding.kinesis, resharding.stream)
        writer.wait_for(writer.count + 240)
        writer.stop()
        resharding.wait_for_records(written_data(writer))
    finally:
        writer.stop()
        resharding.stop()
    children = {s["ShardId"] for s in resharding.shards() if s.get("ParentShardId")}
    assert len(children) == 2
    leases = resharding.leases()
    assert leases[parent["ShardId"]]["checkpoint"] == {"S": "SHARD_END"}
    assert set(leases[parent["ShardId"]]["childShardIds"]["SS"]) == children
    for child in children:
        assert leases[child]["parentShardId"] == {"SS": [parent["ShardId"]]}
        assert leases[child]["checkpoint"]["S"].isdigit(), "the child was processed"
    order = first_deliveries_per_key(resharding.processed())
    assert order == writer.written, "per key: every record, parent's before children's"
    assert not resharding.checkpoints_backwards()


def test_merge_while_records_flow_waits_for_both_parents_and_cleans_them_up(
    resharding: Resharding,
) -> None:
    first, second = resharding.create(2)
    writer = Writer(resharding.kinesis, resharding.stream)
    writer.start()
    resharding.start("w1")
    resharding.start("w2")
    try:
        resharding.wait_for_some_records_of(first["ShardId"], second["ShardId"])
        resharding.kinesis.merge_shards(
            StreamName=resharding.stream,
            ShardToMerge=first["ShardId"],
            AdjacentShardToMerge=second["ShardId"],
        )
        wait_stream_active(resharding.kinesis, resharding.stream)
        writer.wait_for(writer.count + 240)
        writer.stop()
        resharding.wait_for_records(written_data(writer))
        parents = {first["ShardId"], second["ShardId"]}
        # cleanupLeasesUponShardCompletion (default true): the parents' leases go once the
        # child has a real checkpoint.
        resharding.wait_for_leases(
            lambda leases: not parents & set(leases), "the finished parents' leases deleted"
        )
    finally:
        writer.stop()
        resharding.stop()
    (child,) = [s for s in resharding.shards() if s.get("AdjacentParentShardId")]
    assert set(resharding.leases()) == {child["ShardId"]}
    assert first_deliveries_per_key(resharding.processed()) == writer.written
    assert not resharding.checkpoints_backwards()
    deleted = [e for w in resharding.workers for e in w.find_events("finished lease deleted")]
    assert {e["shard_id"] for e in deleted} == parents


def test_aggregate_with_records_outside_the_child_shard_hash_range_is_dropped_whole(
    resharding: Resharding,
) -> None:
    (parent,) = resharding.create(1)
    resharding.kinesis.split_shard(
        StreamName=resharding.stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(2**127)
    )
    wait_stream_active(resharding.kinesis, resharding.stream)
    low = [f"low-{n}" for n in range(200) if effective_hash_key(f"low-{n}", None) < 2**127][:3]
    high = [f"high-{n}" for n in range(200) if effective_hash_key(f"high-{n}", None) >= 2**127][:3]
    inside = [UserRecord(key, f"{key}:in".encode()) for key in low]
    # Built for the parent's whole range (as a producer with a stale shard map would):
    # routed by its first record to the low child, but half of it belongs to the high one.
    straddling = [UserRecord(key, f"{key}:stale".encode()) for key in low[:1] + high]
    for records in (straddling, inside):
        resharding.kinesis.put_record(
            StreamName=resharding.stream,
            PartitionKey="a",
            ExplicitHashKey=str(effective_hash_key(records[0].partition_key, None)),
            Data=encode_aggregate(records),
        )
    run = resharding.start("w1")
    try:
        resharding.wait_for_records({f"{key}:in" for key in low})
        run.wait_for(
            lambda: bool(run.find_events("lease taken", shard_id="shardId-000000000002")),
            10,
            "the high child's lease taken",
        )
    finally:
        resharding.stop()
    delivered = {record.data for record in resharding.processed()}
    assert not {d for d in delivered if d.endswith(":stale")}
    dropped = [e for e in run.events() if "outside the shard's hash range" in e.get("event", "")]
    assert dropped and dropped[0]["count"] == 1


def test_a_split_parent_on_moto_ends_once_shard_sync_sees_it_closed(
    tmp_path: Path, moto_server: LocalServer
) -> None:
    suffix = uuid.uuid4().hex[:8]
    stream, application = f"moto-split-{suffix}", f"moto-split-app-{suffix}"
    kinesis = aws_client("kinesis", moto_server.endpoint)
    create_stream(kinesis, stream, 1)
    kinesis.put_records(
        StreamName=stream,
        Records=[{"PartitionKey": f"k{n}", "Data": f"r{n}".encode()} for n in range(30)],
    )
    run = DaemonRun(
        tmp_path,
        moto_server.endpoint,
        stream,
        application,
        RECORD_LOGGER,
        extra={**SETTINGS, "shardSyncIntervalMillis": 1000},
    ).start()
    parent = "shardId-000000000000"
    try:
        run.wait_for_records(30)
        # The fetcher started while the shard was open: on moto its iterator never runs out.
        kinesis.split_shard(StreamName=stream, ShardToSplit=parent, NewStartingHashKey=str(2**127))
        wait_stream_active(kinesis, stream)
        dynamodb = aws_client("dynamodb", moto_server.endpoint)
        run.wait_for(
            lambda: (
                lease_items(dynamodb, application)[parent].get("checkpoint") == {"S": "SHARD_END"}
            ),
            30,
            "the parent to reach SHARD_END",
        )
    finally:
        assert run.stop() == 0
    leases = lease_items(dynamodb, application)
    assert set(leases[parent]["childShardIds"]["SS"]) == set(leases) - {parent}
    assert len(leases) == 3
    assert run.find_events("shard closed; reading on to its end", shard_id=parent)
