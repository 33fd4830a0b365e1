#!/usr/bin/env python3
"""A processor that follows a script of checkpoint calls and logs every call.

Built for comparing SDKs and daemons on golden transcripts, and for tests
that need a processor to misbehave on cue. Environment variables:

``KCL_SAMPLE_SDK``
    ``processors.kclpy`` (default) or ``amazon_kclpy``: which SDK to run on
    (the official one must be importable).
``KCL_SAMPLE_SCRIPT``
    A JSON file: a list with one step per processor call, in order, each a
    list of calls ``{"method": "checkpoint" | "prepare_checkpoint" |
    "commit_prepared", "sequence_number": ..., "sub_sequence_number": ...}``
    (see ``transcripts.script_from_transcript``). CheckpointErrors are
    caught and logged, and the step goes on.
``KCL_SAMPLE_OUTPUT``
    A file that receives one JSON line per processor call and per checkpoint
    call, with everything the processor was given.
``KCL_SAMPLE_NOISE``
    ``1``: write junk to stdout in every call, both with ``print()`` and
    straight to file descriptor 1 (what a C library would do).
``KCL_SAMPLE_RAISE``
    An action name (``processRecords``, ...): raise RuntimeError at the end of
    that call.
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

if importlib.util.find_spec("processors") is None:
    # Run by path from a checkout: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson  # noqa: E402


def _describe_record(record: Any) -> dict[str, Any]:
    return {
        "sequence_number": record.sequence_number,
        "sub_sequence_number": record.sub_sequence_number,
        "partition_key": record.partition_key,
        "data": record.data,
        "binary_data": base64.b16encode(record.binary_data).decode("ascii"),
        "timestamp_millis": record.timestamp_millis,
        "approximate_arrival_timestamp": record.approximate_arrival_timestamp.isoformat(),
        "raw_action": record.get("action"),
    }


class ScriptedProcessor:
    """Duck-typed v3 processor, so it runs on either SDK unchanged."""

    version = 3

    def __init__(
        self,
        checkpoint_error: type[Exception],
        steps: list[list[dict[str, Any]]],
        output_path: str | None,
        noise: bool = False,
        raise_on: str | None = None,
    ) -> None:
        self.checkpoint_error = checkpoint_error
        self.steps = steps
        self.step_index = 0
        self.output = open(output_path, "ab") if output_path else None  # noqa: SIM115
        self.noise = noise
        self.raise_on = raise_on
        self.prepared: Any = None

    def log(self, entry: dict[str, Any]) -> None:
        if self.output is not None:
            self.output.write(orjson.dumps(entry) + b"\n")
            self.output.flush()

    def _call(self, action: str, entry: dict[str, Any], checkpointer: Any) -> None:
        self.log(entry)
        if self.noise:
            print(f"noise from print() during {action}")
            os.write(1, f"noise from fd 1 during {action}\n".encode())
        step = self.steps[self.step_index] if self.step_index < len(self.steps) else []
        self.step_index += 1
        for call in step:
            self._checkpoint(checkpointer, call)
        if action == self.raise_on:
            raise RuntimeError(f"scripted failure during {action}")

    def _checkpoint(self, checkpointer: Any, call: dict[str, Any]) -> None:
        method = call["method"]
        args = (call.get("sequence_number"), call.get("sub_sequence_number"))
        entry: dict[str, Any] = {"call": method, "args": list(args), "error": None}
        try:
            if method == "commit_prepared":
                self.prepared.checkpoint()
            elif method == "prepare_checkpoint":
                self.prepared = checkpointer.prepare_checkpoint(*args)
                entry["pending"] = [
                    self.prepared.pending_checkpoint_sequence_number,
                    self.prepared.pending_checkpoint_sub_sequence_number,
                ]
            else:
                checkpointer.checkpoint(*args)
        except self.checkpoint_error as error:
            entry["error"] = getattr(error, "value", str(error))
        self.log(entry)

    def initialize(self, initialize_input: Any) -> None:
        entry = {
            "call": "initialize",
            "shard_id": initialize_input.shard_id,
            "sequence_number": initialize_input.sequence_number,
            "sub_sequence_number": initialize_input.sub_sequence_number,
        }
        if getattr(initialize_input, "supports_prepared_checkpoints", False):
            entry["pending"] = [
                initialize_input.pending_checkpoint_sequence_number,
                initialize_input.pending_checkpoint_sub_sequence_number,
            ]
        self._call("initialize", entry, None)

    def process_records(self, process_records_input: Any) -> None:
        entry = {
            "call": "process_records",
            "millis_behind_latest": process_records_input.millis_behind_latest,
            "records": [_describe_record(record) for record in process_records_input.records],
        }
        self._call("processRecords", entry, process_records_input.checkpointer)

    def lease_lost(self, lease_lost_input: Any) -> None:
        self._call("leaseLost", {"call": "lease_lost"}, None)

    def shard_ended(self, shard_ended_input: Any) -> None:
        self._call("shardEnded", {"call": "shard_ended"}, shard_ended_input.checkpointer)

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        self._call(
            "shutdownRequested",
            {"call": "shutdown_requested"},
            shutdown_requested_input.checkpointer,
        )


def main() -> None:
    sdk = os.environ.get("KCL_SAMPLE_SDK", "processors.kclpy")
    kcl = importlib.import_module(f"{sdk}.kcl")
    script_path = os.environ.get("KCL_SAMPLE_SCRIPT")
    steps = orjson.loads(Path(script_path).read_bytes()) if script_path else []
    record_processor = ScriptedProcessor(
        kcl.CheckpointError,
        steps,
        os.environ.get("KCL_SAMPLE_OUTPUT"),
        noise=os.environ.get("KCL_SAMPLE_NOISE") == "1",
        raise_on=os.environ.get("KCL_SAMPLE_RAISE") or None,
    )
    process = kcl.KCLProcess(record_processor)
    # KCL_SAMPLE_RECORD_COLUMNS=0: decline the record-columns extension, as a
    # transcript's child may (amazon_kclpy has no such choice and never asks).
    process.record_columns = os.environ.get("KCL_SAMPLE_RECORD_COLUMNS", "1") != "0"
    process.run()


if __name__ == "__main__":
    main()
