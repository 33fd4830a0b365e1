#!/usr/bin/env python3
"""Lease-table cost: DynamoDB calls per lease per minute in steady state.

One kcl-daemon holds every lease of an 8-shard stream (records flow as on a
caught-up stream, and the no-op children never checkpoint, so every lease
write is a renewal). Its DynamoDB calls go through the counting proxy of
``bench/fake_kinesis.py`` to a moto server; after start-up settles, the calls
of each operation are counted over a window and turned into calls a minute.

Baseline: the official client's schedule for the same failoverTimeMillis F
(shared/spec/lease-table.md): each lease renewed every F/3, and the table
scanned every 2F by each worker. A Scan reads every lease, so the reads a
minute are shown too (scans a minute x leases).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.fake_kinesis import FakeKinesisProcess  # noqa: E402
from bench.harness import DaemonBench, Moto, table  # noqa: E402


def measure(
    moto: str, shards: int, failover_ms: int, window_s: float, settle_s: float
) -> dict[str, float]:
    """DynamoDB calls a minute by operation."""
    with (
        FakeKinesisProcess(shards=shards, records=100, millis_behind=0, dynamodb=moto) as fake,
        DaemonBench(
            fake.endpoint, fake.endpoint, shards, checkpoint_every=0, name="leases",
            extra={"failoverTimeMillis": failover_ms, "idleTimeBetweenReadsInMillis": 1000},
        ) as daemon,
    ):  # fmt: skip
        daemon.wait_flowing(timeout=60)
        time.sleep(settle_s)
        before = fake.stats()["calls"]
        started = time.monotonic()
        time.sleep(window_s)
        daemon.check_alive()
        after = fake.stats()["calls"]
        elapsed = time.monotonic() - started
    return {
        name[len("DynamoDB.") :]: (after[name] - before.get(name, 0)) * 60 / elapsed
        for name in after
        if name.startswith("DynamoDB.") and after[name] > before.get(name, 0)
    }


def report(per_minute: dict[str, float], shards: int, failover_ms: int, window_s: float) -> str:
    f_s = failover_ms / 1000
    official_renewals = 60 / (f_s / 3)
    official_scans = 60 / (2 * f_s)
    updates = per_minute.get("UpdateItem", 0.0)
    scans = per_minute.get("Scan", 0.0)
    others = {k: v for k, v in per_minute.items() if k not in ("UpdateItem", "Scan")}
    total = sum(per_minute.values())
    official_total = official_renewals * shards + official_scans
    rows = [
        [
            "kcl-daemon",
            f"{updates / shards:.1f}",
            f"{scans:.1f}",
            f"{sum(others.values()) / shards:.2f}",
            f"{total / shards:.1f}",
        ],
        [
            "baseline: official schedule (renew F/3, scan 2F)",
            f"{official_renewals:.1f}",
            f"{official_scans:.1f}",
            "",
            f"{official_total / shards:.1f}",
        ],
    ]
    text = table(
        [
            "who",
            "renewals (UpdateItem) per lease per min",
            "Scan calls per min (each reads every lease)",
            "other calls per lease per min",
            "all calls per lease per min",
        ],
        rows,
    )
    other_text = ", ".join(f"{k} {v:.1f}/min" for k, v in sorted(others.items())) or "none"
    return (
        f"{shards} leases held by one worker, failoverTimeMillis {failover_ms}, no checkpoints"
        f" (a checkpoint is also a renewal and replaces one), counted over {window_s:g} s."
        f" Other calls: {other_text}.\n\n{text}"
    )


def run(
    moto: str, shards: int = 8, failover_ms: int = 10_000, window_s: float = 30.0
) -> tuple[dict[str, float], int, int, float]:
    return measure(moto, shards, failover_ms, window_s, settle_s=3.0), shards, failover_ms, window_s


def main() -> None:
    parser = argparse.ArgumentParser(description="lease-table cost benchmark")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--failover-ms", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    moto = Moto()
    try:
        result = run(moto.endpoint, args.shards, args.failover_ms, args.window)
    finally:
        moto.stop()
    print(report(*result))


if __name__ == "__main__":
    main()
