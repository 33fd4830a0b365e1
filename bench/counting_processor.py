#!/usr/bin/env python3
"""A no-op record processor (our SDK) that reports how many records it has seen.

For the benchmarks: the child costs as little as the SDK allows (record data
is never decoded) and publishes its progress in a small file per shard that a
harness can read at any moment without disturbing anyone::

    <KCL_BENCH_COUNTS>/<shardId>   "<records> <first> <last> <pid> <since>\\n"

``first``: when the shard's first record came (kept across restarts); ``last``:
when the latest batch came; ``pid`` and ``since``: the child that wrote it and
when its own first batch came (all times epoch seconds).

The file is rewritten in place (one ``pwrite`` of a fixed-width line) after
every batch; a restarted child adds to the count its predecessor left.
It checkpoints its last record every ``KCL_BENCH_CHECKPOINT_EVERY`` records
(default 100,000; 0: only at shard end and shutdown).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if importlib.util.find_spec("processors") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors.kclpy import kcl, messages  # noqa: E402
from processors.kclpy.v3 import processor  # noqa: E402

LINE = "%20d %20.6f %20.6f %10d %20.6f\n"


@dataclass(frozen=True)
class Count:
    """One count file (see the module doc)."""

    records: int = 0
    first: float = 0.0
    last: float = 0.0
    pid: int = 0
    since: float = 0.0


def read_count_file(path: Path) -> Count:
    """The count file at ``path``; zeros if it is absent or being written."""
    try:
        fields = path.read_text().split()
    except FileNotFoundError:
        return Count()
    if len(fields) != 5:
        return Count()
    return Count(
        int(fields[0]), float(fields[1]), float(fields[2]), int(fields[3]), float(fields[4])
    )


class CountingProcessor(processor.RecordProcessorBase):
    def __init__(self, folder: Path, checkpoint_every: int) -> None:
        self.folder = folder
        self.checkpoint_every = checkpoint_every
        self.fd = -1
        self.count = 0
        self.first = 0.0
        self.since = 0.0
        self.since_checkpoint = 0
        self.last: messages.Record | None = None

    def initialize(self, initialize_input: messages.InitializeInput) -> None:
        path = self.folder / initialize_input.shard_id
        count = read_count_file(path)
        self.count, self.first = count.records, count.first
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)

    def process_records(self, process_records_input: messages.ProcessRecordsInput) -> None:
        records = process_records_input.records
        if not records:
            return
        now = time.time()
        if not self.first:
            self.first = now
        if not self.since:
            self.since = now
        self.count += len(records)
        line = LINE % (self.count, self.first, now, os.getpid(), self.since)
        os.pwrite(self.fd, line.encode(), 0)
        self.last = records[-1]
        self.since_checkpoint += len(records)
        if self.checkpoint_every and self.since_checkpoint >= self.checkpoint_every:
            self._checkpoint_last(process_records_input.checkpointer)

    def lease_lost(self, lease_lost_input: messages.LeaseLostInput) -> None:
        pass

    def shard_ended(self, shard_ended_input: messages.ShardEndedInput) -> None:
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input: messages.ShutdownRequestedInput) -> None:
        if self.last is not None and self.since_checkpoint:
            self._checkpoint_last(shutdown_requested_input.checkpointer)

    def _checkpoint_last(self, checkpointer: kcl.Checkpointer) -> None:
        assert self.last is not None
        try:
            checkpointer.checkpoint(self.last.sequence_number, self.last.sub_sequence_number)
        except kcl.CheckpointError as error:
            print(f"checkpoint failed: {error.value}", file=sys.stderr, flush=True)
        self.since_checkpoint = 0


def main() -> None:
    folder = Path(os.environ["KCL_BENCH_COUNTS"])
    every = int(os.environ.get("KCL_BENCH_CHECKPOINT_EVERY", "100000"))
    kcl.KCLProcess(CountingProcessor(folder, every)).run()


if __name__ == "__main__":
    main()
