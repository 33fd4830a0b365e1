"""The tweet counter end to end on the embedded local backend: ``bin/demo``.

Starts a moto server on loopback (Kinesis + DynamoDB), creates a stream and the results tables,
starts ``kcl-daemon`` with the tweet counter as its processor (one child per shard), sends
realistic tweets in real time through the KPL-compatible producer (aggregation on; a few sent
twice, a few late, a few past the allowed lateness), shows progress while the daemon counts,
stops the daemon with SIGTERM, prints the seed's table and checks it against the ground truth
of what was sent. Nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from daemon.local_backend import LOCAL_CREDENTIALS, LocalBackend, start_moto
from processors.tweets.generator import (
    GeneratorSettings,
    SentTweet,
    ground_truth,
    plan_tweets,
    produce,
)
from processors.tweets.report import count_rows, render, summed
from processors.tweets.results import ResultsStore, TableNames

REPO = Path(__file__).resolve().parents[2]
STREAM = "tweets"
APPLICATION = "tweet-counter"


def _create_stream(backend: LocalBackend, shards: int) -> None:
    kinesis = backend.client("kinesis")
    kinesis.create_stream(StreamName=STREAM, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=STREAM, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )


def _write_properties(folder: Path, backend: LocalBackend, tables: str, lateness: float) -> Path:
    processor = " ".join(
        [
            shlex.quote(sys.executable),
            "-m processors.tweets.processor",
            f"--tables {tables}",
            f"--dynamodb-endpoint {backend.endpoint}",
            "--region us-east-1",
            f"--allowed-lateness {lateness:g}",
        ]
    )
    path = folder / "tweets.properties"
    path.write_text(
        "\n".join(
            [
                "# Written by the tweet-counter demo; against AWS, drop the endpoints.",
                f"executableName = {processor}",
                f"applicationName = {APPLICATION}",
                f"streamName = {STREAM}",
                "regionName = us-east-1",
                f"kinesisEndpoint = {backend.endpoint}",
                f"dynamoDBEndpoint = {backend.endpoint}",
                "initialPositionInStream = TRIM_HORIZON",
                "idleTimeBetweenReadsInMillis = 200",
                "# Small batches (of KPL aggregates) keep the progress display moving.",
                "maxRecords = 25",
                "shutdownGraceMillis = 5000",
                "metricsLevel = NONE",
                "",
            ]
        )
    )
    return path


class _Sender(threading.Thread):
    """Sends the plan in the background so that the main thread can show progress."""

    def __init__(self, backend: LocalBackend, settings: GeneratorSettings) -> None:
        super().__init__(name="tweet-sender", daemon=True)
        self.backend = backend
        self.start_ms = int(time.time() * 1000)
        self.plan = plan_tweets(settings, self.start_ms)
        self.count = 0
        self.sent: list[SentTweet] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from producer.config import ProducerConfig
        from producer.producer import KinesisProducer

        config = ProducerConfig(
            region="us-east-1", kinesis_endpoint=self.backend.endpoint, metrics_level="none"
        )
        producer = KinesisProducer(config)
        try:
            self.sent = produce(producer, STREAM, self.plan, self.start_ms, self._progress)
        except BaseException as error:  # reported by the main thread
            self.error = error
        finally:
            producer.close(timeout=30)

    def _progress(self, count: int) -> None:
        self.count = count


class _Progress:
    """A live line on a terminal; a line every few seconds elsewhere."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.last = 0.0

    def show(self, text: str, final: bool = False) -> None:
        if self.tty:
            print(f"\r{text}\033[K", end="\n" if final else "", flush=True)
        elif final or time.monotonic() - self.last >= 2:
            print(text, flush=True)
            self.last = time.monotonic()


def _applied(store: ResultsStore) -> dict[str, int]:
    totals = {"records": 0, "counted": 0, "late": 0, "duplicates": 0, "invalid": 0}
    for item in store.scan(store.names.progress):
        for key in totals:
            totals[key] += int(item.get(key, 0))
    return totals


