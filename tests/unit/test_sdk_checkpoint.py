"""The SDK's checkpointer: requests on the wire, every reply, prepared checkpoints."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from processors.kclpy import kcl
from processors.samples.transcripts import run_in_process
from protocol.messages import CheckpointReply, Initialize, LeaseLost, ProcessRecords, ShardEnded
from protocol.records import wire_record

INIT = Initialize("shardId-000000000001", "TRIM_HORIZON").encode(extensions=False)
INIT_EXT = Initialize("shardId-000000000001", "100", 0, "90", 1).encode(extensions=True)
BATCH = ProcessRecords(
    [wire_record("YQ==", "k", "101", 1, 0), wire_record("Yg==", "k", "102", 1, 4)], 0
).encode()


class OnRecords:
    """A v3 processor whose process_records runs a test's function."""

    version = 3

    def __init__(self, body: Callable[[Any], Any]) -> None:
        self.body = body
        self.outcomes: list[Any] = []

    def initialize(self, initialize_input: Any) -> None:
        pass

    def process_records(self, process_records_input: Any) -> None:
        try:
            self.outcomes.append(self.body(process_records_input.checkpointer))
        except kcl.CheckpointError as error:
            self.outcomes.append(error)

    def lease_lost(self, lease_lost_input: Any) -> None:
        pass

    def shard_ended(self, shard_ended_input: Any) -> None:
        shard_ended_input.checkpointer.checkpoint()


def objects(lines: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]


def reply(seq: str | None, sub: int | None = None, error: str | None = None, **kw: Any) -> bytes:
    return CheckpointReply(seq, sub, error, **kw).encode()


def test_checkpoint_request_carries_sequence_and_null_sub_sequence():
    processor = OnRecords(lambda checkpointer: checkpointer.checkpoint("101"))
    out = run_in_process(processor, [INIT, BATCH, reply("101")])
    assert objects(out)[1] == {
        "action": "checkpoint",
        "sequenceNumber": "101",
        "subSequenceNumber": None,
    }
    assert processor.outcomes == [None]
    assert objects(out)[2] == {"action": "status", "responseFor": "processRecords"}


def test_checkpoint_without_arguments_sends_nulls():
    processor = OnRecords(lambda checkpointer: checkpointer.checkpoint())
    out = run_in_process(processor, [INIT, BATCH, reply(None)])
    assert objects(out)[1] == {
        "action": "checkpoint",
        "sequenceNumber": None,
        "subSequenceNumber": None,
    }


def test_integer_sequence_number_is_sent_as_a_string_even_beyond_64_bits():
    big = 49590338271490256608559692538361571095921575989136588802
    processor = OnRecords(lambda checkpointer: checkpointer.checkpoint(big, 2))
    out = run_in_process(processor, [INIT, BATCH, reply(str(big), 2)])
    assert objects(out)[1]["sequenceNumber"] == str(big)
    assert objects(out)[1]["subSequenceNumber"] == 2


@pytest.mark.parametrize(
    "name",
    [
        "IllegalArgumentException",
        "ShutdownException",
        "ThrottlingException",
        "KinesisClientLibDependencyException",
        "InvalidStateException",
    ],
)
def test_checkpoint_error_name_raises_checkpoint_error_with_that_value(name):
    processor = OnRecords(lambda checkpointer: checkpointer.checkpoint("102", 4))
    out = run_in_process(processor, [INIT, BATCH, reply("102", 4, name)])
    [error] = processor.outcomes
    assert isinstance(error, kcl.CheckpointError)
    assert error.value == name
    assert str(error) == repr(name)
    assert objects(out)[-1] == {"action": "status", "responseFor": "processRecords"}


def test_processor_can_retry_after_a_throttled_checkpoint():
    def retry_once(checkpointer: Any) -> str:
        try:
            checkpointer.checkpoint("102")
        except kcl.CheckpointError as error:
            assert error.value == "ThrottlingException"
            checkpointer.checkpoint("102")
        return "done"

    processor = OnRecords(retry_once)
    out = run_in_process(
        processor, [INIT, BATCH, reply("102", None, "ThrottlingException"), reply("102")]
    )
    assert processor.outcomes == ["done"]
    assert [o["action"] for o in objects(out)] == ["status", "checkpoint", "checkpoint", "status"]


