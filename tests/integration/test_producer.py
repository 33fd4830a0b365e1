"""KinesisProducer and kcl-produce against real local servers.

moto serves the bulk (futures, decoding with aws-kinesis-agg and protocol.aggregation,
throttling and partial failures injected at the client seam, expiry, close, ordering, CloudWatch
metrics, the CLI); kinesis-local, which reshards like AWS, serves the shard-map cases. Records
are read back with GetRecords and checked the way a KCL consumer reads them.
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from concurrent.futures import Future
from typing import Any

import pytest
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from producer.config import ProducerConfig
from producer.producer import KinesisProducer
from producer.results import EXPIRED, WRONG_SHARD, UserRecordFailed, UserRecordResult
from producer.testing import FaultInjector
from protocol.aggregation import all_in_hash_range, deaggregate, effective_hash_key
from tests import servers
from tests.support.streams import create_stream, drain_shard, wait_stream_active
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TIMEOUT = 60.0
THROTTLE = "ProvisionedThroughputExceededException"


@pytest.fixture
def moto(moto_server: servers.LocalServer, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in servers.aws_env(moto_server.endpoint).items():
        monkeypatch.setenv(key, value)
    return moto_server.endpoint


@pytest.fixture
def kinesis_local_endpoint(
    kinesis_local: servers.LocalServer, monkeypatch: pytest.MonkeyPatch
) -> str:
    for key, value in servers.aws_env(kinesis=kinesis_local.endpoint).items():
        monkeypatch.setenv(key, value)
    return kinesis_local.endpoint


def new_stream(endpoint: str, shards: int = 1) -> tuple[Any, str]:
    admin = servers.client("kinesis", endpoint)
    name = f"producer-{uuid.uuid4().hex[:10]}"
    create_stream(admin, name, shards)
    return admin, name


def config(endpoint: str, **overrides: Any) -> ProducerConfig:
    settings: dict[str, Any] = {
        "region": servers.REGION,
        "kinesis_endpoint": endpoint,
        "metrics_level": "none",
        "record_max_buffered_time": 50,
        "retry_backoff_min": 20,
        "retry_backoff_max": 200,
    }
    settings.update(overrides)
    return ProducerConfig(**settings)


def outcome(future: Future[UserRecordResult]) -> UserRecordResult:
    try:
        return future.result(TIMEOUT)
    except UserRecordFailed as failure:
        return failure.result


def read_back(admin: Any, stream: str) -> dict[str, list[dict[str, Any]]]:
    """Every record of every shard (closed ones included), in shard order."""
    shards = admin.list_shards(StreamName=stream)["Shards"]
    return {
        shard["ShardId"]: drain_shard(admin, stream, shard["ShardId"]).records for shard in shards
    }


def hash_ranges(admin: Any, stream: str) -> dict[str, tuple[int, int]]:
    shards = admin.list_shards(StreamName=stream)["Shards"]
    return {
        s["ShardId"]: (
            int(s["HashKeyRange"]["StartingHashKey"]),
            int(s["HashKeyRange"]["EndingHashKey"]),
        )
        for s in shards
    }


def user_records(by_shard: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str, int], Any]:
    """(shard, sequence number, sub-sequence number) -> (partition key, data)."""
    out = {}
    for shard_id, kinesis_records in by_shard.items():
        for record in kinesis_records:
            subs = deaggregate(record["Data"])
            if subs is None:
                out[(shard_id, record["SequenceNumber"], 0)] = (
                    record["PartitionKey"],
                    record["Data"],
                )
            else:
                for sub in subs:
                    out[(shard_id, record["SequenceNumber"], sub.sub_sequence_number)] = (
                        sub.partition_key,
                        sub.data,
                    )
    return out


# -- moto ----------------------------------------------------------------------------------------


def test_every_future_resolves_and_aggregates_decode_with_both_deaggregators(moto: str) -> None:
    admin, stream = new_stream(moto, shards=2)
    sent = {}
    with KinesisProducer(config(moto)) as producer:
        futures = []
        for i in range(1500):
            key, data = f"user-{i % 97}", f"payload-{i}".encode() * (1 + i % 5)
            sent[i] = (key, data)
            futures.append(producer.add_user_record(stream, key, data))
        producer.flush_sync(TIMEOUT)
        assert all(f.done() for f in futures)
    by_shard = read_back(admin, stream)
    ranges = hash_ranges(admin, stream)
    stored = user_records(by_shard)
    for i, future in enumerate(futures):
        result = future.result()
        assert result.successful and result.shard_id is not None
        assert result.sub_sequence_number is not None and result.sequence_number is not None
        position = (result.shard_id, result.sequence_number, result.sub_sequence_number)
        assert stored[position] == sent[i]
    aggregated = 0
    for shard_id, kinesis_records in by_shard.items():
        for record in kinesis_records:
            ours = deaggregate(record["Data"])
            theirs = list(iter_deaggregate_records(record, data_format="Boto3"))
            if ours is None:
                assert len(theirs) == 1
                continue
            aggregated += 1
            assert [base64.b64decode(t["kinesis"]["data"]) for t in theirs] == [
                s.data for s in ours
            ]
            assert [t["kinesis"]["subSequenceNumber"] for t in theirs] == list(range(len(ours)))
            assert [t["kinesis"]["partitionKey"] for t in theirs] == [s.partition_key for s in ours]
            assert all_in_hash_range(ours, *ranges[shard_id])
    assert aggregated > 0


def test_injected_throttling_is_retried_and_counted(moto: str) -> None:
    admin, stream = new_stream(moto)
    client = FaultInjector(
        servers.client("kinesis", moto, retries={"total_max_attempts": 1}),
        record_fault=lambda call, item: THROTTLE if call <= 3 else None,
    )
    with KinesisProducer(config(moto), client=client) as producer:
        futures = [producer.add_user_record(stream, f"k{i}", b"x" * 50) for i in range(200)]
        producer.flush_sync(TIMEOUT)
        snapshot = producer.metrics()
    results = [outcome(f) for f in futures]
    assert all(r.successful for r in results)
    assert all(r.attempts[0].error_code == THROTTLE for r in results)
    assert snapshot.errors_by_code()[THROTTLE] == client.injected[THROTTLE]
    assert snapshot.sum("UserRecordsPut") == 200
    assert snapshot.sum("RetriesPerRecord") == sum(len(r.attempts) - 1 for r in results)
    assert len(user_records(read_back(admin, stream))) == 200


def test_records_failing_every_time_expire_with_code_expired_after_record_ttl(moto: str) -> None:
    admin, stream = new_stream(moto)
    client = FaultInjector(
        servers.client("kinesis", moto, retries={"total_max_attempts": 1}),
        record_fault=lambda call, item: (
            "InternalFailure" if item["PartitionKey"] == "doomed" else None
        ),
    )
    ttl = 400
    with KinesisProducer(
        config(moto, record_ttl=ttl, aggregation_enabled=False), client=client
    ) as producer:
        doomed = [producer.add_user_record(stream, "doomed", b"d") for _ in range(3)]
        fine = [producer.add_user_record(stream, f"fine-{i}", b"f") for i in range(20)]
        producer.flush_sync(TIMEOUT)
        snapshot = producer.metrics()
    for future in doomed:
        result = outcome(future)
        assert result.error_code == EXPIRED
        assert sum(a.delay_ms + a.duration_ms for a in result.attempts) >= ttl
    assert all(outcome(f).successful for f in fine)
    assert snapshot.sum("UserRecordExpired") == 3
    assert snapshot.errors_by_code()["InternalFailure"] >= 1
    assert {key for key, _ in user_records(read_back(admin, stream)).values()} == {
        f"fine-{i}" for i in range(20)
    }


def test_close_flushes_every_buffered_record(moto: str) -> None:
    admin, stream = new_stream(moto)
    producer = KinesisProducer(config(moto, record_max_buffered_time=600000))
    futures = [producer.add_user_record(stream, f"k{i}", b"late") for i in range(100)]
    producer.close()
    assert all(f.done() and f.result().successful for f in futures)
    assert len(user_records(read_back(admin, stream))) == 100


def test_same_key_records_arrive_in_add_order_under_retries(moto: str) -> None:
    admin, stream = new_stream(moto, shards=2)
    rng = random.Random(11)
    lock = threading.Lock()

    def flaky(call: int, item: dict[str, Any]) -> str | None:
        with lock:
            return THROTTLE if rng.random() < 0.3 else None

    client = FaultInjector(
        servers.client("kinesis", moto, retries={"total_max_attempts": 1}), flaky
    )
    keys = [f"device-{i}" for i in range(8)]
    added: dict[str, list[bytes]] = defaultdict(list)
    with KinesisProducer(
        config(moto, max_connections=8, aggregation_max_count=5), client=client
    ) as producer:
        futures = []
        for n in range(400):
            key = keys[n % len(keys)]
            added[key].append(f"{key}#{n}".encode())
            futures.append(producer.add_user_record(stream, key, added[key][-1]))
    assert client.injected[THROTTLE] > 0
    assert all(outcome(f).successful for f in futures)
    in_stream: dict[str, list[bytes]] = defaultdict(list)
    for shard_records in read_back(admin, stream).values():
        # Within a shard, GetRecords returns records in sequence-number order.
        for record in shard_records:
            subs = deaggregate(record["Data"])
            if subs is None:  # sent raw, before the shard map had arrived
                in_stream[record["PartitionKey"]].append(record["Data"])
            for sub in subs or []:
                in_stream[sub.partition_key].append(sub.data)
    assert in_stream == added


def test_metrics_are_published_to_cloudwatch(moto: str) -> None:
    _, stream = new_stream(moto)
    namespace = f"ProducerTest{uuid.uuid4().hex[:8]}"
    settings = config(
        moto,
        metrics_level="summary",
        metrics_granularity="stream",
        metrics_namespace=namespace,
        metrics_upload_delay=200,
        cloudwatch_endpoint=moto,
    )
    cloudwatch = servers.client("cloudwatch", moto)
    with KinesisProducer(settings) as producer:
        for i in range(50):
            producer.add_user_record(stream, f"k{i}", b"m")
        producer.flush_sync(TIMEOUT)

        def published() -> set[tuple[str, tuple[str, ...]]]:
            metrics = cloudwatch.list_metrics(Namespace=namespace)["Metrics"]
            return {(m["MetricName"], tuple(d["Name"] for d in m["Dimensions"])) for m in metrics}

        wait_until(
            lambda: ("UserRecordsPut", ("StreamName",)) in published(),
            20,
            message=lambda: f"published so far: {published()}",
        )
    names = {name for name, _ in published()}
    assert "UserRecordsPut" in names and "BufferingTime" in names
    assert "RequestTime" not in names  # a detailed metric, above the summary level
    assert all("ShardId" not in dims for _, dims in published())


def test_cli_writes_lines_from_stdin_and_prints_a_summary(moto: str) -> None:
    admin, stream = new_stream(moto, shards=2)
    lines = "".join(f"line {i}\n" for i in range(500)).encode()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "producer.cli",
            "--stream",
            stream,
            "--endpoint-url",
            moto,
            "--region",
            servers.REGION,
            "--progress-interval",
            "0.2",
        ],
        input=lines,
        capture_output=True,
        env=servers.child_env(moto, extra={"PYTHONPATH": os.getcwd()}),
        timeout=TIMEOUT,
        check=False,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "500 records, 500 written, 0 failed" in stderr and "records/s" in stderr
    data = sorted(d for _, d in user_records(read_back(admin, stream)).values())
    assert data == sorted(f"line {i}".encode() for i in range(500))


def test_cli_names_a_missing_stream_in_one_line(moto: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "producer.cli",
            "--stream",
            "no-such-stream",
            "--endpoint-url",
            moto,
        ],
        input=b"x\n",
        capture_output=True,
        env=servers.child_env(moto, extra={"PYTHONPATH": os.getcwd()}),
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        f"kcl-produce: stream 'no-such-stream' not found at {moto}: create it, or check --region "
        "and --endpoint-url"
    ]


# -- kinesis-local: shard maps and resharding ----------------------------------------------------


def test_aggregates_follow_the_shard_map(kinesis_local_endpoint: str) -> None:
    admin, stream = new_stream(kinesis_local_endpoint, shards=3)
    with KinesisProducer(config(kinesis_local_endpoint)) as producer:
        # Let the map load first, so that every record is aggregated.
        producer.add_user_record(stream, "warm-up", b"w").result(TIMEOUT)
        futures = [producer.add_user_record(stream, f"key-{i}", b"v") for i in range(90)]
        producer.flush_sync(TIMEOUT)
    assert all(outcome(f).successful for f in futures)
    ranges = hash_ranges(admin, stream)
    by_shard = read_back(admin, stream)
    aggregates = 0
    for shard_id, kinesis_records in by_shard.items():
        for record in kinesis_records:
            subs = deaggregate(record["Data"])
            if subs is not None:
                aggregates += 1
                assert all_in_hash_range(subs, *ranges[shard_id])
    assert aggregates >= 3
    assert len(user_records(by_shard)) == 91


def test_resharding_while_producing_retries_aggregates_that_land_outside_their_shard(
    kinesis_local_endpoint: str,
) -> None:
    admin, stream = new_stream(kinesis_local_endpoint, shards=1)
    parent = "shardId-000000000000"
    keys = [f"key-{i}" for i in range(40)]
    middle = 1 << 127
    assert {effective_hash_key(k, None) < middle for k in keys} == {True, False}
    with KinesisProducer(config(kinesis_local_endpoint)) as producer:
        before = [producer.add_user_record(stream, k, b"before") for k in keys]
        producer.flush_sync(TIMEOUT)
        admin.split_shard(StreamName=stream, ShardToSplit=parent, NewStartingHashKey=str(middle))
        wait_stream_active(admin, stream)
        after = [producer.add_user_record(stream, k, b"after") for k in keys]
        producer.flush_sync(TIMEOUT)
    results = [outcome(f) for f in before + after]
    assert all(r.successful for r in results)
    assert any(a.error_code == WRONG_SHARD for r in results for a in r.attempts)
    ranges = hash_ranges(admin, stream)
    by_shard = read_back(admin, stream)
    assert set(by_shard) == {parent, *[s for s in ranges if s != parent]}
    stored = user_records(by_shard)
    checked: dict[tuple[str, str], bool] = {}
    for shard_id, kinesis_records in by_shard.items():
        for record in kinesis_records:
            subs = deaggregate(record["Data"])
            if subs is not None:
                checked[(shard_id, record["SequenceNumber"])] = all_in_hash_range(
                    subs, *ranges[shard_id]
                )
    for result, key in zip(results, keys + keys, strict=True):
        assert result.shard_id is not None and result.sequence_number is not None
        position = (result.shard_id, result.sequence_number, result.sub_sequence_number or 0)
        assert stored[position][0] == key
        # Every success points at a record a KCL consumer keeps.
        assert checked.get((result.shard_id, result.sequence_number), True)
        low, high = ranges[result.shard_id]
        assert low <= effective_hash_key(key, None) <= high
