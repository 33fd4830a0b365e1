"""Golden transcripts (tests/golden): our encoder and our SDK against the official wire form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.kclpy import kcl
from processors.samples.scripted_processor import ScriptedProcessor
from processors.samples.transcripts import (
    IN,
    OUT,
    Turn,
    accepts_record_columns,
    load_transcript,
    run_in_process,
    script_from_transcript,
)
from protocol.messages import (
    ACTIONS_NEEDING_STATUS,
    CheckpointReply,
    CheckpointRequest,
    DecodeProblem,
    Initialize,
    ProcessRecords,
    Status,
    decode_child_line,
    decode_daemon_line,
)
from protocol.records import wire_record

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
TRANSCRIPTS = sorted(GOLDEN.glob("*.jsonl"))
ERROR_NAMES = {
    "IllegalArgumentException",
    "ShutdownException",
    "ThrottlingException",
    "KinesisClientLibDependencyException",
    "InvalidStateException",
}


def turns_of(path: Path, direction: str) -> list[Turn]:
    return [turn for turn in load_transcript(path) if turn.direction == direction]


def reencode(line: str) -> bytes:
    """Decode a daemon line with protocol.messages and encode it again."""
    message = decode_daemon_line(line)
    assert not isinstance(message, DecodeProblem), message.describe()
    if isinstance(message, Initialize):
        return message.encode(extensions="preparedCheckpoints" in orjson.loads(line))
    if isinstance(message, ProcessRecords):
        # Rebuild every record with wire_record, so field order comes from our
        # encoder and not from the parsed dict.
        records = [
            wire_record(
                r["data"],
                r["partitionKey"],
                r["sequenceNumber"],
                r["approximateArrivalTimestamp"],
                r["subSequenceNumber"],
            )
            for r in message.records
        ]
        return ProcessRecords(records, message.millis_behind_latest, message.columns).encode()
    return message.encode()


def test_there_are_golden_transcripts():
    assert len(TRANSCRIPTS) >= 7


def test_transcripts_cover_every_checkpoint_error_name_and_every_action():
    errors, actions = set(), set()
    for path in TRANSCRIPTS:
        for turn in turns_of(path, IN):
            message = turn.message
            actions.add(message["action"])
            if message.get("error"):
                errors.add(message["error"])
    assert errors == ERROR_NAMES
    assert actions == ACTIONS_NEEDING_STATUS | {"checkpoint"}


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_every_action_in_a_transcript_is_answered_by_a_matching_status(path):
    pending = None
    for turn in load_transcript(path):
        message = turn.message
        if turn.direction == IN and message["action"] in ACTIONS_NEEDING_STATUS:
            assert pending is None, f"{message['action']} sent before {pending} was answered"
            pending = message["action"]
        elif turn.direction == OUT and message["action"] == "status":
            assert message["responseFor"] == pending
            pending = None
    assert pending is None


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_our_encoder_writes_daemon_lines_byte_for_byte(path):
    for turn in turns_of(path, IN):
        assert reencode(turn.line) == turn.line.encode("utf-8")


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_child_lines_decode_and_reencode_to_the_same_object(path):
    for turn in turns_of(path, OUT):
        message = decode_child_line(turn.line)
        assert isinstance(message, (Status, CheckpointRequest)), turn.line
        assert orjson.loads(message.encode()) == json.loads(turn.line)


def test_official_initialize_form_has_exactly_the_three_fields():
    line = Initialize("shardId-000000000001", "TRIM_HORIZON").encode(extensions=False)
    assert line == (
        b'{"action":"initialize","shardId":"shardId-000000000001",'
        b'"sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}'
    )


def test_checkpoint_reply_writes_null_error_on_success():
    assert CheckpointReply("5", None).encode() == (
        b'{"action":"checkpoint","sequenceNumber":"5","subSequenceNumber":null,"error":null}'
    )


def run_sdk(path: Path, output: Path) -> tuple[list[Any], list[Any]]:
    turns = load_transcript(path)
    processor = ScriptedProcessor(kcl.CheckpointError, script_from_transcript(turns), str(output))
    answered = run_in_process(
        processor,
        [turn.line for turn in turns if turn.direction == IN],
        record_columns=accepts_record_columns(turns),
    )
    expected = [json.loads(turn.line) for turn in turns if turn.direction == OUT]
    return [orjson.loads(line) for line in answered], expected


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_our_sdk_answers_the_transcript_with_equivalent_lines(path, tmp_path):
    answered, expected = run_sdk(path, tmp_path / "calls.jsonl")
    assert answered == expected


def test_our_sdk_reports_each_error_name_to_the_processor(tmp_path):
    output = tmp_path / "calls.jsonl"
    run_sdk(GOLDEN / "checkpoint_errors.jsonl", output)
    calls = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    errors = [call["error"] for call in calls if call["call"] == "checkpoint"]
    assert errors == [
        "IllegalArgumentException",
        "ThrottlingException",
        "KinesisClientLibDependencyException",
        "InvalidStateException",
        "ShutdownException",
    ]


def test_our_sdk_decodes_binary_and_non_ascii_records_of_the_transcript(tmp_path):
    output = tmp_path / "calls.jsonl"
    run_sdk(GOLDEN / "lease_lost.jsonl", output)
    calls = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    [batch] = [call for call in calls if call["call"] == "process_records"]
    records = batch["records"]
    assert records[0]["binary_data"] == ""
    assert bytes.fromhex(records[1]["binary_data"]) == bytes(range(256))
    assert records[2]["partition_key"] == "clé-ключ-☃"
    assert bytes.fromhex(records[2]["binary_data"]).decode() == "données ☃"


def test_our_sdk_exposes_the_pending_checkpoint_of_the_transcript(tmp_path):
    output = tmp_path / "calls.jsonl"
    run_sdk(GOLDEN / "ext_prepared_checkpoint.jsonl", output)
    calls = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert calls[0]["pending"] == ["49590338271490256608559692538361571095921575989198588802", 0]
    prepares = [call for call in calls if call["call"] == "prepare_checkpoint"]
    assert [call["error"] for call in prepares] == [None, "IllegalArgumentException"]
