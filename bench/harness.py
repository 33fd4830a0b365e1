"""What the daemon benchmarks share: the machine line, a moto server, a daemon run, counts.

A :class:`DaemonBench` writes a properties file and starts the real
``kcl-daemon`` (``python -m daemon.cli``) as its own process, with the
counting no-op child (``bench/counting_processor.py``, our SDK) for every
shard, Kinesis at a given endpoint (normally ``bench/fake_kinesis.py``) and
the lease table on a moto server (through the fake endpoint's counting proxy
when it has one). Progress is read from the children's count files; CPU time
and memory from the daemon's own process (psutil), children excluded.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.counting_processor import Count, read_count_file  # noqa: E402
from daemon.local_backend import LOCAL_CREDENTIALS, LocalBackend, start_moto  # noqa: E402

COUNTING_PROCESSOR = REPO / "bench" / "counting_processor.py"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    """One paragraph: CPU, cores, memory, OS, Python and library versions, load."""
    import boto3
    import botocore
    import orjson

    memory = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"boto3 {boto3.__version__}, botocore {botocore.__version__}, "
        f"orjson {orjson.__version__}; load average at start {load}"
    )


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    """A markdown table; columns in ``right`` are right-aligned."""
    right = right if right is not None else set(range(1, len(headers)))
    rule = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


class Moto:
    """One moto server for a whole benchmark run (DynamoDB for the lease tables)."""

    def __init__(self) -> None:
        self.backend: LocalBackend = start_moto()
        self.endpoint = self.backend.endpoint

    def stop(self) -> None:
        self.backend.stop()


@dataclass
class Snapshot:
    at: float
    records: int
    cpu_s: float
    rss: int


@dataclass
class DaemonBench:
    """One kcl-daemon process under measurement; ``start()`` then ``stop()``."""

    kinesis_endpoint: str
    dynamodb_endpoint: str
    shards: int
    extra: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 100_000
    name: str = "bench"
    application: str = ""
    worker_id: str = ""
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kcl-bench-")))
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    own_folder: bool = True
    # Leaving the context: SIGTERM and wait (True), or SIGKILL at once (False, the default:
    # a measurement is over, and a busy daemon's graceful stop takes seconds).
    graceful_stop: bool = False

    def __post_init__(self) -> None:
        self.application = self.application or f"{self.name}-{uuid.uuid4().hex[:8]}"
        self.worker_id = self.worker_id or self.name
        self.counts = self.folder / f"counts-{self.worker_id}"
        self.counts.mkdir(parents=True, exist_ok=True)

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.worker_id}.log"

    def settings(self) -> dict[str, Any]:
        child = f"{shlex.quote(sys.executable)} {shlex.quote(str(COUNTING_PROCESSOR))}"
        return {
            "executableName": child,
            "applicationName": self.application,
            "streamName": "bench-stream",
            "regionName": "us-east-1",
            "kinesisEndpoint": self.kinesis_endpoint,
            "dynamoDBEndpoint": self.dynamodb_endpoint,
            "initialPositionInStream": "TRIM_HORIZON",
            "idleTimeBetweenReadsInMillis": 200,
            "metricsLevel": "NONE",
            "workerId": self.worker_id,
            "shutdownGraceMillis": 2000,
            **self.extra,
        }

    def start(self) -> DaemonBench:
        properties = self.folder / f"{self.worker_id}.properties"
        properties.write_text(
            "".join(f"{key} = {value}\n" for key, value in self.settings().items()),
            encoding="iso-8859-1",
        )
        env = {
            **os.environ,
            **LOCAL_CREDENTIALS,
            "KCL_BENCH_COUNTS": str(self.counts),
            "KCL_BENCH_CHECKPOINT_EVERY": str(self.checkpoint_every),
            "PYTHONPATH": str(REPO),
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the daemon process owns it
        self.started_at = time.time()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "--properties", str(properties)]
            + ["--log-format", "json", "--log-level", "info"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._ps = psutil.Process(self.process.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(
                f"kcl-daemon exited with {self.process.returncode}:\n" + "\n".join(tail)
            )

    def shard_counts(self) -> dict[str, Count]:
        return {path.name: read_count_file(path) for path in self.counts.iterdir()}

    def records(self) -> int:
        return sum(count.records for count in self.shard_counts().values())

    def shards_flowing(self) -> int:
        return sum(1 for count in self.shard_counts().values() if count.records > 0)

    def wait_flowing(self, shards: int | None = None, timeout: float = 60.0) -> None:
        wanted = self.shards if shards is None else shards

        def ready() -> bool:
            self.check_alive()
            return self.shards_flowing() >= wanted

        wait_for(ready, timeout, f"records on {wanted} shards", interval=0.05)

    def cpu_seconds(self) -> float:
        times = self._ps.cpu_times()
        return float(times.user + times.system)

    def rss(self) -> int:
        return int(self._ps.memory_info().rss)

    def children(self) -> list[psutil.Process]:
        return list(self._ps.children())

    def snapshot(self) -> Snapshot:
        return Snapshot(time.monotonic(), self.records(), self.cpu_seconds(), self.rss())

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the daemon and every child it left."""
        if self.process is None:
            return
        try:
            children = self._ps.children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def cleanup(self) -> None:
        self.kill()
        if self.own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> DaemonBench:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.graceful_stop:
            self.stop()
        self.cleanup()
