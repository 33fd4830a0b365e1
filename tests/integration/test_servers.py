"""The local servers the other integration tests rely on: each starts, serves the API behaviour
the project depends on, and releases its port when stopped; a server that fails to start says why.
Also checks that the official amazon_kclpy fetched for the compatibility tests imports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import servers
from tests.support import kclpy
from tests.support.streams import create_stream, drain_shard, wait_stream_active
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_moto_server_returns_put_records_in_order(
    moto_server: servers.LocalServer, unique_name: Callable[[str], str]
) -> None:
    kinesis = servers.client("kinesis", moto_server.endpoint)
    stream = unique_name("stream")
    create_stream(kinesis, stream, shard_count=1)
    payloads = [f"record-{i}".encode() for i in range(5)]

    kinesis.put_records(
        StreamName=stream, Records=[{"Data": d, "PartitionKey": "pk"} for d in payloads]
    )

    shard_id = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    assert drain_shard(kinesis, stream, shard_id).data == payloads


def test_moto_server_serves_dynamodb_and_cloudwatch_on_the_same_endpoint(
    moto_server: servers.LocalServer, unique_name: Callable[[str], str]
) -> None:
    dynamodb = servers.client("dynamodb", moto_server.endpoint)
    cloudwatch = servers.client("cloudwatch", moto_server.endpoint)
    table = unique_name("table")

    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    cloudwatch.put_metric_data(
        Namespace=table, MetricData=[{"MetricName": "RecordsProcessed", "Value": 3.0}]
    )

    assert table in dynamodb.list_tables()["TableNames"]
    metrics = cloudwatch.list_metrics(Namespace=table)["Metrics"]
    assert [m["MetricName"] for m in metrics] == ["RecordsProcessed"]


def test_kinesis_local_split_ends_the_parent_with_child_shards(
    kinesis_local: servers.LocalServer, unique_name: Callable[[str], str]
) -> None:
    kinesis = servers.client("kinesis", kinesis_local.endpoint)
    stream = unique_name("stream")
    create_stream(kinesis, stream, shard_count=1)
    parent = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    before = kinesis.put_record(StreamName=stream, Data=b"before", PartitionKey="pk")

    kinesis.update_shard_count(StreamName=stream, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
    wait_stream_active(kinesis, stream)
    after = kinesis.put_record(StreamName=stream, Data=b"after", PartitionKey="pk")

    shards = {s["ShardId"]: s for s in kinesis.list_shards(StreamName=stream)["Shards"]}
    children = sorted(sid for sid, s in shards.items() if s.get("ParentShardId") == parent)
    assert len(children) == 2
    assert after["ShardId"] in children
    # Sequence numbers look like AWS's: 56 digits, growing from the parent to its children.
    assert len(before["SequenceNumber"]) == 56
    assert int(after["SequenceNumber"]) > int(before["SequenceNumber"])

    read = drain_shard(kinesis, stream, parent)
    assert read.data == [b"before"]
    assert read.ended, "a drained closed shard must end with no NextShardIterator"
    assert sorted(c["ShardId"] for c in read.child_shards) == children
    assert all(c["ParentShards"] == [parent] for c in read.child_shards)
    assert drain_shard(kinesis, stream, after["ShardId"]).data == [b"after"]


def test_dynalite_conditional_update_fails_when_the_condition_does_not_hold(
    dynalite: servers.LocalServer, unique_name: Callable[[str], str]
) -> None:
    dynamodb = servers.client("dynamodb", dynalite.endpoint)
    table = unique_name("leases")
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    wait_until(
        lambda: dynamodb.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE",
        timeout=10,
        message=f"table {table} never became ACTIVE",
    )
    key = {"leaseKey": {"S": "shardId-000000000000"}}
    dynamodb.put_item(TableName=table, Item={**key, "leaseCounter": {"N": "1"}})

    def bump_if_counter_is(expected: str) -> None:
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET leaseCounter = leaseCounter + :one",
            ConditionExpression="leaseCounter = :expected",
            ExpressionAttributeValues={":one": {"N": "1"}, ":expected": {"N": expected}},
        )

    bump_if_counter_is("1")
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
        bump_if_counter_is("1")

    item = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
    assert item["leaseCounter"] == {"N": "2"}


STARTERS: dict[str, Callable[[], servers.LocalServer]] = {
    "moto": servers.start_moto,
    "kinesis-local": servers.start_kinesis_local,
    "dynalite": servers.start_dynalite,
}


@pytest.mark.parametrize("name", sorted(STARTERS))
def test_stopped_server_releases_its_port(name: str, request: pytest.FixtureRequest) -> None:
    if name != "moto":
        request.getfixturevalue("node_modules")
    server = STARTERS[name]()
    try:
        assert servers.port_is_open(server.port)
    finally:
        server.stop()

    assert not server.is_running()
    assert not servers.port_is_open(server.port)


def _python_server(code: str) -> servers.CommandBuilder:
    def command(port: int) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-c", code], servers.scrubbed_environ()

    return command


def _never_ready(endpoint: str) -> None:
    raise ConnectionError(f"nothing answers at {endpoint}")


def test_server_that_exits_while_starting_raises_with_its_output() -> None:
    command = _python_server("print('cannot open the data file', flush=True); raise SystemExit(3)")

    with pytest.raises(servers.ServerStartError) as failure:
        servers.start_server("broken", command, _never_ready, timeout=10)

    assert "exited with code 3" in str(failure.value)
    assert "cannot open the data file" in str(failure.value)


def test_server_that_never_answers_times_out_with_its_output_and_is_stopped(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pid"
    command = _python_server(
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
        "print('listening soon', flush=True); time.sleep(60)"
    )

    with pytest.raises(servers.ServerStartError) as failure:
        servers.start_server("silent", command, _never_ready, timeout=0.5)

    assert "did not answer" in str(failure.value)
    assert "listening soon" in str(failure.value)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_official_kclpy_imports_from_kclpy_path(kclpy_path: Path) -> None:
    env = kclpy.with_kclpy_on_path(servers.scrubbed_environ(), kclpy_path)
    code = (
        "import amazon_kclpy, sys; from amazon_kclpy import kcl; from amazon_kclpy.v3 import "
        "processor; print(amazon_kclpy.__file__)"
    )

    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(kclpy_path))
