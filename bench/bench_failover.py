"""Benchmark: failover, hand-off, convergence and lease-table cost of many workers.

Against the official KCL 2.x as baseline (its figures are from its lease code: renew every
failoverTimeMillis/3, scan every 2 x failoverTimeMillis, a dead worker's lease taken after two
scans failover apart, so up to about 3 x failover; every rebalance is a steal, which replays
what the victim processed since its last checkpoint).

Measured here, with real kcl-daemon processes on a local moto server and the sample record
logger as processor (it checkpoints after every batch), while a writer keeps records flowing:

* failover: kill -9 of a worker; time until each of its shards has a record processed by the
  survivor (its own output file), the worst shard per kill; and the records re-delivered (seen
  by both workers) per failover;
* re-delivery per move when a worker joins: its first lease is stolen (it is invisible while it
  holds nothing), the rest come by graceful hand-off;
* convergence of 3 workers x 12 shards, starting together and joining a worker that holds all;
* DynamoDB calls per lease per minute in steady state: counted by the lease store of three
  in-process coordinators on moto (idle shards: renewals and scans only), and by a simulation
  of ten minutes on a fake clock.

Usage: ``.venv/bin/python bench/bench_failover.py [--quick]`` (about 6 minutes; --quick: 2).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon import logs  # noqa: E402
from daemon.lease_coordinator import LeaseCoordinator  # noqa: E402
from daemon.leases.model import Lease  # noqa: E402
from daemon.leases.store import LeaseStore  # noqa: E402
from daemon.sequence import ExtendedSequenceNumber  # noqa: E402
from tests import servers  # noqa: E402
from tests.support.daemon_runner import (  # noqa: E402
    DaemonRun,
    aws_client,
    create_stream,
    lease_items,
    put_records,
    python_processor,
    read_processed,
)
from tests.unit.test_lease_coordinator import Cluster  # noqa: E402

RECORD_LOGGER = python_processor("processors.samples.record_logger")


class Writer(threading.Thread):
    """Keeps about ``rate`` records a second flowing into the stream."""

    def __init__(self, endpoint: str, stream: str, rate: int = 200) -> None:
        super().__init__(daemon=True)
        self.kinesis = aws_client("kinesis", endpoint)
        self.stream = stream
        self.rate = rate
        self.count = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.1):
            batch = [
                (f"k-{n % 97}", f"r-{n}".encode())
                for n in range(self.count, self.count + self.rate // 10)
            ]
            put_records(self.kinesis, self.stream, batch)
            self.count += len(batch)


class Setup:
    """A stream and the workers of one application, each with its own output file and log."""

    def __init__(self, root: Path, endpoint: str, shards: int, failover_ms: int) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.root = root / suffix
        self.endpoint = endpoint
        self.stream, self.application = f"bench-{suffix}", f"bench-app-{suffix}"
        self.failover_ms = failover_ms
        self.dynamodb = aws_client("dynamodb", endpoint)
        self.shards = create_stream(aws_client("kinesis", endpoint), self.stream, shards)
        self.workers: dict[str, DaemonRun] = {}

    def start(self, name: str) -> DaemonRun:
        folder = self.root / name
        folder.mkdir(parents=True)
        run = DaemonRun(
            folder,
            self.endpoint,
            self.stream,
            self.application,
            RECORD_LOGGER,
            name=name,
            extra={"failoverTimeMillis": self.failover_ms, "metricsLevel": "NONE"},
        ).start()
        self.workers[name] = run
        return run

    def owners(self) -> Counter[str | None]:
        try:
            items = lease_items(self.dynamodb, self.application)
        except ClientError:  # the first worker has not created the table yet
            return Counter()
        return Counter(item.get("leaseOwner", {}).get("S") for item in items.values())

    def shards_of(self, name: str) -> set[str]:
        items = lease_items(self.dynamodb, self.application)
        return {k for k, item in items.items() if item.get("leaseOwner", {}).get("S") == name}

    def wait_even(self, names: list[str], timeout: float = 120) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            owners = self.owners()
            counts = [owners[name] for name in names]
            if sum(counts) == len(self.shards) and max(counts) - min(counts) <= 1:
                return time.monotonic() - start
            time.sleep(0.05)
        raise TimeoutError(f"no even spread on {names}: {dict(self.owners())}")

    def stop(self) -> None:
        for run in self.workers.values():
            run.kill()


class Tail:
    """Counts a worker's processed records per shard, reading only what was appended."""

    def __init__(self, run: DaemonRun) -> None:
        self.path = run.output
        self.offset = 0
        self.counts: Counter[str] = Counter()

    def read(self) -> Counter[str]:
        if self.path.exists():
            with self.path.open("rb") as output:
                output.seek(self.offset)
                chunk = output.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self.offset += len(complete)
            for line in complete.splitlines():
                self.counts[line.split(b"\t", 1)[0].decode()] += 1
        return self.counts


