"""The embedded demo: the real kcl-daemon on a local backend, end to end.

Starts a moto server on loopback, creates a stream, writes sample records,
runs ``kcl-daemon`` with the sample record-logging processor (one child per
shard), shows progress until every record is processed, stops the daemon
with SIGTERM and prints what was processed and the checkpoints it left in
the lease table. Nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from daemon.local_backend import LOCAL_CREDENTIALS, LocalBackend, start_moto

REPO = Path(__file__).resolve().parent.parent


def _create_stream(backend: LocalBackend, name: str, shards: int) -> None:
    kinesis = backend.client("kinesis")
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )


def _put_sample_records(backend: LocalBackend, name: str, count: int) -> None:
    kinesis = backend.client("kinesis")
    for start in range(0, count, 500):
        batch = [
            {"Data": f"sample record {i}".encode(), "PartitionKey": f"user-{i % 97}"}
            for i in range(start, min(start + 500, count))
        ]
        result = kinesis.put_records(StreamName=name, Records=batch)
        if result.get("FailedRecordCount"):
            raise RuntimeError(f"{result['FailedRecordCount']} sample records were not written")


def _write_properties(folder: Path, backend: LocalBackend, stream: str) -> Path:
    path = folder / "demo.properties"
    path.write_text(
        "\n".join(
            [
                "# Written by the kcl-daemon demo; the same keys work against AWS",
                "# once kinesisEndpoint and dynamoDBEndpoint are removed.",
                f"executableName = {sys.executable} -m processors.samples.record_logger",
                "applicationName = kcl-daemon-demo",
                f"streamName = {stream}",
                "regionName = us-east-1",
                f"kinesisEndpoint = {backend.endpoint}",
                f"dynamoDBEndpoint = {backend.endpoint}",
                "initialPositionInStream = TRIM_HORIZON",
                "idleTimeBetweenReadsInMillis = 250",
                "failoverTimeMillis = 10000",
                "shutdownGraceMillis = 5000",
                "",
            ]
        )
    )
    return path


class _Progress:
    """A live counter on a terminal; a line every few seconds elsewhere."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stdout.isatty()
        self.last_line = 0.0

    def show(self, done: int, final: bool = False) -> None:
        text = f"processed {done}/{self.total} records"
        if self.tty:
            print(f"\r{text}", end="\n" if final else "", flush=True)
        elif final or time.monotonic() - self.last_line >= 2:
            print(text, flush=True)
            self.last_line = time.monotonic()


def _processed_lines(output: Path) -> list[list[str]]:
    if not output.exists():
        return []
    lines = output.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.split("\t") for line in lines if line.count("\t") >= 4]


def run(records: int, shards: int, timeout_s: float) -> int:
    stream = "kcl-demo"
    print("starting a local Kinesis + DynamoDB (moto) on loopback ...", flush=True)
    with start_moto() as backend, tempfile.TemporaryDirectory(prefix="kcl-demo-") as tmp:
        folder = Path(tmp)
        _create_stream(backend, stream, shards)
        _put_sample_records(backend, stream, records)
        print(f"wrote {records} records to stream {stream!r} ({shards} shards)", flush=True)
        properties = _write_properties(folder, backend, stream)
        output = folder / "processed.tsv"
        env = {
            **os.environ,
            **LOCAL_CREDENTIALS,
            "KCL_SAMPLE_OUTPUT": str(output),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        log_path = folder / "daemon.log"
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "--properties", str(properties)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            started = time.monotonic()
            done = 0
            progress = _Progress(records)
            while done < records and time.monotonic() - started < timeout_s:
                if daemon.poll() is not None:
                    print(log_path.read_text()[-3000:], file=sys.stderr)
                    print("kcl-daemon exited early; its log is above", file=sys.stderr)
                    return 1
                done = len(_processed_lines(output))
                progress.show(done)
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            progress.show(done, final=True)
            daemon.send_signal(signal.SIGTERM)
            stop_started = time.monotonic()
            code = daemon.wait(timeout=30)
            stop_seconds = time.monotonic() - stop_started
        rows = _processed_lines(output)
        per_shard = Counter(row[0] for row in rows)
        print(f"\n{'shard':<24}{'records':>8}")
        for shard_id in sorted(per_shard):
            print(f"{shard_id:<24}{per_shard[shard_id]:>8}")
        print(f"{'total':<24}{len(rows):>8}  in {elapsed:.1f} s")
        leases = backend.client("dynamodb").scan(TableName="kcl-daemon-demo", ConsistentRead=True)
        print(f"\n{'lease':<24}{'checkpoint':<24}owner")
        for item in sorted(leases["Items"], key=lambda i: i["leaseKey"]["S"]):
            owner = item.get("leaseOwner", {}).get("S", "-")
            print(
                f"{item['leaseKey']['S']:<24}{item.get('checkpoint', {}).get('S', '-'):<24}{owner}"
            )
        print(f"\nkcl-daemon stopped with exit code {code} {stop_seconds:.2f} s after SIGTERM")
        unique = len({(row[0], row[1], row[2]) for row in rows})
        if unique < records:
            print(f"only {unique} of {records} records were processed", file=sys.stderr)
            return 1
        return 0 if code == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kcl-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    return run(args.records, args.shards, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
