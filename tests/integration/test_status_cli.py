"""``python -m daemon.status`` against a lease table (and a stream) on the moto server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.leases.model import Lease
from daemon.leases.store import LeaseStore
from daemon.sequence import LATEST, SHARD_END, ExtendedSequenceNumber
from tests import servers
from tests.support.streams import create_stream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def write_properties(path: Path, endpoint: str, app: str, stream: str) -> Path:
    path.write_text(
        "executableName = python3 processor.py\n"
        f"applicationName = {app}\n"
        f"streamName = {stream}\n"
        "regionName = us-east-1\n"
        f"kinesisEndpoint = {endpoint}\n"
        f"dynamoDBEndpoint = {endpoint}\n"
    )
    return path


def run_status(properties: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.status", "--properties", str(properties), *args],
        cwd=ROOT,
        env=servers.child_env(endpoint),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def app(
    moto_server: servers.LocalServer, tmp_path: Path, unique_name: Callable[[str], str]
) -> tuple[Path, str, LeaseStore, Any]:
    """A properties file, the endpoint, the application's (empty) lease table and a Kinesis client."""
    name = unique_name("status")
    store = LeaseStore(servers.client("dynamodb", moto_server.endpoint), name)
    store.ensure_table()
    kinesis = servers.client("kinesis", moto_server.endpoint)
    properties = write_properties(tmp_path / "app.properties", moto_server.endpoint, name, name)
    return properties, moto_server.endpoint, store, kinesis


def test_json_lists_every_lease_with_owner_checkpoint_and_state(
    app: tuple[Path, str, LeaseStore, Any],
) -> None:
    properties, endpoint, store, _ = app
    store.create_lease_if_absent(
        Lease(
            "shardId-000000000000", lease_owner="w1", checkpoint=ExtendedSequenceNumber(SHARD_END)
        )
    )
    store.create_lease_if_absent(
        Lease(
            "shardId-000000000001",
            lease_owner="w2",
            checkpoint=ExtendedSequenceNumber("12345", 2),
            owner_switches_since_checkpoint=1,
        )
    )
    store.create_lease_if_absent(
        Lease(
            "shardId-000000000002",
            checkpoint=ExtendedSequenceNumber("TRIM_HORIZON"),
            parent_shard_ids=frozenset({"shardId-000000000001"}),
        )
    )
    result = run_status(properties, endpoint, "--json")
    assert result.returncode == 0, result.stderr
    document = orjson.loads(result.stdout)
    rows = {row["shard_id"]: row for row in document["leases"]}
    assert document["table"] == store.table_name
    assert rows["shardId-000000000000"]["state"] == "ended"
    assert rows["shardId-000000000001"]["owner"] == "w2"
    assert rows["shardId-000000000001"]["checkpoint"] == "12345/2"
    assert rows["shardId-000000000001"]["owner_switches_since_checkpoint"] == 1
    assert rows["shardId-000000000002"]["state"] == "waiting on parent"
    assert rows["shardId-000000000002"]["parents"] == ["shardId-000000000001"]
    assert all(row["lag_millis"] is None for row in rows.values())


def test_table_output_is_for_people(app: tuple[Path, str, LeaseStore, Any]) -> None:
    properties, endpoint, store, _ = app
    store.create_lease_if_absent(
        Lease("shardId-000000000000", lease_owner="w1", checkpoint=ExtendedSequenceNumber("77"))
    )
    result = run_status(properties, endpoint)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["SHARD", "OWNER", "CHECKPOINT"]
    assert lines[1].split()[:4] == ["shardId-000000000000", "w1", "77", "open"]
    assert f"1 leases in table '{store.table_name}'; 1 workers (w1: 1)" in result.stdout
    assert result.stderr == ""


def test_missing_table_is_a_clear_message_and_exit_3(
    moto_server: servers.LocalServer, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    name = unique_name("absent")
    properties = write_properties(tmp_path / "a.properties", moto_server.endpoint, name, name)
    result = run_status(properties, moto_server.endpoint, "--json")
    assert result.returncode == 3
    assert result.stdout == ""
    assert f"lease table '{name}' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_lag_flag_measures_how_far_each_checkpoint_is_behind(
    app: tuple[Path, str, LeaseStore, Any],
) -> None:
    properties, endpoint, store, kinesis = app
    stream = store.table_name
    create_stream(kinesis, stream, shard_count=1)
    shard = "shardId-000000000000"
    first = kinesis.put_record(StreamName=stream, Data=b"a", PartitionKey="k")["SequenceNumber"]
    for data in (b"b", b"c"):
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey="k")
    store.create_lease_if_absent(
        Lease(shard, lease_owner="w1", checkpoint=ExtendedSequenceNumber(first))
    )
    store.create_lease_if_absent(
        Lease("shardId-000000000007", checkpoint=ExtendedSequenceNumber(LATEST))
    )
    result = run_status(properties, endpoint, "--json", "--lag")
    assert result.returncode == 0, result.stderr
    document = orjson.loads(result.stdout)
    rows = {row["shard_id"]: row for row in document["leases"]}
    assert document["lag_measured"] is True
    assert isinstance(rows[shard]["lag_millis"], int)
    assert rows["shardId-000000000007"]["lag_millis"] is None
