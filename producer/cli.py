"""``kcl-produce``: write lines or JSON records from stdin or a file to a Kinesis stream.

Owns the command line (options, a KPL ``.properties`` file, input formats), the progress display
(one updating line on stderr when it is a terminal, otherwise a log line every
``--progress-interval`` seconds) and the closing summary: records, records/s, failures by error
code. Exit status: 0 when every record was written, 1 when some failed, 2 for a usage or
configuration problem (one line naming it and the fix, no traceback).

Input formats: ``lines`` sends each line (without its line break) as a record; ``json`` checks
that each line is one JSON document and sends it as it is, taking the partition key from
``--partition-key-field`` when given. Empty lines are skipped. Without a partition key option
every record gets a random one, which spreads records over all shards.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

import orjson

from daemon.errors import ConfigError
from producer.clients import error_code_and_message, make_kinesis_client
from producer.config import ProducerConfig
from producer.producer import KinesisProducer
from producer.results import UserRecordFailed, UserRecordResult
from producer.shard_map import fetch_shard_map

__all__ = ["main", "parse_args"]

INVALID_INPUT = "InvalidInput"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kcl-produce",
        description="Write lines or JSON records to a Kinesis stream through a KPL-compatible "
        "producer (aggregation, batching, retries).",
    )
    parser.add_argument("--stream", required=True, help="stream name")
    parser.add_argument("--input", default="-", help="file to read (default: stdin)")
    parser.add_argument("--format", choices=("lines", "json"), default="lines")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--partition-key", help="one partition key for every record (keeps order)")
    keys.add_argument("--partition-key-field", help="json: the field holding the partition key")
    parser.add_argument("--region", help="AWS region (default: boto3's configuration)")
    parser.add_argument("--endpoint-url", help="Kinesis endpoint, e.g. http://127.0.0.1:4567")
    parser.add_argument("--cloudwatch-endpoint-url", help="CloudWatch endpoint for metrics")
    parser.add_argument("--config", help="a KPL .properties file (KPL option names)")
    parser.add_argument("--no-aggregation", action="store_true", help="send records one by one")
    parser.add_argument("--record-max-buffered-time", type=int, metavar="MS")
    parser.add_argument("--record-ttl", type=int, metavar="MS")
    parser.add_argument("--max-connections", type=int)
    parser.add_argument("--rate-limit", type=int, metavar="PERCENT")
    parser.add_argument(
        "--metrics-level",
        choices=("none", "summary", "detailed"),
        default=None,
        help="upload metrics to CloudWatch (default: none, unless --config sets it)",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress log lines when stderr is not a terminal",
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> ProducerConfig:
    """The producer settings from a properties file plus the command-line options."""
    overrides: dict[str, Any] = {}
    for name in ("region", "record_max_buffered_time", "record_ttl", "max_connections"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.rate_limit is not None:
        overrides["rate_limit"] = args.rate_limit
    if args.endpoint_url:
        overrides["kinesis_endpoint"] = args.endpoint_url
    if args.cloudwatch_endpoint_url:
        overrides["cloudwatch_endpoint"] = args.cloudwatch_endpoint_url
    if args.no_aggregation:
        overrides["aggregation_enabled"] = False
    if args.metrics_level is not None:
        overrides["metrics_level"] = args.metrics_level
    if args.config:
        try:
            text = Path(args.config).read_text()
        except OSError as error:
            raise ConfigError(f"cannot read --config {args.config}: {error.strerror}") from None
        properties = ProducerConfig.from_kpl_properties(text)
        if args.metrics_level is None and "MetricsLevel" not in text:
            overrides["metrics_level"] = "none"
        return properties.with_changes(**overrides)
    overrides.setdefault("metrics_level", "none")
    return ProducerConfig(**overrides)


def records(
    lines: Iterator[bytes], fmt: str, partition_key: str | None, key_field: str | None
) -> Iterator[tuple[str, bytes] | str]:
    """(partition key, data) per input record, or an error text for a line that is not one."""
    randbits = random.getrandbits
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            continue
        key = partition_key
        if fmt == "json":
            try:
                document = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                yield f"not JSON: {error}"
                continue
            if key_field is not None:
                value = document.get(key_field) if isinstance(document, dict) else None
                if value is None or value == "":
                    yield f"no {key_field!r} field"
                    continue
                key = value if isinstance(value, str) else orjson.dumps(value).decode()
                key = key[:256]
        yield (key or f"{randbits(64):016x}"), line


class Tally:
    """Counts results as futures resolve (from the producer's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.added = 0
        self.succeeded = 0
        self.failures: Counter[str] = Counter()

    def on_done(self, future: Future[UserRecordResult]) -> None:
        code = None
        try:
            future.result()
        except UserRecordFailed as failure:
            code = failure.result.error_code or "Unknown"
        with self._lock:
            if code is None:
                self.succeeded += 1
            else:
                self.failures[code] += 1

    def invalid(self) -> None:
        with self._lock:
            self.failures[INVALID_INPUT] += 1

    @property
    def failed(self) -> int:
        with self._lock:
            return sum(self.failures.values())


class Progress:
    """A background thread reporting progress on ``stream`` until stopped."""

    def __init__(self, tally: Tally, producer: KinesisProducer, stream: IO[str], interval: float):
        self.tally = tally
        self.producer = producer
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = 0.25 if self.tty else max(0.1, interval)
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kcl-produce-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def line(self) -> str:
        tally = self.tally
        elapsed = max(1e-9, time.monotonic() - self.started)
        done = tally.succeeded + tally.failed
        return (
            f"{tally.added:,} read  {tally.succeeded:,} written  {tally.failed:,} failed  "
            f"{self.producer.outstanding_records:,} pending  {done / elapsed:,.0f} records/s"
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.tty:
                self.stream.write("\r\x1b[K" + self.line())
            else:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                self.stream.write(f"{stamp} kcl-produce progress: {self.line()}\n")
            self.stream.flush()


def summary(tally: Tally, elapsed: float) -> str:
    total = tally.succeeded + tally.failed
    rate = total / elapsed if elapsed > 0 else 0.0
    text = (
        f"kcl-produce: {total:,} records, {tally.succeeded:,} written, {tally.failed:,} failed "
        f"in {elapsed:.2f} s ({rate:,.0f} records/s)"
    )
    if tally.failures:
        codes = ", ".join(f"{code}: {count:,}" for code, count in tally.failures.most_common())
        text += f"\nfailures by error code: {codes}"
    return text


def _open_input(path: str, stdin: IO[bytes]) -> IO[bytes]:
    if path == "-":
        return stdin
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by main
    except OSError as error:
        raise ConfigError(f"cannot read --input {path}: {error.strerror}") from None


def _check_stream(client: Any, stream: str, endpoint: str | None) -> None:
    """Fails fast, in one line, when the stream is missing or the endpoint unreachable."""
    try:
        fetch_shard_map(client, stream)
    except Exception as error:  # turned into one readable line
        code, message = error_code_and_message(error)
        where = endpoint or "the default AWS endpoint"
        if code == "ResourceNotFoundException":
            raise ConfigError(
                f"stream {stream!r} not found at {where}: create it, or check --region and "
                f"--endpoint-url"
            ) from None
        raise ConfigError(
            f"cannot list the shards of {stream!r} at {where}: {code}: {message}"
        ) from None


def main(
    argv: Sequence[str] | None = None,
    *,
    client: Any = None,
    stdin: IO[bytes] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Runs the command; returns the exit status. ``client`` replaces the Kinesis client."""
    args = parse_args(argv)
    err = stderr or sys.stderr
    try:
        config = build_config(args)
        kinesis = client if client is not None else make_kinesis_client(config)
        _check_stream(kinesis, args.stream, config.kinesis_endpoint)
        source = _open_input(args.input, stdin or sys.stdin.buffer)
    except ConfigError as error:
        err.write(f"kcl-produce: {error}\n")
        return 2
    # Everything imported so far (boto3 alone is tens of thousands of objects) lives as long as
    # the process: moving it out of the collector's reach keeps its full collections short.
    gc.freeze()
    producer = KinesisProducer(config, client=kinesis)
    tally = Tally()
    progress = Progress(tally, producer, err, args.progress_interval)
    progress.start()
    started = time.monotonic()
    try:
        for item in records(source, args.format, args.partition_key, args.partition_key_field):
            if isinstance(item, str):
                tally.invalid()
                continue
            key, data = item
            future = producer.add_user_record(args.stream, key, data)
            tally.added += 1
            future.add_done_callback(tally.on_done)
    except KeyboardInterrupt:
        err.write("kcl-produce: interrupted; sending what was read\n")
    finally:
        producer.close()
        progress.stop()
        if source is not (stdin or sys.stdin.buffer):
            source.close()
    err.write(summary(tally, time.monotonic() - started) + "\n")
    err.flush()
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
