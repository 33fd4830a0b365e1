#!/usr/bin/env python3
"""Logs every record to stderr and checkpoints after every batch.

The smallest useful processor; the daemon forwards our stderr to its log
with the shard id, so the records show up there. Run it as
``python -m processors.samples.echo_processor`` or by path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("processors") is None:
    # Run by path from a checkout: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from processors.kclpy import kcl, messages  # noqa: E402
from processors.kclpy.v3 import processor  # noqa: E402
from processors.samples.checkpointing import checkpoint_with_retries  # noqa: E402

_PREVIEW_BYTES = 80


class EchoProcessor(processor.RecordProcessorBase):
    def __init__(self) -> None:
        self.shard_id = "?"

    def log(self, text: str) -> None:
        print(f"[{self.shard_id}] {text}", file=sys.stderr, flush=True)

    def initialize(self, initialize_input: messages.InitializeInput) -> None:
        self.shard_id = initialize_input.shard_id
        self.log(f"initialized at {initialize_input.sequence_number}")

    def process_records(self, process_records_input: messages.ProcessRecordsInput) -> None:
        for record in process_records_input.records:
            data = record.binary_data
            preview = data[:_PREVIEW_BYTES]
            self.log(
                f"record {record.sequence_number}/{record.sub_sequence_number} "
                f"key={record.partition_key!r} {len(data)} bytes: {preview!r}"
            )
        if process_records_input.records:
            self._checkpoint(process_records_input.checkpointer)

    def lease_lost(self, lease_lost_input: messages.LeaseLostInput) -> None:
        self.log("lease lost")

    def shard_ended(self, shard_ended_input: messages.ShardEndedInput) -> None:
        self.log("shard ended")
        self._checkpoint(shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input: messages.ShutdownRequestedInput) -> None:
        self.log("shutdown requested")
        self._checkpoint(shutdown_requested_input.checkpointer)

    def _checkpoint(self, checkpointer: kcl.Checkpointer) -> None:
        try:
            checkpoint_with_retries(checkpointer)
        except kcl.CheckpointError as error:
            self.log(f"checkpoint failed: {error.value}")


def main() -> None:
    kcl.KCLProcess(EchoProcessor()).run()


if __name__ == "__main__":
    main()
