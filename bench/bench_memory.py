#!/usr/bin/env python3
"""Resident memory of the kcl-daemon process at 1, 16 and 100 shards (children excluded).

Each shard's records flow as a caught-up stream's do: the loopback endpoint
(``bench/fake_kinesis.py``) answers every GetRecords with 100 records and
``MillisBehindLatest`` 0, so the daemon polls each shard every
``idleTimeBetweenReadsInMillis`` (1000 here) with a counting no-op child per
shard. Once every shard has delivered, RSS is sampled every 0.2 s for a few
seconds; the table shows the median and the peak, and the median RSS of one
child for scale. Target: at most 100 MB at 100 shards.

Baseline: a bare Python process that imports boto3, makes a Kinesis client and
reads one GetRecords: the floor any boto3-based reader starts from.

The table also gives the daemon's CPU while sampling, as a share of one core
and per GetRecords call: on a caught-up stream nearly all of it is the cost of
each call (botocore builds, signs, sends and reads it), whatever it returns.

(The relay benchmark reports RSS at full speed, where the prefetch buffers of
``prefetchMaxRecords`` per shard dominate.)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fake_kinesis import FakeKinesisProcess  # noqa: E402
from bench.harness import DaemonBench, Moto, median, table  # noqa: E402
from daemon.local_backend import LOCAL_CREDENTIALS  # noqa: E402

TARGET_MIB = 100
MIB = 2**20
BOTO3_FLOOR = """
import sys, psutil, boto3
client = boto3.client("kinesis", endpoint_url=sys.argv[1], region_name="us-east-1")
iterator = client.get_shard_iterator(
    StreamName="bench-stream", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
)["ShardIterator"]
client.get_records(ShardIterator=iterator)
print(psutil.Process().memory_info().rss)
"""


@dataclass
class Memory:
    shards: int
    median_mib: float
    peak_mib: float
    child_mib: float
    cpu_share: float  # the daemon's CPU seconds per second while sampling
    cpu_ms_per_call: float  # ... per GetRecords call the endpoint answered meanwhile


def measure(moto: str, shards: int, sample_s: float) -> Memory:
    with (
        FakeKinesisProcess(shards=shards, records=100, millis_behind=0, dynamodb=moto) as fake,
        DaemonBench(
            fake.endpoint, fake.endpoint, shards, checkpoint_every=0, name="memory",
            extra={"idleTimeBetweenReadsInMillis": 1000},
        ) as daemon,
    ):  # fmt: skip
        daemon.wait_flowing(timeout=30 + shards * 1.0)
        samples = []
        before, calls_before = daemon.snapshot(), fake.stats()["calls"].get("GetRecords", 0)
        deadline = time.monotonic() + sample_s
        while time.monotonic() < deadline:
            daemon.check_alive()
            samples.append(daemon.rss())
            time.sleep(0.2)
        after, calls_after = daemon.snapshot(), fake.stats()["calls"].get("GetRecords", 0)
        children = [c.memory_info().rss for c in daemon.children() if c.is_running()]
    cpu_s = after.cpu_s - before.cpu_s
    return Memory(
        shards,
        median(samples) / MIB,
        max(samples) / MIB,
        median(children) / MIB if children else 0.0,
        cpu_s / (after.at - before.at),
        cpu_s * 1000 / max(calls_after - calls_before, 1),
    )


def boto3_floor(endpoint: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", BOTO3_FLOOR, endpoint],
        env={**os.environ, **LOCAL_CREDENTIALS},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout.split()[0]) / MIB


def run(
    moto: str, shard_counts: tuple[int, ...] = (1, 16, 100), sample_s: float = 3.0, log: bool = True
) -> tuple[list[Memory], float]:
    results = []
    for shards in shard_counts:
        results.append(measure(moto, shards, sample_s))
        if log:
            print(
                f"  memory {shards} shards: {results[-1].median_mib:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    with FakeKinesisProcess(shards=1, records=100, millis_behind=0) as fake:
        floor = median(boto3_floor(fake.endpoint) for _ in range(3))
    return results, floor


def report(results: list[Memory], floor: float) -> str:
    rows = [
        [
            "baseline: python + boto3 client after one GetRecords",
            "1",
            f"{floor:.0f}",
            "",
            "",
            "",
            "",
        ]
    ]
    for m in results:
        rows.append(
            [
                "kcl-daemon (children excluded)",
                str(m.shards),
                f"{m.median_mib:.0f}",
                f"{m.peak_mib:.0f}",
                f"{m.child_mib:.0f}",
                f"{m.cpu_share:.0%}",
                f"{m.cpu_ms_per_call:.1f}",
            ]
        )
    text = table(
        [
            "process",
            "shards",
            "RSS MiB (median)",
            "RSS MiB (peak)",
            "one child's RSS MiB",
            "daemon CPU (of one core)",
            "daemon CPU ms per GetRecords",
        ],
        rows,
        right={1, 2, 3, 4, 5, 6},
    )
    hundred = [m for m in results if m.shards == 100]
    if hundred:
        verdict = "met" if hundred[0].peak_mib <= TARGET_MIB else "NOT met"
        text += f"\n\nTarget <= {TARGET_MIB} MB at 100 shards: peak {hundred[0].peak_mib:.0f} MiB, {verdict}."
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description="daemon memory benchmark")
    parser.add_argument("--shards", default="1,16,100")
    args = parser.parse_args()
    moto = Moto()
    try:
        results, floor = run(moto.endpoint, tuple(int(n) for n in args.shards.split(",")))
    finally:
        moto.stop()
    print(report(results, floor))


if __name__ == "__main__":
    main()
