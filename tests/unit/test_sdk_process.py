"""KCLProcess: statuses, processor errors, v1/v2 processors, odd input."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest

from processors.kclpy import dispatch, kcl, messages
from processors.kclpy.v2 import processor as v2processor
from processors.kclpy.v3 import processor as v3processor
from processors.samples.transcripts import run_in_process
from protocol.messages import (
    CheckpointReply,
    Initialize,
    LeaseLost,
    ProcessRecords,
    ShardEnded,
    ShutdownRequested,
)
from protocol.records import wire_record

INIT = Initialize("shardId-000000000003", "LATEST").encode(extensions=False)
BATCH = ProcessRecords([wire_record("aGk=", "k", "7", 1, 0)], 0).encode()
OK = CheckpointReply(None, None).encode()


def statuses(lines: list[str]) -> list[str]:
    return [orjson.loads(line).get("responseFor", "-") for line in lines]


class Recorder(v3processor.RecordProcessorBase):
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail_on = fail_on

    def _called(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_on:
            raise ValueError(f"boom in {name}")

    def initialize(self, initialize_input: Any) -> None:
        self._called("initialize")

    def process_records(self, process_records_input: Any) -> None:
        self._called("process_records")

    def lease_lost(self, lease_lost_input: Any) -> None:
        self._called("lease_lost")

    def shard_ended(self, shard_ended_input: Any) -> None:
        self._called("shard_ended")

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        self._called("shutdown_requested")


def test_every_action_is_answered_with_a_status_naming_it():
    recorder = Recorder()
    lines = [INIT, BATCH, ShutdownRequested().encode(), ShardEnded().encode(), LeaseLost().encode()]
    out = run_in_process(recorder, lines)
    assert statuses(out) == [
        "initialize",
        "processRecords",
        "shutdownRequested",
        "shardEnded",
        "leaseLost",
    ]
    assert recorder.calls == [
        "initialize",
        "process_records",
        "shutdown_requested",
        "shard_ended",
        "lease_lost",
    ]


def test_exception_in_process_records_is_logged_with_traceback_and_answered():
    recorder = Recorder(fail_on="process_records")
    errors = io.StringIO()
    out = run_in_process(recorder, [INIT, BATCH, BATCH], error_file=errors)
    assert statuses(out) == ["initialize", "processRecords", "processRecords"]
    log = errors.getvalue()
    assert "shardId-000000000003" in log
    assert "ValueError during processRecords: boom in process_records" in log
    assert "Traceback (most recent call last)" in log
    assert "the batch counts as processed" in log


def test_system_exit_from_the_processor_stops_the_run():
    class Exits(Recorder):
        def process_records(self, process_records_input: Any) -> None:
            raise SystemExit(3)

    with pytest.raises(SystemExit) as exit_info:
        run_in_process(Exits(), [INIT, BATCH])
    assert exit_info.value.code == 3


def test_end_of_input_returns_from_run_after_the_last_action():
    recorder = Recorder()
    out = run_in_process(recorder, [INIT])
    assert statuses(out) == ["initialize"]


def test_blank_lines_between_actions_are_skipped():
    out = run_in_process(Recorder(), [b"", INIT, b"  ", BATCH])
    assert statuses(out) == ["initialize", "processRecords"]


def test_unknown_action_stops_the_run_with_malformed_action():
    with pytest.raises(dispatch.MalformedAction, match="unknown action 'rebalance'"):
        run_in_process(Recorder(), [INIT, b'{"action":"rebalance"}'])


def test_line_that_is_not_json_stops_the_run_with_malformed_action():
    with pytest.raises(dispatch.MalformedAction, match="not JSON"):
        run_in_process(Recorder(), [INIT, b"hello there"])


def test_stray_checkpoint_reply_is_logged_and_not_answered():
    errors = io.StringIO()
    out = run_in_process(Recorder(), [INIT, OK, BATCH], error_file=errors)
    assert statuses(out) == ["initialize", "processRecords"]
    assert "ignored a 'checkpoint' message" in errors.getvalue()


def test_legacy_shutdown_terminate_calls_shard_ended():
    recorder = Recorder()
    out = run_in_process(recorder, [INIT, b'{"action":"shutdown","reason":"TERMINATE"}'])
    assert recorder.calls == ["initialize", "shard_ended"]
    assert statuses(out) == ["initialize", "shutdown"]


def test_missing_processor_method_is_not_enforced_at_construction_like_amazon_kclpy():
    class Partial(v3processor.RecordProcessorBase):
        def initialize(self, initialize_input: Any) -> None:
            pass

    errors = io.StringIO()
    out = run_in_process(Partial(), [INIT, LeaseLost().encode()], error_file=errors)
    assert statuses(out) == ["initialize", "leaseLost"]
    assert "NotImplementedError during leaseLost" in errors.getvalue()


class V1Processor(kcl.RecordProcessorBase):
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def initialize(self, shard_id: str) -> None:
        self.calls.append(("initialize", shard_id))

    def process_records(self, records: list[Any], checkpointer: Any) -> None:
        self.calls.append(("process_records", [record.sequence_number for record in records]))
        checkpointer.checkpoint()

    def shutdown(self, checkpointer: Any, reason: str) -> None:
        self.calls.append(("shutdown", reason))
        try:
            checkpointer.checkpoint()
        except kcl.CheckpointError as error:
            self.calls.append(("checkpoint failed", error.value))

    def shutdown_requested(self, checkpointer: Any) -> None:
        self.calls.append(("shutdown_requested", checkpointer is not None))


def test_v1_processor_gets_shard_id_records_and_shutdown_reasons():
    processor = V1Processor()
    out = run_in_process(
        processor,
        [INIT, BATCH, OK, ShutdownRequested().encode(), ShardEnded().encode(), OK],
    )
    assert processor.calls == [
        ("initialize", "shardId-000000000003"),
        ("process_records", ["7"]),
        ("shutdown_requested", True),
        ("shutdown", "TERMINATE"),
    ]
    assert statuses(out)[-1] == "shardEnded"


def test_v1_processor_cannot_checkpoint_after_lease_lost():
    processor = V1Processor()
    run_in_process(processor, [INIT, LeaseLost().encode()])
    assert processor.calls[-2:] == [
        ("shutdown", "ZOMBIE"),
        ("checkpoint failed", "Checkpointing is not allowed when the lease is lost"),
    ]


def test_v2_processor_gets_input_objects_and_a_single_shutdown():
    class V2(v2processor.RecordProcessorBase):
        def __init__(self) -> None:
            self.calls: list[Any] = []

        def initialize(self, initialize_input: Any) -> None:
            self.calls.append(initialize_input.shard_id)

        def process_records(self, process_records_input: Any) -> None:
            self.calls.append(len(process_records_input.records))

        def shutdown(self, shutdown_input: messages.ShutdownInput) -> None:
            self.calls.append(shutdown_input.reason)

    processor = V2()
    run_in_process(processor, [INIT, BATCH, LeaseLost().encode()])
    assert processor.calls == ["shardId-000000000003", 1, "ZOMBIE"]


def test_text_files_work_as_input_and_output():
    text_in = io.StringIO(INIT.decode() + "\n" + BATCH.decode() + "\n")
    text_out = io.StringIO()
    kcl.KCLProcess(Recorder(), input_file=text_in, output_file=text_out).run()
    lines = [line for line in text_out.getvalue().splitlines() if line]
    assert statuses(lines) == ["initialize", "processRecords"]
