#!/usr/bin/env python3
"""Start-up, child-crash recovery and failover of the real kcl-daemon.

All runs read the loopback endpoint of ``bench/fake_kinesis.py`` (records at
full speed) with the counting no-op child (``bench/counting_processor.py``)
and keep leases on a moto server. Times come from the children's count
files (when a child's first batch arrived) against the moment of the action.

* Start-up to first record: from spawning ``kcl-daemon`` (fresh lease table)
  to the first record in a child, at 1 and 16 shards; and a restart (kill -9
  of the daemon, then a new one with the same workerId, which takes its
  leases back at once). Baseline: a hand-written boto3 loop (import boto3,
  make a client, GetShardIterator, GetRecords) against the same endpoint.
* Child kill -9 to records flowing again (one shard's child; the others never
  stop), with the default restart back-off (childRestartBackoffMillis 500, with
  jitter). Baseline: what the official MultiLangDaemon does when a child dies
  (it exits the whole JVM with System.exit; every shard waits for an outside
  supervisor), measured here as a restart of the whole kcl-daemon.
* Failover: two daemons share 4 shards; kill -9 of one (and its children);
  time until the other delivers records on every shard the dead one held.
  Baseline: the official client's schedule (renew every F/3, scan every 2F,
  a lease seen expired after two scans: about 2F to 4F after the kill).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fake_kinesis import FakeKinesisProcess  # noqa: E402
from bench.harness import DaemonBench, Moto, median, table, wait_for  # noqa: E402
from daemon.local_backend import LOCAL_CREDENTIALS  # noqa: E402

BOTO3_LOOP = """
import time, sys
import boto3
client = boto3.client("kinesis", endpoint_url=sys.argv[1], region_name="us-east-1")
iterator = client.get_shard_iterator(
    StreamName="bench-stream", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
)["ShardIterator"]
records = client.get_records(ShardIterator=iterator)["Records"]
assert records
print(time.time(), flush=True)
"""


@dataclass
class Row:
    what: str
    how: str
    seconds: list[float]
    note: str = ""


def first_record_after(daemon: DaemonBench, timeout: float = 60.0) -> float:
    """Seconds from the daemon's spawn to the first record any child received."""

    def first() -> float:
        daemon.check_alive()
        times = [c.since for c in daemon.shard_counts().values() if c.records]
        return min(times) if times else 0.0

    return float(wait_for(first, timeout, "a first record")) - daemon.started_at


def boto3_loop_first_record(endpoint: str) -> float:
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-c", BOTO3_LOOP, endpoint],
        env={**os.environ, **LOCAL_CREDENTIALS},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(result.stdout.split()[0]) - started


def startup(moto: str, runs: int, log: bool) -> list[Row]:
    rows = []
    for shards in (1, 16):
        with FakeKinesisProcess(shards=shards, dynamodb=moto) as fake:
            fresh, restarted = [], []
            for _ in range(runs):
                first = DaemonBench(fake.endpoint, fake.endpoint, shards, name="startup")
                with first:
                    fresh.append(first_record_after(first))
                    first.kill()
                    again = DaemonBench(
                        fake.endpoint, fake.endpoint, shards, name="startup",
                        application=first.application, worker_id=first.worker_id,
                        folder=first.folder, own_folder=False,
                    )  # fmt: skip
                    again.counts = first.folder / "counts-restart"
                    again.counts.mkdir()
                    with again:
                        restarted.append(first_record_after(again))
            rows.append(
                Row(
                    "start-up to first record",
                    f"kcl-daemon, {shards} shard{'s' if shards > 1 else ''}",
                    fresh,
                )
            )
            rows.append(
                Row(
                    "start-up to first record",
                    f"kcl-daemon restarted (same workerId), {shards} shard{'s' if shards > 1 else ''}",
                    restarted,
                )
            )
            if shards == 1:
                loop = [boto3_loop_first_record(fake.endpoint) for _ in range(runs)]
                rows.append(
                    Row("start-up to first record", "baseline: hand-written boto3 loop", loop)
                )
        if log:
            print(f"  start-up {shards} shards: {median(fresh):.2f} s", file=sys.stderr)
    return rows


