#!/usr/bin/env python3
"""A record logger (SDK) that misbehaves on cue, for the daemon's failure tests.

Environment:
  KCL_SAMPLE_OUTPUT   file to append ``shard, seq, sub, key, data`` lines to
  KCL_FAULT           ``hang_on:DATA``: on the first record whose data is DATA,
                      write the records before it, record this pid in
                      KCL_FAULT_MARKER and hang (only while the marker is absent);
                      ``crash_shard:SHARD``: exit 3 at initialize on that shard;
                      ``crash_on:DATA``: exit 3 every time it meets that record (a poison record).
  KCL_FAULT_MARKER    marker file for ``hang_on``
"""

import os
import sys
import time

from processors.kclpy import kcl
from processors.kclpy.v3 import processor


class FaultyLogger(processor.RecordProcessorBase):
    def __init__(self):
        self.shard_id = None
        self.output = os.environ.get("KCL_SAMPLE_OUTPUT")
        kind, _, arg = os.environ.get("KCL_FAULT", "").partition(":")
        self.fault, self.fault_arg = kind, arg
        self.marker = os.environ.get("KCL_FAULT_MARKER")

    def initialize(self, initialize_input):
        self.shard_id = initialize_input.shard_id
        if self.fault == "crash_shard" and self.fault_arg == self.shard_id:
            sys.stderr.write(f"faulty_logger: crashing on purpose on {self.shard_id}\n")
            sys.exit(3)

    def _write(self, lines):
        if self.output and lines:
            with open(self.output, "a", encoding="utf-8") as out:
                out.write("".join(lines))

    def process_records(self, process_records_input):
        records = process_records_input.records
        lines = []
        for record in records:
            data = record.binary_data.decode("utf-8", "replace")
            if self.fault == "crash_on" and data == self.fault_arg:
                self._write(lines)
                sys.stderr.write(f"faulty_logger: cannot process {data!r}\n")
                sys.exit(3)
            if (
                self.fault == "hang_on"
                and data == self.fault_arg
                and self.marker
                and not os.path.exists(self.marker)
            ):
                self._write(lines)
                with open(self.marker, "w") as marker:
                    marker.write(str(os.getpid()))
                while True:
                    time.sleep(3600)
            lines.append(
                f"{self.shard_id}\t{record.sequence_number}\t{record.sub_sequence_number}"
                f"\t{record.partition_key}\t{record.data}\n"
            )
        self._write(lines)
        if records:
            last = records[-1]
            process_records_input.checkpointer.checkpoint(
                last.sequence_number, last.sub_sequence_number
            )

    def lease_lost(self, lease_lost_input):
        pass

    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()

    def shutdown_requested(self, shutdown_requested_input):
        shutdown_requested_input.checkpointer.checkpoint()


if __name__ == "__main__":
    kcl.KCLProcess(FaultyLogger()).run()
