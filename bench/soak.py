#!/usr/bin/env python3
"""Soak test: several kcl-daemon workers against a local moto for a while, with random backend
faults and kills, then a report. Not part of the test suite (``bin/soak``).

    bin/soak                                  # 2 minutes, 3 workers, 6 shards, 100 records/s
    bin/soak --duration 1800 --workers 4 --shards 8 --rate 200 --seed 7

What runs: one moto server on loopback; a fault proxy (tests/faults/proxy.py) between the
workers and moto; a producer writing numbered records straight to moto at ``--rate``; the
workers (the real daemon, the sample record logger as child, failoverTimeMillis 3000); a
poller of the lease table. Every ``--fault-interval`` seconds (on average) one fault episode
starts: a burst of throttling, 5xx answers, resets, slow answers, lost responses or expired
iterators, or an outage of Kinesis or DynamoDB of up to 15 s. Every ``--kill-interval``
seconds one kill: a worker SIGKILLed (restarted 1-5 s later), a worker stopped with SIGTERM
(restarted), or one child processor SIGKILLed. At the end faults stop, the producer stops,
every record must arrive within ``--drain-timeout`` seconds, then the workers are stopped.

Report: records in, records processed (distinct), duplicates, losses (must be 0), shards
some worker delivered out of order (or delivered records never written), checkpoints that moved backwards (must be 0), unexpected worker exits, the
faults and kills, and memory per worker (RSS of the daemon process, first sample after a
warm-up against the last, for its longest-lived incarnation). Exit status 1 when anything
that must be 0 is not. ``--out`` keeps the logs and a JSON copy of the report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

from tests import servers  # noqa: E402
from tests.faults.monitor import CheckpointMonitor  # noqa: E402
from tests.faults.proxy import (  # noqa: E402
    DYNAMODB,
    KINESIS,
    Delay,
    FaultProxy,
    LoseResponse,
    Reset,
    Rule,
    expired_iterator,
    server_error,
    throttle,
)
from tests.support.daemon_runner import (  # noqa: E402
    DaemonRun,
    aws_client,
    create_stream,
    python_processor,
    read_processed,
)

READS = ("GetRecords", "GetShardIterator")
WARM_UP_S = 15.0


@dataclass
class Worker:
    """One worker slot: its current DaemonRun and the history of its incarnations."""

    name: str
    folder: Path
    run: DaemonRun | None = None
    started_at: float = 0.0
    log_offset: int = 0
    expect_exit: bool = False
    incarnations: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    rss: dict[int, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))

    def alive(self) -> bool:
        return self.run is not None and self.run.process is not None and self.run.is_running()

    def new_events(self) -> list[dict[str, Any]]:
        """This incarnation's log events."""
        if self.run is None or not self.run.log_path.exists():
            return []
        with open(self.run.log_path, "rb") as log:
            log.seek(self.log_offset)
            lines = log.read().splitlines()
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


