#!/usr/bin/env python3
"""Appends every record to a file, then checkpoints: evidence for delivery tests.

The file is named by the environment variable ``KCL_SAMPLE_OUTPUT``; each
record becomes one line::

    shard_id <TAB> sequence_number <TAB> sub_sequence_number <TAB> partition_key <TAB> data

where ``data`` is the record's base64 text exactly as delivered (what
``record.data`` returns; decode it with ``base64.b64decode``), and tabs,
newlines, carriage returns and backslashes in the partition key are written
as ``\\t``, ``\\n``, ``\\r`` and ``\\\\``.

Order of operations per batch: write the batch, then checkpoint. The batch is
one ``write`` on a file opened with O_APPEND, so lines from processors of
different shards sharing the file never interleave, and a line in the file
means the record was delivered before its checkpoint was requested. A
record can appear twice (delivered again after a restart from an older
checkpoint), never be missing.
"""

from __future__ import annotations

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

OUTPUT_VARIABLE = "KCL_SAMPLE_OUTPUT"

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def format_record(shard_id: str, record: messages.Record) -> str:
    """One output line (with its newline) for a record."""
    key = record.partition_key.translate(_ESCAPES)
    return f"{shard_id}\t{record.sequence_number}\t{record.sub_sequence_number}\t{key}\t{record.data}\n"


def append_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class RecordLogger(processor.RecordProcessorBase):
    def __init__(self, output_path: str) -> None:
        self.fd = os.open(output_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.shard_id = "?"

    def initialize(self, initialize_input: messages.InitializeInput) -> None:
        self.shard_id = initialize_input.shard_id

    def process_records(self, process_records_input: messages.ProcessRecordsInput) -> None:
        records = process_records_input.records
        if not records:
            return
        shard_id = self.shard_id
        text = "".join([format_record(shard_id, record) for record in records])
        append_all(self.fd, text.encode("utf-8"))
        last = records[-1]
        self._checkpoint(
            process_records_input.checkpointer, last.sequence_number, last.sub_sequence_number
        )

    def lease_lost(self, lease_lost_input: messages.LeaseLostInput) -> None:
        pass

    def shard_ended(self, shard_ended_input: messages.ShardEndedInput) -> None:
        self._checkpoint(shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input: messages.ShutdownRequestedInput) -> None:
        self._checkpoint(shutdown_requested_input.checkpointer)

    def _checkpoint(
        self,
        checkpointer: kcl.Checkpointer,
        sequence_number: str | None = None,
        sub_sequence_number: int | None = None,
    ) -> None:
        try:
            checkpoint_with_retries(checkpointer, sequence_number, sub_sequence_number)
        except kcl.CheckpointError as error:
            print(
                f"[{self.shard_id}] checkpoint at {sequence_number} failed: {error.value}",
                file=sys.stderr,
                flush=True,
            )


def main() -> None:
    output_path = os.environ.get(OUTPUT_VARIABLE)
    if not output_path:
        sys.exit(f"record_logger: set {OUTPUT_VARIABLE} to the file the records go to")
    kcl.KCLProcess(RecordLogger(output_path)).run()


if __name__ == "__main__":
    main()
