#!/usr/bin/env python3
"""Ignores record contents and checkpoints every N records.

For benchmarks of the daemon: the child costs as little as the SDK allows
(record data is never decoded), and checkpoints are rare enough not to
dominate. N comes from ``--checkpoint-every`` or the environment variable
``KCL_SAMPLE_CHECKPOINT_EVERY`` (default 10000). Shard end and shutdown
requests are checkpointed as the protocol requires.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

if importlib.util.find_spec("processors") is None:
    # Run by path from a checkout: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from processors.kclpy import kcl, messages  # noqa: E402
from processors.kclpy.v3 import processor  # noqa: E402
from processors.samples.checkpointing import checkpoint_with_retries  # noqa: E402

DEFAULT_CHECKPOINT_EVERY = 10_000


class NoopProcessor(processor.RecordProcessorBase):
    def __init__(self, checkpoint_every: int) -> None:
        self.checkpoint_every = checkpoint_every
        self.since_checkpoint = 0
        self.last: messages.Record | None = None

    def initialize(self, initialize_input: messages.InitializeInput) -> None:
        self.since_checkpoint = 0

    def process_records(self, process_records_input: messages.ProcessRecordsInput) -> None:
        records = process_records_input.records
        if not records:
            return
        self.last = records[-1]
        self.since_checkpoint += len(records)
        if self.since_checkpoint >= self.checkpoint_every:
            self._checkpoint_last(process_records_input.checkpointer)

    def lease_lost(self, lease_lost_input: messages.LeaseLostInput) -> None:
        pass

    def shard_ended(self, shard_ended_input: messages.ShardEndedInput) -> None:
        self._checkpoint(shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input: messages.ShutdownRequestedInput) -> None:
        if self.last is not None and self.since_checkpoint:
            self._checkpoint_last(shutdown_requested_input.checkpointer)

    def _checkpoint_last(self, checkpointer: kcl.Checkpointer) -> None:
        assert self.last is not None
        self._checkpoint(checkpointer, self.last.sequence_number, self.last.sub_sequence_number)
        self.since_checkpoint = 0

    def _checkpoint(
        self,
        checkpointer: kcl.Checkpointer,
        sequence_number: str | None = None,
        sub_sequence_number: int | None = None,
    ) -> None:
        try:
            checkpoint_with_retries(checkpointer, sequence_number, sub_sequence_number)
        except kcl.CheckpointError as error:
            print(f"checkpoint failed: {error.value}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=int(os.environ.get("KCL_SAMPLE_CHECKPOINT_EVERY", DEFAULT_CHECKPOINT_EVERY)),
        help="checkpoint after this many records (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.checkpoint_every < 1:
        parser.error("--checkpoint-every must be at least 1")
    kcl.KCLProcess(NoopProcessor(args.checkpoint_every)).run()


if __name__ == "__main__":
    main()
