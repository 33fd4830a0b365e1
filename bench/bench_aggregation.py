"""Benchmark: KPL aggregation and deaggregation, ours against aws-kinesis-agg.

Both libraries get the same user records (100-byte payloads, unique
partition keys by default) and the same 50 KiB aggregate limit, and each is
driven the way a producer or consumer would use it:

* aggregate: ours ``Aggregator.try_add`` + ``outer_record()`` on every flush;
  theirs ``RecordAggregator.add_user_record`` + ``get_contents()`` on every
  completed record. Inputs are prebuilt (``UserRecord`` objects for us,
  ``(key, data)`` pairs for them).
* deaggregate: the same aggregate bytes; ours ``deaggregate`` per Kinesis
  record; theirs ``iter_deaggregate_records(..., data_format="Boto3")``, its
  most direct entry point (it always returns dicts with base64 data).

Each operation runs ``--runs`` times, ours and theirs alternating so that
load from other processes hits both alike; the table shows the medians.
Usage: ``.venv/bin/python bench/bench_aggregation.py [--records N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cpu_model  # noqa: E402

# aws_kinesis_agg.aggregator puts its folder on sys.path for its generated
# protobuf modules, so it goes first.
from aws_kinesis_agg.aggregator import RecordAggregator  # noqa: E402  # isort: skip
from aws_kinesis_agg.deaggregator import iter_deaggregate_records  # noqa: E402  # isort: skip

from protocol.aggregation import Aggregator, UserRecord, deaggregate  # noqa: E402


def make_records(count: int, data_size: int, distinct_keys: int, seed: int) -> list[UserRecord]:
    rng = random.Random(seed)
    return [
        UserRecord(f"user-{i % distinct_keys:08d}", rng.randbytes(data_size)) for i in range(count)
    ]


def ours_aggregate(records: list[UserRecord], max_size: int) -> list[tuple[str, bytes, str | None]]:
    aggregator = Aggregator(max_size=max_size)
    add = aggregator.try_add
    out = []
    for record in records:
        if not add(record):
            out.append(aggregator.outer_record())
            aggregator.clear()
            add(record)
    if aggregator.count:
        out.append(aggregator.outer_record())
    return out


def theirs_aggregate(pairs: list[tuple[str, bytes]], max_size: int) -> list[Any]:
    aggregator = RecordAggregator(max_size=max_size)
    add = aggregator.add_user_record
    out = []
    for key, data in pairs:
        complete = add(key, data)
        if complete is not None:
            out.append(complete.get_contents())
    last = aggregator.clear_and_get()
    if last is not None:
        out.append(last.get_contents())
    return out


def ours_deaggregate(blobs: list[bytes]) -> int:
    count = 0
    for blob in blobs:
        records = deaggregate(blob)
        count += 1 if records is None else len(records)
    return count


def theirs_deaggregate(kinesis_records: list[dict[str, Any]]) -> int:
    return sum(1 for _ in iter_deaggregate_records(kinesis_records, data_format="Boto3"))


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def rates(
    ours: Callable[[], object], theirs: Callable[[], object], count: int, runs: int
) -> tuple[float, float]:
    ours_times, theirs_times = [], []
    for _ in range(runs):
        ours_times.append(timed(ours))
        theirs_times.append(timed(theirs))
    return count / statistics.median(ours_times), count / statistics.median(theirs_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--data-size", type=int, default=100)
    parser.add_argument("--max-size", type=int, default=51200)
    parser.add_argument("--distinct-keys", type=int, default=1_000_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    records = make_records(args.records, args.data_size, args.distinct_keys, seed=7)
    pairs = [(r.partition_key, r.data) for r in records]

    ours_out = ours_aggregate(records, args.max_size)
    theirs_out = theirs_aggregate(pairs, args.max_size)
    blobs = [data for _, data, _ in ours_out]
    # Sanity: both sides agree on the content before anything is timed.
    decoded = [r for blob in blobs for r in deaggregate(blob) or ()]
    assert [(r.partition_key, r.data) for r in decoded] == pairs
    kinesis_records = [
        {
            "Data": blob,
            "SequenceNumber": str(i),
            "PartitionKey": "a",
            "ApproximateArrivalTimestamp": 0,
        }
        for i, blob in enumerate(blobs)
    ]
    assert theirs_deaggregate(kinesis_records) == len(records)

    aggregate = rates(
        lambda: ours_aggregate(records, args.max_size),
        lambda: theirs_aggregate(pairs, args.max_size),
        len(records),
        args.runs,
    )
    deaggregate_rates = rates(
        lambda: ours_deaggregate(blobs),
        lambda: theirs_deaggregate(kinesis_records),
        len(records),
        args.runs,
    )

    print(
        f"{len(records)} user records of {args.data_size} bytes, "
        f"aggregates of at most {args.max_size} bytes: "
        f"ours {len(records) / len(ours_out):.0f} records per aggregate, "
        f"aws-kinesis-agg {len(records) / len(theirs_out):.0f}; "
        f"median of {args.runs} runs"
    )
    print()
    print("| operation | ours rec/s | aws-kinesis-agg rec/s | ratio |")
    print("|---|---:|---:|---:|")
    for name, (ours_rate, theirs_rate) in (
        ("aggregate", aggregate),
        ("deaggregate", deaggregate_rates),
    ):
        print(
            f"| {name} | {ours_rate:,.0f} | {theirs_rate:,.0f} | {ours_rate / theirs_rate:.2f}x |"
        )
    print()
    load = os.getloadavg()
    print(
        f"machine: {platform.platform()}, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {cpu_model()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


if __name__ == "__main__":
    main()
