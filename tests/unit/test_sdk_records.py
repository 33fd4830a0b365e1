"""The SDK's record wrapper and batch decoding: amazon_kclpy's API, decoded lazily."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import orjson
import pytest

from processors.kclpy import _channel, dispatch, messages
from processors.samples.transcripts import run_in_process
from protocol.messages import ProcessRecords
from protocol.records import wire_record

SEQ = "49590338271490256608559692538361571095921575989136588802"


def wire(data: bytes = b"payload", key: str = "pk", seq: str = SEQ, sub: int = 0) -> Any:
    return wire_record(base64.b64encode(data).decode(), key, seq, 1700000000123, sub)


def decode_batch(records: list[Any], millis_behind: int | None = 0) -> Any:
    line = ProcessRecords(records, millis_behind).encode()
    return dispatch.decode_action(orjson.loads(line))


def test_record_exposes_amazon_kclpy_attribute_names():
    record = decode_batch([wire(b"hello", "key-1", SEQ, 7)]).records[0]
    assert record.binary_data == b"hello"
    assert record.data == base64.b64encode(b"hello").decode()
    assert record.sequence_number == SEQ
    assert record.sub_sequence_number == 7
    assert record.partition_key == "key-1"
    assert record.timestamp_millis == 1700000000123


def test_approximate_arrival_timestamp_is_a_naive_local_datetime_like_amazon_kclpy():
    record = decode_batch([wire()]).records[0]
    assert record.approximate_arrival_timestamp == datetime.fromtimestamp(1700000000.123)
    assert record.approximate_arrival_timestamp.tzinfo is None


def test_record_gives_raw_wire_fields_by_key_like_a_dict():
    record = decode_batch([wire(b"x", "k")]).records[0]
    assert record["partitionKey"] == "k"
    assert record.get("action") == "record"
    with pytest.raises(KeyError):
        record.get("explicitHashKey")


def test_binary_data_is_decoded_only_when_touched(monkeypatch):
    calls: list[str] = []
    real = binascii.a2b_base64

    def counting(text: str) -> bytes:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(messages.binascii, "a2b_base64", counting)
    batch = decode_batch([wire(b"one"), wire(b"two"), wire(b"three")])
    for record in batch.records:
        assert record.sequence_number == SEQ
        assert record.partition_key == "pk"
    assert calls == []
    assert batch.records[1].binary_data == b"two"
    assert len(calls) == 1


def test_bad_base64_fails_only_the_record_whose_data_is_read():
    good = wire(b"fine")
    bad = dict(wire(), data="not base64!")
    batch = decode_batch([good, bad])
    assert batch.records[1].sequence_number == SEQ
    assert batch.records[0].binary_data == b"fine"
    with pytest.raises(binascii.Error):
        batch.records[1].binary_data  # noqa: B018


def test_batch_is_a_plain_list_of_records_in_wire_order():
    batch = decode_batch([wire(seq="1"), wire(seq="2"), wire(seq="3")], millis_behind=250)
    assert type(batch.records) is list
    assert [record.sequence_number for record in batch.records] == ["1", "2", "3"]
    assert batch.millis_behind_latest == 250
    assert batch.action == "processRecords"


def test_process_records_line_is_parsed_by_a_single_json_load(monkeypatch):
    loads: list[bytes] = []
    real = orjson.loads

    def counting(line: bytes) -> Any:
        loads.append(line)
        return real(line)

    monkeypatch.setattr(_channel.orjson, "loads", counting)
    seen: list[str] = []

    class Processor:
        version = 3

        def initialize(self, initialize_input):
            pass

        def process_records(self, process_records_input):
            seen.extend(record.sequence_number for record in process_records_input.records)

    batch = ProcessRecords([wire(seq=str(n)) for n in range(50)], 0).encode()
    run_in_process(Processor(), [batch])
    assert len(loads) == 1
    assert seen == [str(n) for n in range(50)]


def test_inputs_can_be_built_from_json_dicts_as_in_amazon_kclpy():
    initialize = messages.InitializeInput(
        {
            "action": "initialize",
            "shardId": "s-1",
            "sequenceNumber": "LATEST",
            "subSequenceNumber": 0,
        }
    )
    assert (initialize.shard_id, initialize.sequence_number, initialize.sub_sequence_number) == (
        "s-1",
        "LATEST",
        0,
    )
    assert initialize.supports_prepared_checkpoints is False
    assert initialize.pending_checkpoint_sequence_number is None
    raw = {"action": "processRecords", "records": [], "millisBehindLatest": 3}
    assert messages.ProcessRecordsInput(raw).millis_behind_latest == 3
    assert messages.Record(dict(wire(b"z"))).binary_data == b"z"


def test_message_decode_maps_single_objects_like_the_amazon_kclpy_object_hook():
    assert isinstance(dispatch.message_decode(dict(wire())), messages.Record)
    reply = dispatch.message_decode(
        {"action": "checkpoint", "sequenceNumber": "5", "subSequenceNumber": None, "error": "X"}
    )
    assert isinstance(reply, messages.CheckpointInput)
    assert reply.error == "X"
    with pytest.raises(dispatch.MalformedAction):
        dispatch.message_decode({"action": "bogus"})


def test_initialize_input_exposes_the_pending_prepared_checkpoint():
    initialize = messages.InitializeInput(
        {
            "action": "initialize",
            "shardId": "s-1",
            "sequenceNumber": "100",
            "subSequenceNumber": 0,
            "preparedCheckpoints": True,
            "pendingCheckpointSequenceNumber": "120",
            "pendingCheckpointSubSequenceNumber": 2,
        }
    )
    assert initialize.supports_prepared_checkpoints is True
    assert initialize.pending_checkpoint_sequence_number == "120"
    assert initialize.pending_checkpoint_sub_sequence_number == 2