class Soak:
    def __init__(self, args: argparse.Namespace, folder: Path, endpoint: str) -> None:
        self.args = args
        self.folder = folder
        self.moto = endpoint
        self.rng = random.Random(args.seed)
        self.stream = f"soak-{args.seed}-{int(time.time())}"
        self.application = f"{self.stream}-app"
        self.proxy = FaultProxy(endpoint, seed=args.seed)
        self.workers = [Worker(f"worker-{i}", folder / f"worker-{i}") for i in range(args.workers)]
        self.written: dict[str, list[str]] = defaultdict(list)
        self.records_in = 0
        self.kills: dict[str, int] = defaultdict(int)
        self.episodes: dict[str, int] = defaultdict(int)
        self.producer_errors = 0
        self._stop_producing = threading.Event()
        self._stop_sampling = threading.Event()
        # Restarts come from timers too: one worker slot changes under this lock.
        self._lock = threading.RLock()
        self._timers: list[threading.Timer] = []
        self.monitor = CheckpointMonitor(aws_client("dynamodb", endpoint), self.application, 0.25)

    # -- workers -------------------------------------------------------------------------

    def start_worker(self, worker: Worker) -> None:
        with self._lock:
            self._start_worker(worker)

    def _start_worker(self, worker: Worker) -> None:
        worker.folder.mkdir(parents=True, exist_ok=True)
        run = DaemonRun(
            worker.folder,
            self.proxy.endpoint,
            self.stream,
            self.application,
            python_processor("processors.samples.record_logger"),
            extra={"metricsLevel": "NONE", "failoverTimeMillis": self.args.failover_ms},
            name=worker.name,
        )
        worker.log_offset = run.log_path.stat().st_size if run.log_path.exists() else 0
        worker.run = run.start()
        worker.started_at = time.monotonic()
        worker.expect_exit = False
        worker.incarnations += 1

    def check_workers(self) -> None:
        """Restart a worker that died without being killed, and remember how it ended."""
        with self._lock:
            for worker in self.workers:
                self._check_worker(worker)

    def _check_worker(self, worker: Worker) -> None:
        if worker.run is None or worker.alive() or worker.expect_exit:
            return
        assert worker.run.process is not None
        started = any(e.get("event") == "worker started" for e in worker.new_events())
        phase = "after start-up" if started else "during start-up"
        tail = worker.run.log_tail(3).replace("\n", " | ")[-300:]
        worker.unexpected_exits.append(f"exit {worker.run.process.returncode} {phase}: {tail}")
        self._start_worker(worker)

    def _stop(self, worker: Worker) -> int:
        """SIGTERM and wait; a worker that ignores it is killed and the failure recorded."""
        assert worker.run is not None
        try:
            return worker.run.stop(timeout=60)
        except AssertionError:
            worker.unexpected_exits.append("ignored SIGTERM for 60 s after start-up (killed)")
            return -9

    # -- the producer --------------------------------------------------------------------

    def produce(self) -> None:
        kinesis = aws_client("kinesis", self.moto)
        per_tick = max(1, round(self.args.rate / 10))
        next_tick = time.monotonic()
        while not self._stop_producing.is_set():
            batch = [f"soak-{self.records_in + i}" for i in range(per_tick)]
            records = [{"PartitionKey": f"pk-{self.rng.randrange(10**6)}", "Data": d.encode()}
                       for d in batch]  # fmt: skip
            try:
                result = kinesis.put_records(StreamName=self.stream, Records=records)
            except (BotoCoreError, ClientError):  # moto busy: count it, write the next batch
                self.producer_errors += 1
            else:
                for data, entry in zip(batch, result["Records"], strict=True):
                    if "ShardId" in entry:
                        self.written[entry["ShardId"]].append(data)
                        self.records_in += 1
                    else:
                        self.producer_errors += 1
            next_tick += 0.1
            self._stop_producing.wait(max(0.0, next_tick - time.monotonic()))

    # -- memory --------------------------------------------------------------------------

    def sample_memory(self) -> None:
        while not self._stop_sampling.wait(2.0):
            now = time.monotonic()
            for worker in self.workers:
                if not worker.alive() or now - worker.started_at < WARM_UP_S:
                    continue
                assert worker.run is not None and worker.run.process is not None
                try:
                    rss = psutil.Process(worker.run.process.pid).memory_info().rss
                except psutil.Error:
                    continue
                worker.rss[worker.run.process.pid].append((now, rss))

    # -- chaos ---------------------------------------------------------------------------

    def fault_episode(self) -> None:
        rng = self.rng
        seconds = rng.uniform(3, 12)
        service = rng.choice([KINESIS, DYNAMODB])
        kind = rng.choice(["throttle", "5xx", "reset", "slow", "lost", "expired", "outage"])
        if kind == "outage":
            seconds = rng.uniform(2, 15)
            self.proxy.outage(service, seconds, blackhole=rng.random() < 0.3)
        else:
            operations: tuple[str, ...] = READS if service == KINESIS else ()
            fault: Any = {
                "throttle": throttle(service),
                "5xx": server_error(rng.choice([500, 503])),
                "reset": Reset(),
                "slow": Delay(rng.uniform(0.2, 1.5)),
                "lost": LoseResponse(),
                "expired": expired_iterator(),
            }[kind]
            if kind == "expired":
                service, operations = KINESIS, ("GetRecords",)
            if kind == "lost":
                operations = ("UpdateItem",) if service == DYNAMODB else ("GetRecords",)
            probability = rng.uniform(0.05, 0.4)
            self.proxy.add(Rule(fault, service=service, operations=operations,
                                probability=probability, duration_s=seconds))  # fmt: skip
        self.episodes[f"{kind} {service}"] += 1

    def kill(self) -> None:
        rng = self.rng
        alive = [worker for worker in self.workers if worker.alive()]
        if not alive:
            return
        worker = rng.choice(alive)
        assert worker.run is not None
        kind = rng.choice(["kill -9 worker", "SIGTERM worker", "kill -9 child"])
        if kind == "kill -9 child":
            assert worker.run.process is not None
            try:
                children = psutil.Process(worker.run.process.pid).children()
            except psutil.Error:
                return
            if not children:
                return
            os.kill(rng.choice(children).pid, signal.SIGKILL)
        else:
            with self._lock:
                worker.expect_exit = True
                if kind == "kill -9 worker":
                    worker.run.kill()
                else:
                    self._stop(worker)
            restart = threading.Timer(rng.uniform(1, 5), self.start_worker, (worker,))
            restart.daemon = True
            restart.start()
            self._timers.append(restart)
        self.kills[kind] += 1

    # -- the run -------------------------------------------------------------------------

    def delivered(self) -> dict[str, list[str]]:
        per_shard: dict[str, list[str]] = defaultdict(list)
        for worker in self.workers:
            for record in read_processed(worker.folder / "processed.tsv"):
                per_shard[record.shard_id].append(record.data)
        return per_shard

    def shards_out_of_order(self) -> set[str]:
        """Shards that some worker delivered out of order. Each worker's file is checked on its
        own: after a lease moves, the new owner replays from the last checkpoint while the old
        owner's file already holds later records, so the files' union has no single order."""
        index = {shard: {d: i for i, d in enumerate(data)} for shard, data in self.written.items()}
        broken = set()
        for worker in self.workers:
            per_shard: dict[str, list[str]] = defaultdict(list)
            for record in read_processed(worker.folder / "processed.tsv"):
                per_shard[record.shard_id].append(record.data)
            for shard, data in per_shard.items():
                positions = [index[shard].get(d, -1) for d in dict.fromkeys(data)]
                if positions != sorted(positions) or -1 in positions:
                    broken.add(shard)
        return broken

    def missing(self) -> int:
        delivered = self.delivered()
        return sum(len(set(data) - set(delivered[s])) for s, data in self.written.items())

    def run(self) -> dict[str, Any]:
        args = self.args
        create_stream(aws_client("kinesis", self.moto), self.stream, args.shards)
        self.proxy.start()
        self.monitor.start()
        for worker in self.workers:
            self.start_worker(worker)
        threads = [
            threading.Thread(target=self.produce, name="producer", daemon=True),
            threading.Thread(target=self.sample_memory, name="memory", daemon=True),
        ]
        for thread in threads:
            thread.start()
        began = time.monotonic()
        deadline = began + args.duration
        next_fault = began + self.rng.expovariate(1 / args.fault_interval)
        next_kill = began + WARM_UP_S + self.rng.expovariate(1 / args.kill_interval)
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_fault:
                self.fault_episode()
                next_fault = now + self.rng.expovariate(1 / args.fault_interval)
            if now >= next_kill:
                self.kill()
                next_kill = now + self.rng.expovariate(1 / args.kill_interval)
            self.check_workers()
            progress(now - began, args.duration, self)
            time.sleep(0.5)
        # Drain: no faults, no new records, every worker up.
        self.proxy.clear()
        self._stop_producing.set()
        threads[0].join(timeout=10)
        drain_started = time.monotonic()
        while self.missing() and time.monotonic() - drain_started < args.drain_timeout:
            self.check_workers()
            progress(time.monotonic() - began, args.duration, self)
            time.sleep(1)
        drain_s = time.monotonic() - drain_started
        self._stop_sampling.set()
        for timer in self._timers:
            timer.cancel()
            timer.join()
        self.check_workers()
        stop_codes = {}
        with self._lock:
            for worker in self.workers:
                worker.expect_exit = True
                assert worker.run is not None
                stop_codes[worker.name] = self._stop(worker)
        self.monitor.stop()
        self.proxy.stop()
        print(file=sys.stderr)
        return self.report(time.monotonic() - began, drain_s, stop_codes)

    def report(self, elapsed: float, drain_s: float, stop_codes: dict[str, int]) -> dict[str, Any]:
        delivered = self.delivered()
        total_deliveries = sum(len(data) for data in delivered.values())
        distinct = sum(len(set(data)) for data in delivered.values())
        lost = self.missing()
        out_of_order = sorted(self.shards_out_of_order())
        memory = {}
        for worker in self.workers:
            samples = max(worker.rss.values(), key=lambda s: s[-1][0] - s[0][0], default=[])
            if len(samples) >= 2:
                (t0, first), (t1, last) = samples[0], samples[-1]
                growth = (last - first) / 2**20
                memory[worker.name] = {
                    "first_mb": round(first / 2**20, 1),
                    "last_mb": round(last / 2**20, 1),
                    "growth_mb": round(growth, 1),
                    "over_s": round(t1 - t0),
                    "growth_mb_per_hour": round(growth * 3600 / max(t1 - t0, 1), 1),
                }
        unexpected = {w.name: w.unexpected_exits for w in self.workers if w.unexpected_exits}
        after_start = sum(
            1 for exits in unexpected.values() for text in exits if "after start-up" in text
        )
        return {
            "seconds": round(elapsed),
            "drain_s": round(drain_s, 1),
            "workers": self.args.workers,
            "shards": self.args.shards,
            "seed": self.args.seed,
            "records_in": self.records_in,
            "records_processed": distinct,
            "deliveries": total_deliveries,
            "duplicates": total_deliveries - distinct,
            "lost": lost,
            "shards_out_of_order": out_of_order,
            "checkpoints_backwards": [
                f"{shard}: {earlier} -> {later}"
                for shard, earlier, later in self.monitor.backwards()
            ],
            "lease_table_polls": self.monitor.polls,
            "unexpected_exits": unexpected,
            "unexpected_exits_after_start_up": after_start,
            "stop_exit_codes": stop_codes,
            "producer_errors": self.producer_errors,
            "fault_episodes": dict(self.episodes),
            "faults_injected": self.proxy.injected_summary(),
            "kills": dict(self.kills),
            "memory": memory,
            "ok": lost == 0
            and not out_of_order
            and not self.monitor.backwards()
            and after_start == 0
            and set(stop_codes.values()) <= {0},
        }


