"""Helpers for the tweet counter's tests: an in-memory results store with DynamoDB's conditional
semantics (for the unit tests of replays), and for the integration tests the independent ground
truth, reading the real tables, and ``TweetRig`` (stream, tables, workers, producer).

The ground truth here is written apart from the counter's code on purpose: it reads the
generator's record of what was sent and derives the expected tables with its own arithmetic.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from processors.tweets.counting import Pending, Target
from processors.tweets.faults import FAULT_DIR_VARIABLE, FAULTS_VARIABLE
from processors.tweets.generator import GeneratorSettings, SentTweet, plan_tweets, produce
from processors.tweets.results import ResultsStore, TableNames
from producer.config import ProducerConfig
from producer.producer import KinesisProducer
from tests.support.daemon_runner import DaemonRun, aws_client, create_stream, python_processor
from tests.support.waiting import wait_until


class Crash(Exception):
    """Raised by MemoryStore at the write chosen to fail: the process "dies" there."""


@dataclass
class MemoryStore:
    """The results tables in memory, with the semantics of ``results.ResultsStore``.

    ``crash_after`` writes (claims and adds, successful or refused) the next write raises
    Crash before it happens; None never crashes.
    """

    items: dict[Target, dict[str, Any]] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)
    crash_after: int | None = None
    writes: int = 0

    def _tick(self) -> None:
        if self.crash_after is not None and self.writes >= self.crash_after:
            self.crash_after = None
            raise Crash(f"crashed before write {self.writes + 1}")
        self.writes += 1

    def claim(self, tweet_id: str, claimant: str, expires_s: int) -> str:
        self._tick()
        return self.claims.setdefault(tweet_id, claimant)

    def add_after(
        self, target: Target, todo: Pending, also_set: dict[str, int] | None = None
    ) -> bool:
        self._tick()
        item = self.items.get(target)
        if item is not None and item["through"] >= todo.first:
            return False
        item = self.items.setdefault(target, {})
        for name, amount in todo.sums.items():
            item[name] = item.get(name, 0) + amount
        item["through"] = todo.last
        item.update(also_set or {})
        return True

    def applied_through(self, target: Target) -> str | None:
        item = self.items.get(target)
        return None if item is None else str(item["through"])

    def ensure_tables(self, timeout_s: float = 60.0, log: Callable[[str], None] = print) -> None:
        pass

    def progress(self, shard_id: str) -> dict[str, Any] | None:
        item = self.items.get(Target("progress", shard_id))
        return None if item is None else dict(item)

    def table(self, name: str) -> Counter[tuple[str, str, str]]:
        """(language, minute, shard) -> count for the "counts" or "late" table."""
        out: Counter[tuple[str, str, str]] = Counter()
        for target, item in self.items.items():
            if target.table != name:
                continue
            for attribute, value in item.items():
                if attribute.startswith("n_"):
                    out[(attribute[2:], target.minute or "", target.shard)] += value
        return out


# -- the independent ground truth ----------------------------------------------------------------


def minute_text(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms // 60_000 * 60, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%MZ")


@dataclass
class Expected:
    counts: Counter[tuple[str, str]]
    late: Counter[tuple[str, str]]
    records: int
    distinct: int


def expected_tables(sent: Sequence[SentTweet], allowed_lateness_s: float) -> Expected:
    """What the counter must report for ``sent``: one count per distinct tweet id, in the late
    table when every copy reached Kinesis at least ``allowed_lateness_s`` after the end of its
    minute. Asserts that no tweet is near that boundary (the generator keeps them clear)."""
    by_id: dict[str, list[SentTweet]] = {}
    for entry in sent:
        assert entry.sequence_number is not None, f"tweet not written: {entry}"
        by_id.setdefault(entry.planned.tweet.tweet_id, []).append(entry)
    counts: Counter[tuple[str, str]] = Counter()
    late: Counter[tuple[str, str]] = Counter()
    slack_ms = 1000
    for copies in by_id.values():
        tweet = copies[0].planned.tweet
        minute_end = (tweet.created_ms // 60_000 + 1) * 60_000
        deadline = minute_end + int(allowed_lateness_s * 1000)
        first_sent = min(c.sent_ms for c in copies) - slack_ms
        last_acked = max(c.acked_ms or c.sent_ms for c in copies) + slack_ms
        assert first_sent >= deadline or last_acked < deadline, (
            f"tweet {tweet.tweet_id} reached Kinesis too close to its lateness deadline"
        )
        (late if first_sent >= deadline else counts)[
            (tweet.lang, minute_text(tweet.created_ms))
        ] += 1
    return Expected(counts, late, len(sent), len(by_id))


def summed(rows: Counter[tuple[str, str, str]]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for (lang, minute, _shard), count in rows.items():
        out[(lang, minute)] += count
    return out


# -- reading the real tables ---------------------------------------------------------------------


def scan_all(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = dynamodb.scan(**request)
        items.extend(page.get("Items", []))
        if not page.get("LastEvaluatedKey"):
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def table_counts(dynamodb: Any, table: str) -> Counter[tuple[str, str, str]]:
    """(language, minute, shard) -> count, read straight from a counts or late table."""
    out: Counter[tuple[str, str, str]] = Counter()
    for item in scan_all(dynamodb, table):
        for name, value in item.items():
            if name.startswith("n_"):
                out[(name[2:], item["minute"]["S"], item["shard"]["S"])] += int(value["N"])
    return out


def progress_items(dynamodb: Any, prefix: str) -> dict[str, dict[str, int]]:
    out = {}
    for item in scan_all(dynamodb, f"{prefix}-progress"):
        out[item["shard"]["S"]] = {
            name: int(value["N"]) for name, value in item.items() if "N" in value
        }
    return out


def progress_totals(dynamodb: Any, prefix: str) -> Counter[str]:
    """The progress items summed over shards (empty before the table exists)."""
    totals: Counter[str] = Counter()
    try:
        items = progress_items(dynamodb, prefix)
    except dynamodb.exceptions.ResourceNotFoundException:
        return totals
    for item in items.values():
        totals.update(item)
    return totals


def wait_counted(
    dynamodb: Any,
    prefix: str,
    expected: Expected,
    timeout: float,
    alive: Iterable[Any] = (),
    invalid: int = 0,
) -> Counter[str]:
    """Polls the progress table until every distinct tweet is counted (or late) and every record
    sent is applied; AssertionError on timeout or when a process in ``alive`` (a DaemonRun) has
    exited. The stream may hold more records than were sent (a producer that retried a request
    that had in fact succeeded): they are duplicates, so the distinct count is what ends a run."""
    totals: Counter[str] = Counter()

    def done() -> bool:
        for run in alive:
            if run.process is not None and run.process.poll() is not None:
                raise AssertionError(
                    f"{run.name} exited with {run.process.returncode}:\n{run.log_tail()}"
                )
        totals.clear()
        totals.update(progress_totals(dynamodb, prefix))
        return (
            totals["counted"] + totals["late"] >= expected.distinct
            and totals["records"] >= expected.records + invalid
        )

    wait_until(
        done,
        timeout,
        interval=0.2,
        message=lambda: f"progress {dict(totals)}; expected {expected.distinct} distinct tweets",
    )
    return totals


# -- a whole run: stream, results tables, workers, producer --------------------------------------


class TweetRig:
    """A stream, the results tables and kcl-daemon workers running the tweet counter.

    ``kinesis_endpoint`` and ``dynamodb_endpoint`` may be one server (moto) or two
    (kinesis-local + dynalite). The test process must have AWS credentials in its environment
    for the producer (``tests.servers.aws_env``).
    """

    def __init__(
        self,
        folder: Path,
        kinesis_endpoint: str,
        dynamodb_endpoint: str,
        allowed_lateness_s: float = 60.0,
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.folder = folder
        self.kinesis_endpoint = kinesis_endpoint
        self.dynamodb_endpoint = dynamodb_endpoint
        self.allowed_lateness_s = allowed_lateness_s
        self.stream = f"tweets-{suffix}"
        self.application = f"tweet-counter-{suffix}"
        self.prefix = f"tweets-{suffix}"
        self.kinesis = aws_client("kinesis", kinesis_endpoint)
        self.dynamodb = aws_client("dynamodb", dynamodb_endpoint)
        self.store = ResultsStore(self.dynamodb, TableNames(self.prefix))
        self.workers: list[DaemonRun] = []
        self.fault_dir = folder / "faults"
        self.fault_dir.mkdir(exist_ok=True)

    def create(self, shards: int) -> list[str]:
        shard_ids = create_stream(self.kinesis, self.stream, shards)
        self.store.ensure_tables()
        return shard_ids

    def executable(self) -> str:
        return (
            f"{python_processor('processors.tweets.processor')} --tables {self.prefix} "
            f"--dynamodb-endpoint {self.dynamodb_endpoint} --region us-east-1 "
            f"--allowed-lateness {self.allowed_lateness_s:g} --claim-threads 4"
        )

    def start(self, name: str, faults: str = "", **settings: Any) -> DaemonRun:
        env = {FAULTS_VARIABLE: faults, FAULT_DIR_VARIABLE: str(self.fault_dir)} if faults else {}
        run = DaemonRun(
            self.folder,
            self.kinesis_endpoint,
            self.stream,
            self.application,
            self.executable(),
            extra={"metricsLevel": "NONE", **settings},
            env=env,
            name=name,
            dynamodb_endpoint=self.dynamodb_endpoint,
        ).start()
        self.workers.append(run)
        return run

    def producer(self) -> Any:
        config = ProducerConfig(
            region="us-east-1",
            kinesis_endpoint=self.kinesis_endpoint,
            metrics_level="none",
            retry_backoff_min=20,
            retry_backoff_max=500,
        )
        return KinesisProducer(config)

    def produce(
        self, settings: GeneratorSettings, on_progress: Callable[[int], None] | None = None
    ) -> list[SentTweet]:
        """Send a generated plan in real time; returns what was sent."""
        start_ms = int(time.time() * 1000)
        producer = self.producer()
        try:
            plan = plan_tweets(settings, start_ms)
            return produce(producer, self.stream, plan, start_ms, on_progress)
        finally:
            producer.close(timeout=30)

    def resend(self, originals: Sequence[SentTweet]) -> list[SentTweet]:
        """Send these tweets again, byte for byte (a producer retrying them)."""
        copies = [replace(entry.planned, duplicate=True, offset_s=0.0) for entry in originals]
        start_ms = int(time.time() * 1000)
        producer = self.producer()
        try:
            return produce(producer, self.stream, copies, start_ms)
        finally:
            producer.close(timeout=30)

    def applied(self) -> int:
        """Records applied so far, over all shards."""
        return progress_totals(self.dynamodb, self.prefix)["records"]

    def wait_counted(
        self, sent: Sequence[SentTweet], invalid: int = 0, timeout: float = 120.0
    ) -> None:
        expected = expected_tables(sent, self.allowed_lateness_s)
        wait_counted(self.dynamodb, self.prefix, expected, timeout, self.running(), invalid)

    def running(self) -> list[DaemonRun]:
        return [run for run in self.workers if run.is_running()]

    def counts(self) -> Counter[tuple[str, str, str]]:
        return table_counts(self.dynamodb, f"{self.prefix}-counts")

    def late(self) -> Counter[tuple[str, str, str]]:
        return table_counts(self.dynamodb, f"{self.prefix}-late")

    def progress(self) -> dict[str, dict[str, int]]:
        return progress_items(self.dynamodb, self.prefix)

    def assert_exact(self, sent: Sequence[SentTweet], invalid: int = 0) -> Expected:
        """The tables equal the ground truth of ``sent``; the progress items account for every
        record (``invalid`` non-tweets included): each is counted, late, a duplicate or invalid."""
        expected = expected_tables(sent, self.allowed_lateness_s)
        assert summed(self.counts()) == expected.counts
        assert summed(self.late()) == expected.late
        totals = progress_totals(self.dynamodb, self.prefix)
        assert totals["counted"] == sum(expected.counts.values())
        assert totals["late"] == sum(expected.late.values())
        assert totals["invalid"] == invalid
        assert totals["records"] >= expected.records + invalid
        assert totals["duplicates"] == totals["records"] - expected.distinct - invalid
        return expected

    def stop(self) -> None:
        for run in self.workers:
            if run.is_running():
                assert run.stop() == 0, run.log_tail()

    def kill(self) -> None:
        for run in self.workers:
            run.kill()
