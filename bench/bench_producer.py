"""Benchmark: the KPL-compatible producer, against aws-kinesis-agg and a plain boto3 loop.

Two comparisons, each on the same records in the same run, printed as one markdown table:

* aggregation: aws-kinesis-agg's ``RecordAggregator`` (one aggregate for everything, not
  shard-aware; ``get_contents()`` on every completed record) against ours, shard-aware with a
  4-shard map, at two depths: aggregation alone (validated entry with its hash key, shard
  lookup, one ``Aggregator`` per shard, every aggregate encoded) and the producer's whole
  intake, ``Pipeline.admit`` (that plus the ordering link, the outstanding account, lanes,
  deadline and expiry timers), aggregates encoded as when sent. For context, two more rows: the whole pipeline without I/O (admit, PutRecords requests built,
  results applied) and ``KinesisProducer.add_user_record`` end to end with futures against the
  in-memory FakeKinesis. 100-byte records, random 16-character partition keys.
* end to end on a moto server (started here, one process): user records/s written by
  ``KinesisProducer`` (aggregation on, defaults otherwise) against a plain loop of boto3
  ``put_records`` calls of 500 records, each on a fresh stream of the same shard count.

Runs alternate between the contenders (``--runs`` times) so that load from other processes hits
both alike; the table shows the best run of each (on a shared machine the best run is the one
least disturbed). Like ``kcl-produce``, the script calls ``gc.freeze()`` once its imports are
done and its input records built, so the garbage collector stops re-walking boto3's tens of
thousands of objects and the benchmark's own input. Usage:
``.venv/bin/python bench/bench_producer.py [--records N] [--e2e-records N] [--shards N]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cpu_model  # noqa: E402

# aws_kinesis_agg.aggregator puts its folder on sys.path for its generated protobuf modules,
# so it goes first.
from aws_kinesis_agg.aggregator import RecordAggregator  # noqa: E402  # isort: skip

from producer.config import ProducerConfig  # noqa: E402
from producer.metrics import Metrics  # noqa: E402
from producer.pipeline import Pipeline  # noqa: E402
from producer.producer import KinesisProducer  # noqa: E402
from producer.records import new_entry  # noqa: E402
from producer.shard_map import fetch_shard_map  # noqa: E402
from producer.testing import FakeKinesis  # noqa: E402
from protocol.aggregation import Aggregator  # noqa: E402

Records = list[tuple[str, bytes]]


def make_records(count: int, size: int, seed: int = 1) -> Records:
    rng = random.Random(seed)
    return [(f"{rng.getrandbits(64):016x}", rng.randbytes(size)) for _ in range(count)]


# -- aggregation -----------------------------------------------------------------------------------


def run_aws_kinesis_agg(records: Records) -> float:
    started = time.perf_counter()
    aggregator = RecordAggregator()
    add = aggregator.add_user_record
    for key, data in records:
        full = add(key, data)
        if full is not None:
            full.get_contents()
    last = aggregator.clear_and_get()
    if last is not None:
        last.get_contents()
    return time.perf_counter() - started


def fresh_pipeline(shards: int, rate_limit: int = 150) -> tuple[Pipeline, FakeKinesis]:
    kinesis = FakeKinesis()
    kinesis.create_stream("s", shards)
    config = ProducerConfig(metrics_level="none", rate_limit=rate_limit)
    pipeline = Pipeline(config, Metrics())
    pipeline.map_loaded("s", fetch_shard_map(kinesis, "s"), 0.0)
    return pipeline, kinesis


def admit_all(pipeline: Pipeline, records: Records, first_seq: int) -> None:
    """What add_user_record does for each record, minus the future and the lock."""
    limit = pipeline.config.max_user_record_size
    admit = pipeline.admit
    seq = first_seq
    for key, data in records:
        seq += 1
        admit(new_entry("s", key, data, None, limit, None, 0.0, 0.1, 30.0, seq))
    pipeline.flush(0.0)


def drain(pipeline: Pipeline, kinesis: FakeKinesis, now: float) -> None:
    """Sends everything ready to the in-memory Kinesis and applies the results."""
    while True:
        plan = pipeline.poll(now, 10**6)
        if not plan.requests:
            return
        for request in plan.requests:
            items = [kr.request_entry() for kr in request.krs]
            response = kinesis.put_records(StreamName="s", Records=items)
            pipeline.complete(request, response, None, now, now)


def run_shard_aware_aggregation(records: Records, shards: int) -> float:
    """Aggregation alone, shard-aware, with the producer's own parts: a validated entry (hash
    key included), the shard map's lookup, one Aggregator per shard, every aggregate encoded."""
    kinesis = FakeKinesis()
    kinesis.create_stream("s", shards)
    shard_for = fetch_shard_map(kinesis, "s").shard_for
    limit = ProducerConfig().max_user_record_size
    aggregators: dict[str | None, Aggregator] = {}
    began = time.perf_counter()
    for key, data in records:
        entry = new_entry("s", key, data, None, limit, None, 0.0, 0.1, 30.0, 0)
        shard = shard_for(entry.hash_key)
        aggregator = aggregators.get(shard)
        if aggregator is None:
            aggregator = aggregators[shard] = Aggregator()
        if not aggregator.try_add(entry):  # type: ignore[arg-type]  # has UserRecord's fields
            aggregator.encode()
            aggregator = aggregators[shard] = Aggregator()
            aggregator.try_add(entry)  # type: ignore[arg-type]
    for aggregator in aggregators.values():
        aggregator.encode()
    return time.perf_counter() - began