def progress(elapsed: float, duration: float, soak: Soak) -> None:
    alive = sum(worker.alive() for worker in soak.workers)
    faults = soak.proxy.injected()
    print(
        f"\r{elapsed:5.0f}/{duration:.0f} s  records in {soak.records_in:7d}  "
        f"workers up {alive}/{len(soak.workers)}  faults {faults:6d}  "
        f"kills {sum(soak.kills.values()):3d}",
        end="",
        file=sys.stderr,
        flush=True,
    )


def print_report(report: dict[str, Any]) -> None:
    rows = [
        ("run", f"{report['seconds']} s, {report['workers']} workers, {report['shards']} shards, "
                f"seed {report['seed']} (drain {report['drain_s']} s)"),
        ("records in", report["records_in"]),
        ("records processed", report["records_processed"]),
        ("duplicates", f"{report['duplicates']} (deliveries {report['deliveries']})"),
        ("lost (must be 0)", report["lost"]),
        ("shards out of order (must be none)", report["shards_out_of_order"] or "none"),
        ("checkpoints backwards (must be none)", report["checkpoints_backwards"] or "none"),
        ("unexpected exits after start-up (must be 0)", report["unexpected_exits_after_start_up"]),
        ("exit codes on the final SIGTERM", report["stop_exit_codes"]),
        ("kills", report["kills"]),
        ("fault episodes", report["fault_episodes"]),
        ("faults injected", sum(report["faults_injected"].values())),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for name, exits in report["unexpected_exits"].items():
        for text in exits:
            print(f"  {name}: {text}")
    print(f"\n{'worker':<10} {'first MB':>9} {'last MB':>8} {'growth MB':>10} {'over s':>7} "
          f"{'MB/hour':>8}")  # fmt: skip
    for name, memory in report["memory"].items():
        print(f"{name:<10} {memory['first_mb']:>9} {memory['last_mb']:>8} "
              f"{memory['growth_mb']:>10} {memory['over_s']:>7} {memory['growth_mb_per_hour']:>8}")  # fmt: skip
    print("\nOK" if report["ok"] else "\nFAILED: see the lines marked 'must be'")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120, help="seconds of faults")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--rate", type=float, default=100, help="records per second")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--fault-interval", type=float, default=6, help="mean seconds")
    parser.add_argument("--kill-interval", type=float, default=20, help="mean seconds")
    parser.add_argument("--failover-ms", type=int, default=3000)
    parser.add_argument("--drain-timeout", type=float, default=180)
    parser.add_argument("--out", type=Path, help="keep logs and report.json here")
    args = parser.parse_args(argv)
    folder = args.out or Path(tempfile.mkdtemp(prefix="kcl-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"soak: seed {args.seed}, logs in {folder}", file=sys.stderr)
    with servers.start_moto() as moto:
        report = Soak(args, folder, moto.endpoint).run()
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    print_report(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
