#!/usr/bin/env python3
"""The tweet counter's record processor: one child of kcl-daemon per shard, via the Python SDK.

Run it as the daemon's ``executableName``::

    executableName = python3 -m processors.tweets.processor --tables tweets --allowed-lateness 300

Per batch, the seed's protocol: prepare a checkpoint at the batch's last record, apply the
batch (``applier.BatchApplier``: claims, counts, late, progress, each write idempotent), then
commit the prepared checkpoint. Exactness never depends on the checkpoint: a checkpoint that
fails only means the batch is delivered again, and a replay adds nothing twice. What does
matter is never to go on after a write that failed: the next batch would move the applied
positions past records that were never counted. So a failed write ends this process (exit 3)
and the daemon restarts the child from the last checkpoint.

Logs go to stderr, which the daemon logs with the shard id.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, Protocol

if importlib.util.find_spec("processors") is None:
    # Run by path from a checkout: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from daemon.errors import DependencyError  # noqa: E402
from processors.kclpy import kcl, messages  # noqa: E402
from processors.kclpy.v3 import processor  # noqa: E402
from processors.tweets.applier import BatchApplier, InRecord, Store  # noqa: E402
from processors.tweets.counting import position_of  # noqa: E402
from processors.tweets.faults import FaultPlan  # noqa: E402
from processors.tweets.results import ResultsStore, TableNames, make_dynamodb_client  # noqa: E402

__all__ = ["EXIT_WRITE_FAILED", "CounterStore", "TweetCounter", "main"]

#: Exit code after a results write failed (the daemon restarts the child from its checkpoint).
EXIT_WRITE_FAILED = 3
_RETRIABLE = frozenset(("ThrottlingException", "KinesisClientLibDependencyException"))
_LEASE_GONE = "ShutdownException"
_SUMMARY_EVERY_S = 10.0


class CounterStore(Store, Protocol):
    """What the processor needs of the results tables (``results.ResultsStore``)."""

    def ensure_tables(self, timeout_s: float = 60.0, log: Callable[[str], None] = ...) -> None: ...

    def progress(self, shard_id: str) -> dict[str, Any] | None: ...


class TweetCounter(processor.RecordProcessorBase):
    """Counts tweets per (language, minute of event time, shard) into the results tables."""

    def __init__(
        self,
        store: CounterStore,
        allowed_lateness_s: float,
        dedupe_window_s: int,
        claim_threads: int = 8,
        create_tables: bool = True,
        faults: FaultPlan | None = None,
        log_file: Any = None,
    ) -> None:
        self.store = store
        self.allowed_lateness_ms = int(allowed_lateness_s * 1000)
        self.dedupe_window_s = dedupe_window_s
        self.create_tables = create_tables
        self.faults = faults or FaultPlan(frozenset(), None)
        self.pool = ThreadPoolExecutor(claim_threads, thread_name_prefix="claims")
        self.log_file = log_file
        self.shard_id = "unknown"
        self.applier: BatchApplier | None = None
        self.batches = 0
        self.last_applied: tuple[str, int] | None = None  # (sequence, sub) of the last record
        self.skipped_a_batch = False
        self.totals: Counter[str] = Counter()
        self.last_summary = time.monotonic()

    # -- the v3 processor API --------------------------------------------------------------------

    def initialize(self, initialize_input: messages.InitializeInput) -> None:
        self.shard_id = initialize_input.shard_id
        self.faults.shard_id = self.shard_id
        try:
            if self.create_tables:
                self.store.ensure_tables(log=self.log)
            progress = self.store.progress(self.shard_id)
        except DependencyError as error:
            self._give_up(f"cannot read the results tables: {error}")
        self.applier = BatchApplier(
            self.store,
            self.shard_id,
            self.allowed_lateness_ms,
            self.dedupe_window_s,
            self.pool,
            self._stage,
        )
        through = progress.get("through") if progress else None
        self.applier.applied_through = through
        checkpoint = (initialize_input.sequence_number, initialize_input.sub_sequence_number)
        pending = initialize_input.pending_checkpoint_sequence_number
        self.log(
            f"starting at checkpoint {checkpoint[0]}/{checkpoint[1]}; results applied through "
            f"{_short(through)}; prepared checkpoints "
            f"{'on' if initialize_input.supports_prepared_checkpoints else 'off (classic)'}"
        )
        if pending is not None:
            # The seed's "prepared but not committed": the previous processor of this shard
            # prepared, then died (or lost the lease) before committing. Its batch may be
            # written fully, in part or not at all; the applied-through positions tell which
            # records to skip, so nothing is counted twice or lost.
            self.log(
                f"a previous processor prepared a checkpoint at {pending}/"
                f"{initialize_input.pending_checkpoint_sub_sequence_number} and did not commit "
                f"it: records up to {_short(through)} are skipped, the rest applied again"
            )

    def process_records(self, process_records_input: messages.ProcessRecordsInput) -> None:
        records = process_records_input.records
        if not records:
            return
        applier = self.applier
        assert applier is not None, "processRecords before initialize"
        if self.skipped_a_batch:
            # A later batch must never be applied past one that was not: that would move the
            # applied positions over records nobody counted.
            self.log(f"not writing {len(records)} records: an earlier batch was left unwritten")
            return
        self.batches += 1
        checkpointer = process_records_input.checkpointer
        last = records[-1]
        prepared = self._prepare(checkpointer, last.sequence_number, last.sub_sequence_number)
        if prepared is False:
            # The lease is gone: write nothing, the new owner processes this batch.
            self.skipped_a_batch = True
            return
        self._stage("prepared")
        batch = [
            InRecord(
                position_of(record.sequence_number, record.sub_sequence_number),
                record.binary_data,
                record.timestamp_millis,
            )
            for record in records
        ]
        try:
            result = applier.apply(batch)
        except DependencyError as error:
            self._give_up(f"a results write failed: {error}")
        except Exception as error:
            # Anything else is a bug; answering the action would let the daemon send the next
            # batch past records that were never counted, so stop here too.
            traceback.print_exc(file=self.log_file or sys.stderr)
            self._give_up(f"applying the batch failed: {type(error).__name__}: {error}")
        self.totals.update(result.outcomes)
        self.totals["already_applied"] += result.already_applied
        self.totals["refused_writes"] += result.refused_writes
        if result.already_applied or result.refused_writes:
            self.log(
                f"replay: {result.already_applied} of {result.delivered} records were already "
                f"applied; {result.refused_writes} writes found their item further on"
            )
        position = self.last_applied = (last.sequence_number, last.sub_sequence_number)
        if prepared is None:
            self._checkpoint(lambda: checkpointer.checkpoint(*position), "checkpoint")
        else:
            self._checkpoint(prepared.checkpoint, "commit the prepared checkpoint")
        self._summary()

    def lease_lost(self, lease_lost_input: messages.LeaseLostInput) -> None:
        self.log("lease lost; another worker continues from the last checkpoint")

    def shard_ended(self, shard_ended_input: messages.ShardEndedInput) -> None:
        self._summary(force=True)
        self._checkpoint(shard_ended_input.checkpointer.checkpoint, "checkpoint at shard end")

    def shutdown_requested(self, shutdown_requested_input: messages.ShutdownRequestedInput) -> None:
        self._summary(force=True)
        if self.last_applied is not None:
            checkpointer = shutdown_requested_input.checkpointer
            position = self.last_applied
            self._checkpoint(lambda: checkpointer.checkpoint(*position), "final checkpoint")

    # -- helpers ---------------------------------------------------------------------------------

    def _prepare(self, checkpointer: Any, sequence_number: str, sub: int) -> Any:
        """The prepared checkpoint; None when the daemon lacks the extension or the prepare
        could not be stored (the writes are idempotent either way); False if the lease is gone."""
        try:
            return _retrying(lambda: checkpointer.prepare_checkpoint(sequence_number, sub))
        except kcl.CheckpointError as error:
            if error.value == _LEASE_GONE:
                self.log("lease lost before the batch was written; leaving it to the next owner")
                return False
            if error.value != kcl.UNSUPPORTED:
                self.log(f"prepare_checkpoint failed ({error.value}); writing anyway")
            return None

    def _checkpoint(self, commit: Callable[[], None], what: str) -> None:
        try:
            _retrying(commit)
        except kcl.CheckpointError as error:
            # The batch is written; without a checkpoint it comes again and adds nothing.
            self.log(f"could not {what} ({error.value}); a replay will skip the applied records")

    def _stage(self, stage: str) -> None:
        self.faults.at(stage, self.batches)

    def _give_up(self, reason: str) -> NoReturn:
        self.log(f"{reason}; exiting so that the daemon restarts from the last checkpoint")
        raise SystemExit(EXIT_WRITE_FAILED)

    def _summary(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_summary < _SUMMARY_EVERY_S:
            return
        self.last_summary = now
        totals = self.totals
        self.log(
            f"{self.batches} batches: counted {totals['counted']}, late {totals['late']}, "
            f"duplicates {totals['duplicates']}, invalid {totals['invalid']}; skipped on replay "
            f"{totals['already_applied']}"
        )

    def log(self, text: str) -> None:
        out = self.log_file if self.log_file is not None else sys.stderr
        out.write(f"tweets [{self.shard_id}]: {text}\n")
        out.flush()


def _retrying(call: Callable[[], Any], attempts: int = 5) -> Any:
    """``call()``, retrying the checkpoint errors that are transient, with back-off."""
    delay = 0.1
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except kcl.CheckpointError as error:
            if error.value not in _RETRIABLE or attempt == attempts:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def _short(position: str | None) -> str:
    if position is None:
        return "nothing"
    sequence, _, sub = position.partition(":")
    return f"{sequence.lstrip('0') or '0'}/{int(sub)}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="processors.tweets.processor",
        description="Tweet counter record processor (run by kcl-daemon as its executableName)",
    )
    parser.add_argument("--tables", default="tweets", help="results table prefix")
    parser.add_argument("--dynamodb-endpoint", help="DynamoDB endpoint URL (local servers)")
    parser.add_argument("--region", help="AWS region (default: boto3's)")
    parser.add_argument(
        "--allowed-lateness",
        type=float,
        default=300.0,
        help="seconds after the end of a minute during which its tweets still count (300)",
    )
    parser.add_argument(
        "--dedupe-window",
        type=int,
        default=7 * 24 * 3600,
        help="seconds a tweet id's claim is kept (DynamoDB TTL; 7 days)",
    )
    parser.add_argument("--claim-threads", type=int, default=8, help="parallel claims (8)")
    parser.add_argument(
        "--no-create-tables", action="store_true", help="fail if the tables are missing"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    store = ResultsStore(
        make_dynamodb_client(args.dynamodb_endpoint, args.region, pool=args.claim_threads + 4),
        TableNames(args.tables),
    )
    counter = TweetCounter(
        store,
        args.allowed_lateness,
        args.dedupe_window,
        args.claim_threads,
        create_tables=not args.no_create_tables,
        faults=FaultPlan.from_environment(),
    )
    kcl.KCLProcess(counter).run()


if __name__ == "__main__":
    main()