def run_aggregation_stage(records: Records, shards: int, chunk: int = 20000) -> float:
    """Times Pipeline.admit, the closing flush and the encoding of every aggregate (which the
    producer does when it sends), chunk by chunk; the untimed drain in between keeps memory
    flat, as sending would."""
    pipeline, kinesis = fresh_pipeline(shards, rate_limit=10**9)
    timed = 0.0
    for start in range(0, len(records), chunk):
        began = time.perf_counter()
        admit_all(pipeline, records[start : start + chunk], start)
        for stream in pipeline.stream_names():
            for kr in pipeline.ready_records(stream):
                kr.data  # noqa: B018 - encodes the aggregate
        timed += time.perf_counter() - began
        drain(pipeline, kinesis, 0.0)
    return timed


def run_whole_pipeline(records: Records, shards: int, chunk: int = 20000) -> float:
    pipeline, kinesis = fresh_pipeline(shards, rate_limit=10**9)
    began = time.perf_counter()
    for start in range(0, len(records), chunk):
        admit_all(pipeline, records[start : start + chunk], start)
        drain(pipeline, kinesis, 0.0)
    return time.perf_counter() - began


def run_producer_in_memory(records: Records, shards: int) -> float:
    kinesis = FakeKinesis()
    kinesis.create_stream("s", shards)
    config = ProducerConfig(metrics_level="none", rate_limit=10**9)
    producer = KinesisProducer(config, client=kinesis)
    producer.add_user_record("s", "warm-up", b"x").result(30)  # the shard map is loaded
    began = time.perf_counter()
    add = producer.add_user_record
    for key, data in records:
        add("s", key, data)
    producer.flush_sync(600)
    elapsed = time.perf_counter() - began
    producer.close()
    return elapsed


# -- end to end on moto ----------------------------------------------------------------------------


def start_moto() -> Any:
    from tests import servers

    os.environ.update(servers.aws_env())
    return servers.start_moto()


def new_stream(endpoint: str, shards: int) -> str:
    from tests import servers
    from tests.support.streams import create_stream

    name = f"bench-{uuid.uuid4().hex[:10]}"
    create_stream(servers.client("kinesis", endpoint), name, shards)
    return name


def run_producer_e2e(endpoint: str, records: Records, shards: int) -> float:
    from tests import servers

    stream = new_stream(endpoint, shards)
    config = ProducerConfig(region=servers.REGION, kinesis_endpoint=endpoint, metrics_level="none")
    producer = KinesisProducer(config)
    began = time.perf_counter()
    futures = [producer.add_user_record(stream, key, data) for key, data in records]
    producer.flush_sync(600)
    elapsed = time.perf_counter() - began
    producer.close()
    failed = sum(1 for future in futures if future.exception() is not None)
    if failed:
        raise RuntimeError(f"{failed} records failed in the producer run")
    return elapsed


