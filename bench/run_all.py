#!/usr/bin/env python3
"""Run every benchmark, each against its named baseline, and write bench/RESULTS.md.

    .venv/bin/python bench/run_all.py            # about 10 minutes on 2 cores
    .venv/bin/python bench/run_all.py --only relay,memory --output /tmp/r.md

Sections (see each script's docstring for the method):

* relay      bench_relay.py       the whole daemon, fast GetRecords path vs boto3's parser
* sdk        bench_sdk_decode.py  our processor SDK vs amazon_kclpy
* aggregation bench_aggregation.py KPL aggregation/deaggregation vs aws-kinesis-agg
* producer   bench_producer.py    the producer vs aws-kinesis-agg and a put_records loop
* recovery   bench_recovery.py    start-up, child kill -9, failover
* memory     bench_memory.py      daemon RSS (and idle CPU) at 1, 16, 100 shards
* leases     bench_leases.py      DynamoDB calls per lease per minute

One moto server (started here) holds every lease table. Nothing here is part
of the test suite: figures depend on the machine and on whatever else runs on
it, which is why the load average is recorded at the start and at the end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import (  # noqa: E402
    bench_leases,
    bench_memory,
    bench_recovery,
    bench_relay,
)
from bench.harness import Moto, machine_description  # noqa: E402

SECTIONS = ("relay", "sdk", "aggregation", "producer", "recovery", "memory", "leases")
COMMAND = ".venv/bin/python bench/run_all.py"


def script(name: str, *args: str) -> str:
    """Run another benchmark script; its printed tables, as they are."""
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / name), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        return f"(failed with exit code {result.returncode})\n\n```\n{result.stderr[-3000:]}\n```"
    return result.stdout.strip()


def relay_section(moto: str, quick: bool) -> str:
    results = bench_relay.run(
        moto, [1, 4, 16], ["plain", "aggregated"], window_s=2.0 if quick else 3.0, windows=3
    )
    return (
        "A full kcl-daemon process relays records from the loopback endpoint of"
        " `bench/fake_kinesis.py` (prepared GetRecords responses at full speed: 10,000 plain"
        " 100-byte records a call, or 40 KPL aggregates of about 480 100-byte user records)"
        " to one no-op child per shard written with our SDK. Baseline: the same daemon with"
        " `fastGetRecords = false` (boto3's standard response parsing), run right after ours on"
        " the same endpoint. Medians of 3 windows once every shard flows. CPU is the daemon"
        " process's user + system time (children excluded); records/s per core = 1e6 / CPU"
        " seconds per million. One shard is capped by the service limit of 5 GetRecords calls"
        " a second, which the daemon honours; on 2 cores the daemon shares the CPU with its"
        " children and the endpoint, so wall-clock rates are below the per-core figures.\n\n"
        + bench_relay.report(results)
    )


def sdk_section(quick: bool) -> str:
    return (
        "Child-side decode: each SDK's real `KCLProcess.run()` loop over processRecords"
        " messages of 10,000 100-byte records (script: `bench/bench_sdk_decode.py`).\n\n"
        + script("bench_sdk_decode.py")
    )


def aggregation_section(quick: bool) -> str:
    return (
        "KPL aggregation and deaggregation against aws-kinesis-agg"
        " (script: `bench/bench_aggregation.py`).\n\n"
        + script("bench_aggregation.py", *(["--records", "50000"] if quick else []))
    )


def producer_section(quick: bool) -> str:
    return (
        "The producer against aws-kinesis-agg (aggregation) and a plain boto3 put_records loop"
        " (end to end on moto; script: `bench/bench_producer.py`, run here with fewer records"
        " than its defaults to keep the whole run short).\n\n"
        + script(
            "bench_producer.py",
            "--records",
            "50000" if quick else "100000",
            "--e2e-records",
            "3000" if quick else "5000",
            "--runs",
            "3",
        )
    )


def recovery_section(moto: str, quick: bool) -> str:
    rows = bench_recovery.run(moto, runs=3, failover_ms=5000)
    return (
        "Start-up, recovery from a child's kill -9 and failover after a worker's kill -9, timed"
        " from the action to the first batch a (new) child received (script:"
        " `bench/bench_recovery.py`, which names each baseline).\n\n" + bench_recovery.report(rows)
    )


def memory_section(moto: str, quick: bool) -> str:
    results, floor = bench_memory.run(moto, (1, 16, 100))
    return (
        "Resident memory of the daemon process (children excluded) with every shard leased"
        " and records flowing as on a caught-up stream (100 records a call, polled every"
        " second); script: `bench/bench_memory.py`. The relay table above shows RSS at full"
        " speed. The CPU columns are the daemon's while the RSS was sampled: on a caught-up"
        " stream it is almost all the fixed cost of each GetRecords call.\n\n"
        + bench_memory.report(results, floor)
    )


def leases_section(moto: str, quick: bool) -> str:
    result = bench_leases.run(moto, window_s=20.0 if quick else 30.0)
    return (
        "DynamoDB calls in steady state, counted by a proxy in front of moto (script:"
        " `bench/bench_leases.py`).\n\n" + bench_leases.report(*result)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--output", default=str(REPO / "bench" / "RESULTS.md"))
    parser.add_argument("--quick", action="store_true", help="shorter windows, fewer records")
    args = parser.parse_args()
    wanted = [name for name in args.only.split(",") if name]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")

    started = time.monotonic()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_description()
    moto = Moto()
    titles = {
        "relay": "Relay throughput: fast GetRecords path vs boto3's parser",
        "sdk": "SDK decode: processors.kclpy vs amazon_kclpy",
        "aggregation": "Aggregation and deaggregation: ours vs aws-kinesis-agg",
        "producer": "Producer: ours vs aws-kinesis-agg and a put_records loop",
        "recovery": "Start-up, child crash, failover",
        "memory": "Daemon memory (and CPU) on a caught-up stream",
        "leases": "Lease-table cost: ours vs the official schedule",
    }
    runners: dict[str, Callable[[], str]] = {
        "relay": lambda: relay_section(moto.endpoint, args.quick),
        "sdk": lambda: sdk_section(args.quick),
        "aggregation": lambda: aggregation_section(args.quick),
        "producer": lambda: producer_section(args.quick),
        "recovery": lambda: recovery_section(moto.endpoint, args.quick),
        "memory": lambda: memory_section(moto.endpoint, args.quick),
        "leases": lambda: leases_section(moto.endpoint, args.quick),
    }
    sections = []
    try:
        for name in SECTIONS:
            if name not in wanted:
                continue
            print(f"{name} ...", file=sys.stderr, flush=True)
            began = time.monotonic()
            try:
                body = runners[name]()
            except Exception as error:  # one broken benchmark must not lose the others
                traceback.print_exc()
                body = f"(this benchmark failed: {type(error).__name__}: {error})"
            took = time.monotonic() - began
            sections.append(f"## {titles[name]}\n\n{body}\n\n_({took:.0f} s)_\n")
    finally:
        moto.stop()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    total = time.monotonic() - started
    text = (
        "# Benchmark results\n\n"
        f"Written by `{COMMAND}` on {when} in {total / 60:.1f} minutes.\n\n"
        f"Machine: {machine}; load average at the end {load}.\n\n"
        "Every table compares ours with a named baseline measured in the same run (or, where"
        " no runnable baseline exists, computed from the official client's documented"
        " schedule, and marked so). Figures are medians of several runs or windows.\n\n"
        + "\n".join(sections)
    )
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"wrote {args.output} in {total:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