def duplicates(first: DaemonRun, second: DaemonRun, shards: set[str], since: int = 0) -> int:
    """Records of ``shards`` processed by both workers (by ``second`` after byte ``since``)."""
    seen = {(r.shard_id, r.data) for r in read_processed(first.output) if r.shard_id in shards}
    with second.output.open("rb") as output:
        output.seek(since)
        lines = output.read().decode(errors="replace").splitlines()
    again = set()
    for line in lines:
        parts = line.split("\t", 4)
        if len(parts) == 5 and parts[0] in shards:
            again.add((parts[0], base64.b64decode(parts[4]).decode(errors="replace")))
    return len(seen & again)


def measure_failover(endpoint: str, root: Path, failover_ms: int, kills: int) -> dict[str, Any]:
    setup = Setup(root, endpoint, 4, failover_ms)
    writer = Writer(endpoint, setup.stream)
    writer.start()
    results: dict[str, list[float]] = defaultdict(list)
    survivor = setup.start("s")
    victim = setup.start("v0")
    try:
        setup.wait_even(["s", "v0"])
        for n in range(kills):
            time.sleep(failover_ms / 1000)  # steady state
            shards = setup.shards_of(victim.name)
            tail = Tail(survivor)
            before = Counter(tail.read())
            killed_at_offset = tail.offset
            killed = time.monotonic()
            victim.kill()
            pending = set(shards)
            worst = 0.0
            while pending:
                now = tail.read()
                for shard in [s for s in pending if now[s] > before[s]]:
                    pending.discard(shard)
                    worst = time.monotonic() - killed
                time.sleep(0.02)
            results["failover_s"].append(worst)
            time.sleep(1)  # let the survivor checkpoint past the replay
            results["redelivered_per_failover"].append(
                duplicates(victim, survivor, shards, since=killed_at_offset)
            )
            # A new worker joins: one steal (it holds nothing), then hand-offs.
            joiner = setup.start(f"v{n + 1}")
            setup.wait_even(["s", joiner.name])
            time.sleep(2)
            for event in joiner.find_events("lease taken"):
                moved = {event["shard_id"]}
                kind = "steal" if event["stolen"] else "hand-off"
                results[f"redelivered_per_{kind}"].append(duplicates(survivor, joiner, moved))
            victim = joiner
    finally:
        writer.halt.set()
        setup.stop()
    return results


def _since_last_start(runs: list[DaemonRun], moment: float) -> float:
    """Seconds from the latest "worker started" log line of ``runs`` to ``moment`` (epoch)."""
    started = [
        datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        for run in runs
        for event in run.find_events("worker started")
    ]
    return moment - max(started)


def measure_convergence(endpoint: str, root: Path, failover_ms: int) -> dict[str, float]:
    """Even spread of 3 x 12: from process start, and from the last worker's first scan."""
    together = Setup(root, endpoint, 12, failover_ms)
    names = ["a", "b", "c"]
    try:
        started = time.monotonic()
        runs = [together.start(name) for name in names]
        together.wait_even(names)
        result = {"together": time.monotonic() - started}
        result["together_running"] = _since_last_start(runs, time.time())
    finally:
        together.stop()
    joining = Setup(root, endpoint, 12, failover_ms)
    try:
        joining.start("a")
        joining.wait_even(["a"])
        joined = time.monotonic()
        runs = [joining.start("b"), joining.start("c")]
        joining.wait_even(names)
        result["join"] = time.monotonic() - joined
        result["join_running"] = _since_last_start(runs, time.time())
    finally:
        joining.stop()
    return result


