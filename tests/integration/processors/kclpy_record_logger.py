#!/usr/bin/env python3
"""A record processor written for the official amazon_kclpy (v3 API), unchanged.

The integration tests run it under kcl-daemon with the unpacked official
library on PYTHONPATH, to show that processors written for amazon_kclpy work
as they are. It appends ``shard, sequence, sub-sequence, key, data`` lines to
$KCL_SAMPLE_OUTPUT and checkpoints after each batch, like the sample
processors in processors/samples/.
"""

import os
import sys

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor


class RecordLogger(processor.RecordProcessorBase):
    def __init__(self):
        self.shard_id = None
        self.output = os.environ.get("KCL_SAMPLE_OUTPUT")

    def initialize(self, initialize_input):
        self.shard_id = initialize_input.shard_id
        sys.stderr.write(f"kclpy logger initialized at {initialize_input.sequence_number}\n")

    def _checkpoint(self, checkpointer, sequence_number=None, sub_sequence_number=None):
        try:
            checkpointer.checkpoint(sequence_number, sub_sequence_number)
        except kcl.CheckpointError as error:
            # The official sample prints here, to stdout; the daemon must survive that.
            print(f"checkpoint failed: {error.value}")

    def process_records(self, process_records_input):
        records = process_records_input.records
        if not records:
            return
        lines = []
        for record in records:
            data = record.data  # base64, as the sample processors write it
            lines.append(
                f"{self.shard_id}\t{record.sequence_number}\t{record.sub_sequence_number}"
                f"\t{record.partition_key}\t{data}\n"
            )
        if self.output:
            with open(self.output, "a", encoding="utf-8") as out:
                out.write("".join(lines))
        last = records[-1]
        self._checkpoint(
            process_records_input.checkpointer, last.sequence_number, last.sub_sequence_number
        )

    def lease_lost(self, lease_lost_input):
        sys.stderr.write("kclpy logger: lease lost\n")

    def shard_ended(self, shard_ended_input):
        self._checkpoint(shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input):
        self._checkpoint(shutdown_requested_input.checkpointer)


if __name__ == "__main__":
    kcl.KCLProcess(RecordLogger()).run()
