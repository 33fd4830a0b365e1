"""Chaos: three workers, six shards, 20,000+ records, kill -9 of children and workers, a split.

Runs on kinesis-local + dynalite, the backends that reshard as AWS does (moto keeps writing to a
split shard's closed parent, which would break the per-key order this test checks). kinesis-local
takes a few hundred PutRecords entries a second, so the records go as KPL aggregates (about 40 user
records per Kinesis record), grouped per shard the way the KPL groups them; the daemon
deaggregates. The writer splits one shard itself, between two of its puts, and then writes by the
new shard map, so no aggregate straddles the children's hash ranges.

The random schedule (which child or worker dies when, whether a killed worker comes back under
its own id or a new one, which shard splits) comes from a seed printed at the start and named in
every failure; set KCL_CHAOS_SEED to replay it.

Checked at the end: every record processed at least once; per partition key, first deliveries in
the order written, across the split; no checkpoint ever moves backwards (each daemon logs every
checkpoint with its lease counter at debug level); the workers alive at the end hold every
unfinished lease.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from protocol.aggregation import UserRecord, effective_hash_key, outer_record
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

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RECORD_LOGGER = python_processor("processors.samples.record_logger")
SHARDS = 6
KEYS = [f"user-{n:02d}" for n in range(48)]
RECORDS_PER_KEY_PER_ROUND = 5
ROUNDS = 84  # 48 keys x 5 x 84 = 20,160 records
SETTINGS = {
    "failoverTimeMillis": 3000,
    "idleTimeBetweenReadsInMillis": 200,
    "parentShardPollIntervalMillis": 1000,
    "shardSyncIntervalMillis": 3000,
    "childRestartBackoffMillis": 100,
    "childRestartMaxBackoffMillis": 1000,
    "childMinUptimeSeconds": 2,
    "shutdownGraceMillis": 2000,
}


class AggregatingWriter(threading.Thread):
    """Writes "key:n" user records in KPL aggregates, one per open shard per round; splits once."""

    def __init__(self, kinesis: Any, stream: str, split_round: int, rng: random.Random) -> None:
        super().__init__(daemon=True, name="chaos-writer")
        self.kinesis = kinesis
        self.stream = stream
        self.split_round = split_round
        self.rng = rng
        self.written: dict[str, list[int]] = defaultdict(list)
        self.count = 0
        self.rounds_done = 0
        self.split: tuple[str, list[str]] | None = None  # parent, children
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def open_shards(self) -> list[tuple[int, int, str]]:
        shards = self.kinesis.list_shards(StreamName=self.stream)["Shards"]
        return sorted(
            (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]),
             s["ShardId"])
            for s in shards
            if "EndingSequenceNumber" not in s["SequenceNumberRange"]
        )  # fmt: skip

    def run(self) -> None:
        try:
            ranges = self.open_shards()
            for round_number in range(ROUNDS):
                if self.halt.is_set():
                    return
                if round_number == self.split_round:
                    ranges = self._split(ranges)
                self._write_round(ranges)
                self.rounds_done += 1
                self.halt.wait(0.45)
        except BaseException as error:  # reported by the test
            self.error = error

    def _split(self, ranges: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        start, end, parent = self.rng.choice(ranges)
        self.kinesis.split_shard(
            StreamName=self.stream, ShardToSplit=parent, NewStartingHashKey=str((start + end) // 2)
        )
        wait_stream_active(self.kinesis, self.stream)
        now_open = self.open_shards()
        self.split = (parent, sorted({shard for _, _, shard in now_open} - {r[2] for r in ranges}))
        return now_open

    def _write_round(self, ranges: list[tuple[int, int, str]]) -> None:
        per_shard: dict[str, list[UserRecord]] = defaultdict(list)
        batch: list[tuple[str, int]] = []
        for key in KEYS:
            hash_key = effective_hash_key(key, None)
            shard = next(shard for start, end, shard in ranges if start <= hash_key <= end)
            first = len(self.written[key])
            for n in range(first, first + RECORDS_PER_KEY_PER_ROUND):
                batch.append((key, n))
                per_shard[shard].append(UserRecord(key, f"{key}:{n}".encode()))
        entries = []
        for records in per_shard.values():
            partition_key, data, explicit_hash_key = outer_record(records)
            entry = {"PartitionKey": partition_key, "Data": data}
            if explicit_hash_key is not None:
                entry["ExplicitHashKey"] = explicit_hash_key
            entries.append(entry)
        response = self.kinesis.put_records(StreamName=self.stream, Records=entries)
        if response.get("FailedRecordCount"):
            raise AssertionError(f"put_records failed: {response['Records']}")
        for key, n in batch:
            self.written[key].append(n)
        self.count += len(batch)


@dataclass
class Chaos:
    """The workers, and the schedule of faults run against them."""

    folder: Path
    kinesis_endpoint: str
    dynamodb_endpoint: str
    stream: str
    application: str
    rng: random.Random
    seed: int
    workers: dict[str, DaemonRun] = field(default_factory=dict)
    all_runs: list[DaemonRun] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    next_id: int = 4

    def start(self, name: str) -> DaemonRun:
        run = DaemonRun(
            self.folder,
            self.kinesis_endpoint,
            self.stream,
            self.application,
            RECORD_LOGGER,
            name=name,
            extra=dict(SETTINGS),
            dynamodb_endpoint=self.dynamodb_endpoint,
            log_level="debug",
        ).start()
        self.workers[name] = run
        self.all_runs.append(run)
        return run

    def note(self, what: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {what}")

    def kill_a_child(self) -> None:
        live = [run for run in self.workers.values() if run.child_pids()]
        if not live:
            return
        run = self.rng.choice(live)
        pids = run.child_pids()
        if not pids:
            return
        pid = self.rng.choice(sorted(pids))
        try:
            os.kill(pid, signal.SIGKILL)
            self.note(f"kill -9 child {pid} of {run.name}")
        except ProcessLookupError:
            pass

    def kill_a_worker(self) -> str:
        name = self.rng.choice(sorted(self.workers))
        self.workers.pop(name).kill()
        self.note(f"kill -9 worker {name}")
        return name

    def restart(self, killed: str) -> None:
        # Under its own id it reclaims its leases at once; under a new one its
        # leases must expire and be taken by the others.
        if self.rng.random() < 0.5:
            name = killed
        else:
            name, self.next_id = f"w{self.next_id}", self.next_id + 1
        self.start(name)
        self.note(f"start worker {name}")

    def describe(self) -> str:
        tails = "\n".join(f"--- {n} ---\n{run.log_tail(20)}" for n, run in self.workers.items())
        return (
            f"seed {self.seed} (replay: KCL_CHAOS_SEED={self.seed})\n"
            + "\n".join(self.log)
            + f"\n{tails}"
        )


def first_deliveries_per_key(records: list[ProcessedRecord]) -> dict[str, list[int]]:
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for record in records:
        if record.data not in seen:
            seen.add(record.data)
            key, n = record.data.rsplit(":", 1)
            order[key].append(int(n))
    return order


def test_chaos_keeps_every_record_order_and_checkpoints(
    tmp_path: Path, kinesis_local: LocalServer, dynalite: LocalServer
) -> None:
    seed = int(os.environ.get("KCL_CHAOS_SEED") or random.randrange(1 << 32))
    print(f"chaos seed: {seed} (replay with KCL_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    suffix = uuid.uuid4().hex[:8]
    kinesis = aws_client("kinesis", kinesis_local.endpoint)
    dynamodb = aws_client("dynamodb", dynalite.endpoint)
    stream, application = f"chaos-{suffix}", f"chaos-app-{suffix}"
    create_stream(kinesis, stream, SHARDS)
    chaos = Chaos(
        tmp_path, kinesis_local.endpoint, dynalite.endpoint, stream, application, rng, seed
    )
    writer = AggregatingWriter(
        kinesis, stream, split_round=rng.randrange(ROUNDS // 3, 2 * ROUNDS // 3), rng=rng
    )
    try:
        for name in ("w1", "w2", "w3"):
            chaos.start(name)
        writer.start()
        restart_at: tuple[float, str] | None = None
        next_fault = time.monotonic() + rng.uniform(3, 5)
        while writer.is_alive():
            writer.join(0.2)
            now = time.monotonic()
            if restart_at is not None and now >= restart_at[0]:
                chaos.restart(restart_at[1])
                restart_at = None
            if now >= next_fault:
                if restart_at is None and rng.random() < 0.35:
                    restart_at = (now + rng.uniform(1, 6), chaos.kill_a_worker())
                else:
                    chaos.kill_a_child()
                next_fault = now + rng.uniform(2.5, 5)
        assert writer.error is None, f"{writer.error!r}\n{chaos.describe()}"
        assert writer.split is not None and writer.count >= 20_000
        chaos.note(f"writer done: {writer.count} records; split {writer.split}")
        expected = {f"{key}:{n}" for key, numbers in writer.written.items() for n in numbers}
        output = next(iter(chaos.workers.values()))

        def missing() -> int:
            return len(expected - {record.data for record in output.processed()})

        wait_until(lambda: missing() == 0, 90, interval=0.5,
                   message=lambda: f"{missing()} records never processed\n{chaos.describe()}")  # fmt: skip

        def every_lease_held_by_a_survivor() -> bool:
            leases = lease_items(dynamodb, application).values()
            unfinished = [item for item in leases if item["checkpoint"]["S"] != "SHARD_END"]
            owners = {item.get("leaseOwner", {}).get("S") for item in unfinished}
            return bool(unfinished) and owners <= set(chaos.workers)

        wait_until(every_lease_held_by_a_survivor, 30, interval=0.5,
                   message=lambda: f"leases not all held by survivors\n{chaos.describe()}")  # fmt: skip
    finally:
        writer.halt.set()
        for run in chaos.workers.values():
            if run.is_running():
                run.stop()
        for run in chaos.all_runs:
            run.kill()

    order = first_deliveries_per_key(output.processed())
    wrong = [key for key in writer.written if order.get(key) != writer.written[key]]
    assert not wrong, f"per-key order broken for {wrong[:5]}\n{chaos.describe()}"
    logs = {run.log_path: run for run in chaos.all_runs}  # a restarted worker appends to its log
    checkpoints = [c for run in logs.values() for c in run.checkpoints()]
    assert len(checkpoints) > 100
    backwards = checkpoints_moving_backwards(checkpoints)
    assert not backwards, f"checkpoints moved backwards: {backwards[:3]}\n{chaos.describe()}"
    parent, children = writer.split
    for child in children:
        assert any(c.shard_id == child for c in checkpoints), f"{child} never checkpointed"
    assert any(c.shard_id == parent and c.sequence_number == "SHARD_END" for c in checkpoints)