def _stop(daemon: subprocess.Popen[bytes]) -> tuple[int, float]:
    started = time.monotonic()
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    try:
        code = daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        code = daemon.wait()
    return code, time.monotonic() - started


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    # The producer and the result reads in this process use the same local credentials.
    os.environ.update(LOCAL_CREDENTIALS)
    settings = GeneratorSettings(
        rate=args.rate,
        duration_s=args.duration,
        allowed_lateness_s=args.allowed_lateness,
        seed=args.seed,
        start_delay_s=1.0,
    )
    print("starting a local Kinesis + DynamoDB (moto) on loopback ...", flush=True)
    with start_moto() as backend, tempfile.TemporaryDirectory(prefix="kcl-tweets-") as tmp:
        folder = Path(tmp)
        _create_stream(backend, args.shards)
        store = ResultsStore(backend.client("dynamodb"), TableNames("tweets"))
        store.ensure_tables()
        properties = _write_properties(folder, backend, "tweets", args.allowed_lateness)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        log_path = folder / "daemon.log"
        print(
            f"stream {STREAM!r} ({args.shards} shards), results tables tweets-*; starting "
            f"kcl-daemon and sending ~{int(args.rate * args.duration)} tweets over "
            f"{args.duration:g} s ...",
            flush=True,
        )
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "--properties", str(properties)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                outcome = _watch(daemon, backend, store, settings, log_path, args.timeout)
            finally:
                code, stop_seconds = _stop(daemon)
        if outcome is None:
            return 1
        sent = outcome
        print(f"kcl-daemon stopped with exit code {code}, {stop_seconds:.1f} s after SIGTERM\n")
        print(render(store, per_shard=args.per_shard, late=args.late, progress=True))
        return _check(store, sent, args, code, time.monotonic() - began)


def _watch(
    daemon: subprocess.Popen[bytes],
    backend: LocalBackend,
    store: ResultsStore,
    settings: GeneratorSettings,
    log_path: Path,
    timeout_s: float,
) -> list[SentTweet] | None:
    """Sends the tweets and shows progress until every record sent is applied."""
    sender = _Sender(backend, settings)
    sender.start()
    progress = _Progress()
    started = time.monotonic()
    total = len(sender.plan)
    applied = _applied(store)
    while time.monotonic() - started < timeout_s:
        if daemon.poll() is not None:
            print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
            print("kcl-daemon exited early; its log is above", file=sys.stderr)
            return None
        if sender.error is not None:
            print(f"sending tweets failed: {sender.error}", file=sys.stderr)
            return None
        applied = _applied(store)
        progress.show(
            f"{time.monotonic() - started:5.1f} s  sent {sender.count}/{total} tweets  "
            f"applied {applied['records']}: counted {applied['counted']}, "
            f"late {applied['late']}, duplicates {applied['duplicates']}"
        )
        if sender.sent is not None and _finished(applied, sender.sent, settings):
            progress.show(
                f"all {applied['records']} records applied in {time.monotonic() - started:.1f} s",
                final=True,
            )
            return sender.sent
        time.sleep(0.3)
    progress.show(f"timed out after {timeout_s:g} s: {applied['records']}/{total}", final=True)
    print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
    return None


def _finished(applied: dict[str, int], sent: list[SentTweet], settings: GeneratorSettings) -> bool:
    """Every record sent is applied and every distinct tweet counted (or late). The stream can
    hold more records than were sent (a retried request that had in fact succeeded), so the
    distinct tweets, not the records, say when the run is over."""
    truth = ground_truth(sent, settings.allowed_lateness_s)
    return (
        applied["records"] >= truth.records and applied["counted"] + applied["late"] >= truth.unique
    )


def _check(
    store: ResultsStore, sent: list[SentTweet], args: argparse.Namespace, code: int, took: float
) -> int:
    truth = ground_truth(sent, args.allowed_lateness)
    counts = summed(count_rows(store.scan(store.names.counts)))
    late = summed(count_rows(store.scan(store.names.late)))
    exact = counts == truth.counts and late == truth.late
    verdict = "equals" if exact else "DIFFERS FROM"
    print(
        f"\nthe table {verdict} the ground truth of what was sent: {truth.records} records, "
        f"{truth.unique} distinct tweets ({truth.duplicates} sent twice), "
        f"{sum(truth.late.values())} past the allowed lateness of {args.allowed_lateness:g} s"
    )
    print(f"demo finished in {took:.1f} s")
    return 0 if exact and code == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/demo", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=160.0, help="tweets per second (160)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of tweets (15)")
    parser.add_argument("--shards", type=int, default=4, help="shards of the stream (4)")
    parser.add_argument(
        "--allowed-lateness", type=float, default=60.0, help="seconds (60 in the demo)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-shard", action="store_true", help="print one row per shard")
    parser.add_argument("--late", action="store_true", help="also print the late table")
    parser.add_argument("--timeout", type=float, default=90.0, help="give up after (90 s)")
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