def child_kill(moto: str, kills: int, log: bool) -> list[Row]:
    shards = max(kills, 2)
    with (
        FakeKinesisProcess(shards=shards, dynamodb=moto) as fake,
        DaemonBench(fake.endpoint, fake.endpoint, shards, name="childkill") as daemon,
    ):
        daemon.wait_flowing(timeout=90)
        time.sleep(1.0)
        gaps = []
        for shard in sorted(daemon.shard_counts())[:kills]:
            before = daemon.shard_counts()[shard]
            killed_at = time.time()
            os.kill(before.pid, signal.SIGKILL)

            def back(
                shard: str = shard, old: int = before.pid, killed_at: float = killed_at
            ) -> float:
                daemon.check_alive()
                now = daemon.shard_counts()[shard]
                return now.since if now.pid != old and now.since > killed_at else 0.0

            gaps.append(float(wait_for(back, 60, f"records on {shard} again")) - killed_at)
        # The baseline: the whole daemon goes (the official daemon's System.exit) and a
        # supervisor starts it again at once; it takes its leases back (same workerId).
        restarts = []
        for _ in range(kills):
            daemon.kill()
            killed_at = time.time()
            daemon.counts = daemon.folder / f"counts-{killed_at}"
            daemon.counts.mkdir()
            daemon.start()
            restarts.append(first_record_after(daemon) + daemon.started_at - killed_at)
    if log:
        print(f"  child kill: {median(gaps):.2f} s", file=sys.stderr)
    return [
        Row("child kill -9 to records flowing again", "kcl-daemon: restarts that child", gaps),
        Row(
            "child kill -9 to records flowing again",
            "baseline: the whole daemon exits and is restarted",
            restarts,
            "official MultiLangDaemon: System.exit on a child failure",
        ),
    ]


def failover(moto: str, runs: int, failover_ms: int, log: bool) -> list[Row]:
    shards = 4
    settings = {"failoverTimeMillis": failover_ms}
    gaps = []
    with FakeKinesisProcess(shards=shards, dynamodb=moto) as fake:
        for _ in range(runs):
            a = DaemonBench(fake.endpoint, fake.endpoint, shards, extra=settings, name="a")
            b = DaemonBench(
                fake.endpoint, fake.endpoint, shards, extra=settings, name="b",
                application=a.application, folder=a.folder,
            )  # fmt: skip
            with a, b:
                gaps.append(kill_one_and_wait(a, b, shards, failover_ms))
    if log:
        print(f"  failover: {median(gaps):.2f} s", file=sys.stderr)
    seconds = failover_ms / 1000
    return [
        Row(
            "failover: kill -9 of a worker to its shards flowing at the other",
            f"kcl-daemon, failoverTimeMillis {failover_ms}",
            gaps,
            f"{median(gaps) / seconds:.1f} F",
        ),
        Row(
            "failover: kill -9 of a worker to its shards flowing at the other",
            "baseline: official schedule (renew F/3, scan 2F, two scans)",
            [2 * seconds - seconds / 3, 4 * seconds],
            "about 2F to 4F (computed, not measured)",
        ),
    ]


def kill_one_and_wait(a: DaemonBench, b: DaemonBench, shards: int, failover_ms: int) -> float:
    """Once both hold leases, kill -9 the busier one; seconds until the other has its shards."""

    def balanced() -> bool:
        # Each shard at exactly one worker, both busy (no hand-off under way).
        mine, theirs = held(a), held(b)
        return bool(mine and theirs and not mine & theirs and len(mine | theirs) == shards)

    wait_for(balanced, 90, "both workers holding leases", interval=0.1)
    victim, survivor = (a, b) if len(held(a)) >= len(held(b)) else (b, a)
    lost = held(victim) - held(survivor)
    victim.kill()
    killed_at = time.time()

    def taken_over() -> bool:
        survivor.check_alive()
        counts = survivor.shard_counts()
        return all(s in counts and counts[s].since > killed_at for s in lost)

    wait_for(taken_over, 10 * failover_ms / 1000 + 30, "failover", interval=0.02)
    counts = survivor.shard_counts()
    return max(counts[s].since for s in lost) - killed_at


def held(daemon: DaemonBench, within_s: float = 0.5) -> set[str]:
    """Shards whose child at this daemon got a batch in the last ``within_s`` seconds."""
    now = time.time()
    return {s for s, c in daemon.shard_counts().items() if c.records and now - c.last < within_s}


def report(rows: list[Row]) -> str:
    lines = []
    for row in rows:
        if row.how.startswith("baseline: official schedule"):
            value = f"{row.seconds[0]:.1f} to {row.seconds[1]:.1f}"
            runs = "-"
        else:
            value = f"{median(row.seconds):.2f}"
            runs = str(len(row.seconds))
        lines.append([row.what, row.how, value, runs, row.note])
    return table(["measure", "who", "seconds (median)", "runs", "note"], lines, right={2, 3})


def run(moto: str, runs: int = 3, failover_ms: int = 5000, log: bool = True) -> list[Row]:
    return (
        startup(moto, runs, log)
        + child_kill(moto, runs, log)
        + failover(moto, runs, failover_ms, log)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="start-up, recovery and failover benchmark")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--failover-ms", type=int, default=5000)
    args = parser.parse_args()
    moto = Moto()
    try:
        rows = run(moto.endpoint, args.runs, args.failover_ms)
    finally:
        moto.stop()
    print(report(rows))


if __name__ == "__main__":
    main()