async def count_real_calls(endpoint: str, failover_s: float, seconds: float) -> float:
    """DynamoDB calls per lease per minute of 3 coordinators x 12 leases, steady state."""
    dynamodb = servers.client("dynamodb", endpoint)
    table = f"calls-{uuid.uuid4().hex[:8]}"
    store = LeaseStore(dynamodb, table)
    store.ensure_table()
    for n in range(12):
        store.create_lease_if_absent(
            Lease(f"shard-{n:02d}", checkpoint=ExtendedSequenceNumber("TRIM_HORIZON"))
        )
    executor = ThreadPoolExecutor(8)
    stop = asyncio.Event()
    coordinators = [
        LeaseCoordinator(
            store,
            f"w{n}",
            failover_s=failover_s,
            max_leases_for_worker=None,
            max_leases_to_steal=1,
            executor=executor,
            on_taken=lambda lease: None,
            on_lost=lambda key, why: None,
        )
        for n in range(3)
    ]
    tasks = [asyncio.create_task(c.run(stop)) for c in coordinators]
    await asyncio.sleep(4 * failover_s)  # converge
    before = sum(s.count for s in store.call_stats().values())
    await asyncio.sleep(seconds)
    after = sum(s.count for s in store.call_stats().values())
    stop.set()
    await asyncio.gather(*tasks)
    executor.shutdown()
    return (after - before) / 12 / (seconds / 60)


def simulated_calls(failover_s: float, minutes: float = 10) -> tuple[float, float, float]:
    """(renewals, scans, all calls) per lease per minute: 3 workers x 12 leases, fake clock."""

    async def scenario() -> tuple[float, float, float]:
        cluster = Cluster(12)
        for n in range(3):
            cluster.add(f"w{n}")
        await cluster.run_until(cluster.clock.now + 5 * failover_s)
        before = Counter(cluster.table.calls)
        await cluster.run_until(cluster.clock.now + minutes * 60)
        calls = Counter(cluster.table.calls)
        calls.subtract(before)
        per = 12 * minutes
        return calls["renew"] / per, calls["list_leases"] / per, sum(calls.values()) / per

    # The simulation's FAILOVER is fixed at 10 s; calls per minute scale as 1 / failover.
    renew, scan, total = asyncio.run(scenario())
    scale = 10.0 / failover_s
    return renew * scale, scan * scale, total * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer kills, no 10 s failover")
    args = parser.parse_args()
    logs.configure("warning", "console")
    kills = {3000: 2 if args.quick else 4, 10000: 0 if args.quick else 2}
    print("3 workers x 12 leases, calls per lease per minute (simulated, fake clock):")
    print(f"{'failover':>9} {'renew':>7} {'scan':>6} {'total':>6}   official: renew + scan")
    for failover_s in (3.0, 10.0):
        renew, scan, total = simulated_calls(failover_s)
        official_renew, official_scan = 60 / (failover_s / 3), 3 * 60 / (2 * failover_s) / 12
        print(
            f"{failover_s:>8.0f}s {renew:>7.2f} {scan:>6.2f} {total:>6.2f}   "
            f"{official_renew:.2f} + {official_scan:.2f} = {official_renew + official_scan:.2f}"
        )
    with servers.start_moto() as moto, tempfile.TemporaryDirectory() as folder:
        real = asyncio.run(count_real_calls(moto.endpoint, 3.0, 30 if args.quick else 60))
        print(f"measured on moto, failover 3 s: {real:.2f} calls per lease per minute")
        root = Path(folder)
        for failover_ms, count in kills.items():
            if not count:
                continue
            results = measure_failover(moto.endpoint, root, failover_ms, count)
            failovers = results["failover_s"]
            print(
                f"\nfailover {failover_ms} ms, {count} kills: worst shard processing elsewhere "
                f"after {statistics.mean(failovers):.2f} s mean, {max(failovers):.2f} s max "
                f"= {max(failovers) / (failover_ms / 1000):.2f} x failover "
                f"(official: up to ~3 x)"
            )
            for kind in ("failover", "steal", "hand-off"):
                values = results.get(f"redelivered_per_{kind}", [])
                if values:
                    print(
                        f"  records re-delivered per {kind}: mean {statistics.mean(values):.1f},"
                        f" max {max(values)} ({len(values)} moves)"
                    )
        for failover_ms in (3000,) if args.quick else (3000, 10000):
            converge = measure_convergence(moto.endpoint, root, failover_ms)
            print(
                f"\n3 workers x 12 shards, failover {failover_ms} ms, even spread after"
                f" (from process start / from the last worker's first scan):\n"
                f"  starting together: {converge['together']:.1f} s /"
                f" {converge['together_running']:.1f} s\n"
                f"  two joining one that holds all: {converge['join']:.1f} s /"
                f" {converge['join_running']:.1f} s"
            )


if __name__ == "__main__":
    main()