def test_message_other_than_a_checkpoint_reply_is_invalid_state_and_dropped():
    processor = OnRecords(lambda checkpointer: checkpointer.checkpoint())
    errors = io.StringIO()
    out = run_in_process(processor, [INIT, BATCH, ShardEnded().encode()], error_file=errors)
    [error] = processor.outcomes
    assert error.value == "InvalidStateException"
    # The shardEnded line was consumed by the checkpoint, as amazon_kclpy does.
    assert objects(out)[-1] == {"action": "status", "responseFor": "processRecords"}


def test_blank_lines_before_the_reply_are_skipped():
    processor = OnRecords(lambda checkpointer: checkpointer.checkpoint())
    run_in_process(processor, [INIT, BATCH, b"", b"   ", reply(None)])
    assert processor.outcomes == [None]


def test_end_of_input_during_a_checkpoint_is_shutdown_and_ends_the_run_quietly():
    processor = OnRecords(lambda checkpointer: checkpointer.checkpoint())
    out = run_in_process(processor, [INIT, BATCH])
    [error] = processor.outcomes
    assert error.value == "ShutdownException"
    # No status after the daemon went away: the last line is the request.
    assert objects(out)[-1]["action"] == "checkpoint"


def test_prepare_without_the_daemon_extension_is_unsupported_and_sends_nothing():
    processor = OnRecords(lambda checkpointer: checkpointer.prepare_checkpoint("101"))
    out = run_in_process(processor, [INIT, BATCH])
    [error] = processor.outcomes
    assert error.value == "UnsupportedOperationException"
    assert [o["action"] for o in objects(out)] == ["status", "status"]


def test_prepare_sends_the_prepare_flag_and_returns_the_pending_position():
    processor = OnRecords(lambda checkpointer: checkpointer.prepare_checkpoint("101", 0))
    out = run_in_process(processor, [INIT_EXT, BATCH, reply("101", 0, prepare=True)])
    assert objects(out)[1] == {
        "action": "checkpoint",
        "sequenceNumber": "101",
        "subSequenceNumber": 0,
        "prepare": True,
    }
    [prepared] = processor.outcomes
    assert prepared.pending_checkpoint_sequence_number == "101"
    assert prepared.pending_checkpoint_sub_sequence_number == 0


def test_committing_a_prepared_checkpoint_is_an_ordinary_checkpoint_at_its_position():
    def prepare_then_commit(checkpointer: Any) -> None:
        checkpointer.prepare_checkpoint("101", 0).checkpoint()

    processor = OnRecords(prepare_then_commit)
    out = run_in_process(
        processor, [INIT_EXT, BATCH, reply("101", 0, prepare=True), reply("101", 0)]
    )
    assert objects(out)[2] == {
        "action": "checkpoint",
        "sequenceNumber": "101",
        "subSequenceNumber": 0,
    }
    assert processor.outcomes == [None]


def test_prepare_without_a_position_pins_the_last_record_delivered():
    processor = OnRecords(lambda checkpointer: checkpointer.prepare_checkpoint())
    out = run_in_process(processor, [INIT_EXT, BATCH, reply(None, None, prepare=True)])
    assert objects(out)[1]["sequenceNumber"] is None
    [prepared] = processor.outcomes
    assert (
        prepared.pending_checkpoint_sequence_number,
        prepared.pending_checkpoint_sub_sequence_number,
    ) == ("102", 4)


def test_refused_prepare_raises_checkpoint_error():
    processor = OnRecords(lambda checkpointer: checkpointer.prepare_checkpoint("5"))
    run_in_process(
        processor, [INIT_EXT, BATCH, reply("5", None, "IllegalArgumentException", prepare=True)]
    )
    [error] = processor.outcomes
    assert error.value == "IllegalArgumentException"


def test_checkpoint_at_shard_end_then_lease_lost_status():
    processor = OnRecords(lambda checkpointer: None)
    out = run_in_process(
        processor, [INIT, BATCH, ShardEnded().encode(), reply(None), LeaseLost().encode()]
    )
    assert [o.get("responseFor", o["action"]) for o in objects(out)] == [
        "initialize",
        "processRecords",
        "checkpoint",
        "shardEnded",
        "leaseLost",
    ]
