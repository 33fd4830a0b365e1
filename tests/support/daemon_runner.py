"""Run the real kcl-daemon process in tests, against real local servers.

A ``DaemonRun`` writes a properties file, starts ``python -m daemon.cli`` as
its own process (JSON logs to a file), and offers what tests need to watch
it: the log events, the records its processors wrote, the lease table.
"""

from __future__ import annotations

import base64
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import orjson
import psutil

from daemon.sequence import ExtendedSequenceNumber
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def aws_client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def python_processor(module: str) -> str:
    """executableName for a Python processor module of this repo."""
    return f"{shlex.quote(sys.executable)} -m {module}"


def write_properties(path: Path, settings: dict[str, Any]) -> Path:
    lines = [f"{key} = {value}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n", encoding="iso-8859-1")
    return path


@dataclass
class ProcessedRecord:
    """One line of a sample processor's output; ``data`` decoded from base64 as text."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    data: str

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.shard_id, self.sequence_number, self.sub_sequence_number)


def read_processed(path: Path) -> list[ProcessedRecord]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t", 4)
        if len(parts) == 5:
            data = base64.b64decode(parts[4]).decode("utf-8", "replace")
            records.append(ProcessedRecord(parts[0], parts[1], int(parts[2] or 0), parts[3], data))
    return records


@dataclass
class DaemonRun:
    """One kcl-daemon process; use ``start()``, then ``stop()`` (SIGTERM)."""

    folder: Path
    endpoint: str
    stream: str
    application: str
    executable: str
    extra: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    name: str = "worker"
    process: subprocess.Popen[bytes] | None = None
    # DynamoDB on its own server (dynalite next to kinesis-local); None: ``endpoint``.
    dynamodb_endpoint: str | None = None
    # --log-level for the daemon ("debug" logs every checkpoint); None: the CLI's default.
    log_level: str | None = None

    @property
    def output(self) -> Path:
        return self.folder / "processed.tsv"

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def properties(self) -> Path:
        return self.folder / f"{self.name}.properties"

    def settings(self) -> dict[str, Any]:
        return {
            "executableName": self.executable,
            "applicationName": self.application,
            "streamName": self.stream,
            "regionName": "us-east-1",
            "kinesisEndpoint": self.endpoint,
            "dynamoDBEndpoint": self.dynamodb_endpoint or self.endpoint,
            "initialPositionInStream": "TRIM_HORIZON",
            "idleTimeBetweenReadsInMillis": 100,
            "failoverTimeMillis": 3000,
            "shardSyncIntervalMillis": 5000,
            "shutdownGraceMillis": 3000,
            "childRestartBackoffMillis": 100,
            "workerId": self.name,
            **self.extra,
        }

    def start(self) -> DaemonRun:
        write_properties(self.properties, self.settings())
        env = {
            **os.environ,
            **AWS_ENV,
            "KCL_SAMPLE_OUTPUT": str(self.output),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO), self.env.pop("PYTHONPATH", None)])
            ),
            **self.env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daemon.cli",
                "--properties",
                str(self.properties),
                "--log-format",
                "json",
                *(["--log-level", self.log_level] if self.log_level else []),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def events(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        events = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def find_events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            event
            for event in self.events()
            if event.get("event") == name
            and all(event.get(key) == value for key, value in fields.items())
        ]

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def processed(self) -> list[ProcessedRecord]:
        return read_processed(self.output)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, message: str) -> None:
        def check() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"kcl-daemon exited with {self.process.returncode} while waiting for "
                    f"{message}:\n{self.log_tail()}"
                )
            return predicate()

        try:
            wait_until(check, timeout=timeout, message=message)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- daemon log ---\n{self.log_tail()}") from None

    def wait_for_records(self, count: int, timeout: float = 30.0) -> list[ProcessedRecord]:
        self.wait_for(
            lambda: len({r.key for r in self.processed()}) >= count,
            timeout,
            f"{count} distinct records processed",
        )
        return self.processed()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"kcl-daemon ignored SIGTERM for {timeout} s:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def child_pids(self) -> list[int]:
        """Pids of the daemon's child processors running now."""
        if not self.is_running():
            return []
        assert self.process is not None
        try:
            return [child.pid for child in psutil.Process(self.process.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint the daemon wrote (needs ``log_level="debug"``)."""
        return [
            Checkpoint(
                event["shard_id"],
                int(event["lease_counter"]),
                event["sequence_number"],
                int(event["sub_sequence_number"]),
                self.name,
            )
            for event in self.find_events("checkpoint written")
        ]


@dataclass(frozen=True)
class Checkpoint:
    """One successful checkpoint write, as the daemon logged it at debug level."""

    shard_id: str
    lease_counter: int
    sequence_number: str
    sub_sequence_number: int
    worker: str

    @property
    def position(self) -> ExtendedSequenceNumber:
        """Ordered as the KCL orders checkpoints (sentinels, sequence numbers, SHARD_END)."""
        return ExtendedSequenceNumber(self.sequence_number, self.sub_sequence_number)


def checkpoints_moving_backwards(
    checkpoints: list[Checkpoint],
) -> list[tuple[Checkpoint, Checkpoint]]:
    """Pairs (earlier, later) of checkpoints of one shard, in lease-counter order, that go back.

    The lease counter orders every write to a lease, whoever made it, so this needs no clocks.
    """
    backwards = []
    by_shard: dict[str, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        by_shard.setdefault(checkpoint.shard_id, []).append(checkpoint)
    for shard_checkpoints in by_shard.values():
        ordered = sorted(shard_checkpoints, key=lambda c: c.lease_counter)
        for earlier, later in zip(ordered, ordered[1:], strict=False):
            if later.position < earlier.position:
                backwards.append((earlier, later))
    return backwards


def create_stream(kinesis: Any, name: str, shards: int) -> list[str]:
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    wait_until(
        lambda: (
            kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
                "StreamStatus"
            ]
            == "ACTIVE"
        ),
        timeout=30,
        message=f"stream {name} active",
    )
    return sorted(s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"])


def put_records(
    kinesis: Any, stream: str, records: list[tuple[str, bytes]]
) -> dict[str, list[str]]:
    """Write (partition key, data) pairs; returns the data written per shard, in order."""
    per_shard: dict[str, list[str]] = {}
    for start in range(0, len(records), 500):
        chunk = records[start : start + 500]
        result = kinesis.put_records(
            StreamName=stream,
            Records=[{"PartitionKey": key, "Data": data} for key, data in chunk],
        )
        assert not result.get("FailedRecordCount"), result
        for (_, data), entry in zip(chunk, result["Records"], strict=True):
            per_shard.setdefault(entry["ShardId"], []).append(data.decode())
    return per_shard


def lease_items(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["leaseKey"]["S"]: item for item in items}
