#!/usr/bin/env python3
"""The sample record logger, plus evidence of its own life in a second file.

Records go to KCL_SAMPLE_OUTPUT exactly as ``processors.samples.record_logger`` writes them.
Each lifecycle event is appended as one line to KCL_CHILD_EVENTS (if set)::

    started <TAB> pid <TAB> argv as JSON
    initialize|leaseLost|shardEnded|shutdownRequested <TAB> pid <TAB> shard id

so tests can tell which children got leaseLost, and with what argv they were started.
"""

from __future__ import annotations

import json
import os
import sys

from processors.kclpy import kcl, messages
from processors.samples.record_logger import OUTPUT_VARIABLE, RecordLogger, append_all

EVENTS_VARIABLE = "KCL_CHILD_EVENTS"


class LifecycleLogger(RecordLogger):
    def __init__(self, output_path: str, events_path: str | None) -> None:
        super().__init__(output_path)
        self.events_fd = (
            os.open(events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if events_path
            else None
        )

    def event(self, name: str, detail: str) -> None:
        if self.events_fd is not None:
            append_all(self.events_fd, f"{name}\t{os.getpid()}\t{detail}\n".encode())

    def initialize(self, initialize_input: messages.InitializeInput) -> None:
        super().initialize(initialize_input)
        self.event("initialize", self.shard_id)

    def lease_lost(self, lease_lost_input: messages.LeaseLostInput) -> None:
        self.event("leaseLost", self.shard_id)

    def shard_ended(self, shard_ended_input: messages.ShardEndedInput) -> None:
        self.event("shardEnded", self.shard_id)
        super().shard_ended(shard_ended_input)

    def shutdown_requested(self, shutdown_requested_input: messages.ShutdownRequestedInput) -> None:
        self.event("shutdownRequested", self.shard_id)
        super().shutdown_requested(shutdown_requested_input)


def main() -> None:
    output_path = os.environ.get(OUTPUT_VARIABLE)
    if not output_path:
        sys.exit(f"lifecycle_logger: set {OUTPUT_VARIABLE} to the file the records go to")
    processor = LifecycleLogger(output_path, os.environ.get(EVENTS_VARIABLE))
    processor.event("started", json.dumps(sys.argv))
    kcl.KCLProcess(processor).run()


if __name__ == "__main__":
    main()