def run_boto3_loop(endpoint: str, records: Records, shards: int) -> float:
    from tests import servers

    stream = new_stream(endpoint, shards)
    client = servers.client("kinesis", endpoint)
    began = time.perf_counter()
    pending = records
    while pending:
        batch, pending = pending[:500], pending[500:]
        items = [{"Data": data, "PartitionKey": key} for key, data in batch]
        response = client.put_records(StreamName=stream, Records=items)
        if response.get("FailedRecordCount"):
            failed = [
                b for b, r in zip(batch, response["Records"], strict=True) if "ErrorCode" in r
            ]
            pending = failed + pending
    return time.perf_counter() - began


# -- driver ----------------------------------------------------------------------------------------


def best_rate(count: int, runs: list[float]) -> float:
    return count / min(runs)


def alternate(runs: int, contenders: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, run in contenders.items():
            times[name].append(run())
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="records for aggregation")
    parser.add_argument("--e2e-records", type=int, default=50_000, help="records end to end")
    parser.add_argument("--size", type=int, default=100, help="bytes of data per record")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args(argv)
    records = make_records(args.records, args.size)
    e2e_records = make_records(args.e2e_records, args.size, seed=2)
    # The inputs too: otherwise every full collection walks them, and a contender that
    # allocates more (ours keeps one entry per record in flight) pays for the size of the input.
    gc.freeze()
    agg = alternate(
        args.runs,
        {
            "aws-kinesis-agg": lambda: run_aws_kinesis_agg(records),
            "aggregation": lambda: run_shard_aware_aggregation(records, args.shards),
            "stage": lambda: run_aggregation_stage(records, args.shards),
            "pipeline": lambda: run_whole_pipeline(records, args.shards),
            "producer": lambda: run_producer_in_memory(records, args.shards),
        },
    )
    base = best_rate(len(records), agg["aws-kinesis-agg"])
    rows = [
        ("aggregation", "aws-kinesis-agg RecordAggregator (not shard-aware)", base, "1.00x"),
        (
            "aggregation",
            f"ours: shard-aware aggregation, {args.shards}-shard map",
            best_rate(len(records), agg["aggregation"]),
            f"{best_rate(len(records), agg['aggregation']) / base:.2f}x",
        ),
        (
            "aggregation",
            "ours: Pipeline.admit, the producer's intake (+ ordering, accounting, timers)",
            best_rate(len(records), agg["stage"]),
            f"{best_rate(len(records), agg['stage']) / base:.2f}x",
        ),
        (
            "context",
            "ours: whole pipeline without I/O (admit, requests, results)",
            best_rate(len(records), agg["pipeline"]),
            f"{best_rate(len(records), agg['pipeline']) / base:.2f}x",
        ),
        (
            "context",
            "ours: KinesisProducer with futures, in-memory Kinesis",
            best_rate(len(records), agg["producer"]),
            f"{best_rate(len(records), agg['producer']) / base:.2f}x",
        ),
    ]
    if not args.skip_e2e:
        with start_moto() as moto:
            e2e = alternate(
                args.runs,
                {
                    "boto3": lambda: run_boto3_loop(moto.endpoint, e2e_records, args.shards),
                    "producer": lambda: run_producer_e2e(moto.endpoint, e2e_records, args.shards),
                },
            )
        loop = best_rate(len(e2e_records), e2e["boto3"])
        ours = best_rate(len(e2e_records), e2e["producer"])
        rows.append(("end to end, moto", "boto3 put_records loop, 500 per call", loop, "1.00x"))
        rows.append(
            (
                "end to end, moto",
                "ours: KinesisProducer (aggregation on)",
                ours,
                f"{ours / loop:.1f}x",
            )
        )

    print(
        f"Producer benchmark: {args.records:,} records for aggregation, "
        f"{args.e2e_records:,} end to end, {args.size} B each, {args.shards} shards, "
        f"best of {args.runs} runs; Python {platform.python_version()}, {cpu_model()}, "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| what | how | user records/s | vs baseline |")
    print("|---|---|---:|---:|")
    for what, how, rate, ratio in rows:
        print(f"| {what} | {how} | {rate:,.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
