"""The record-columns extension: the codec on both sides and the SDK's negotiation."""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson
import pytest

from processors.kclpy import dispatch, messages
from processors.samples.transcripts import run_in_process
from protocol.messages import (
    DecodeProblem,
    Initialize,
    Problem,
    ProcessRecords,
    Status,
    decode_child_line,
    decode_daemon_line,
)
from protocol.records import RECORD_FIELDS, EncodedRecords, splice_columns, wire_record

SEQ = 49590338271490256608559692538361571095921575989136588802


def some_records(count: int, seed: int = 7) -> list[Any]:
    rng = random.Random(seed)
    return [
        wire_record(
            base64.b64encode(rng.randbytes(rng.randrange(0, 40))).decode(),
            rng.choice(["k", "clé-ключ-☃", "partition-17", ""]),
            str(SEQ + n // 3),
            1_700_000_000_000 + rng.randrange(0, 5000),
            n % 3,
        )
        for n in range(count)
    ]


def columns_of(records: list[Any]) -> list[list[Any]]:
    return [[record[name] for record in records] for name in RECORD_FIELDS]


@pytest.mark.parametrize("count", [0, 1, 2, 50])
def test_spliced_columns_are_what_orjson_writes_for_the_five_lists(count):
    records = some_records(count)
    columns = columns_of(records)
    expected = orjson.dumps(dict(zip(RECORD_FIELDS, columns, strict=True)))
    assert splice_columns(*columns) == expected
    as_text = columns[:3] + [list(map(str, column)) for column in columns[3:]]
    assert splice_columns(*as_text) == expected


def test_spliced_columns_without_sub_sequence_numbers_write_zeros():
    records = [wire_record("eA==", "k", "1", 5, 0), wire_record("eQ==", "k", "2", 6, 0)]
    assert splice_columns(*columns_of(records)[:4]) == splice_columns(*columns_of(records))


@pytest.mark.parametrize("count", [0, 1, 30])
def test_a_columns_batch_decodes_to_the_records_of_the_objects_batch(count):
    records = some_records(count)
    as_objects = decode_daemon_line(ProcessRecords(records, 12).encode())
    encoded = EncodedRecords.splice(*columns_of(records), columns=True)
    as_columns = decode_daemon_line(ProcessRecords(encoded, 12, columns=True).encode())
    assert isinstance(as_columns, ProcessRecords) and isinstance(as_objects, ProcessRecords)
    assert as_columns.columns and not as_objects.columns
    assert list(as_columns.records) == list(as_objects.records) == records
    assert as_columns.millis_behind_latest == 12
    # The same batch, encoded from dicts or from columns, is the same line.
    assert ProcessRecords(records, 12, True).encode() == ProcessRecords(encoded, 12, True).encode()


def test_a_columns_batch_is_smaller_than_the_objects_batch():
    records = some_records(100)
    assert len(ProcessRecords(records, 0, True).encode()) < 0.7 * len(
        ProcessRecords(records, 0).encode()
    )


@pytest.mark.parametrize(
    "columns",
    [
        [],
        {"data": ["eA=="]},
        {**dict.fromkeys(RECORD_FIELDS, []), "data": "eA=="},
        {**dict.fromkeys(RECORD_FIELDS, [1]), "data": ["eA==", "eQ=="]},
        {"data": ["eA=="], "partitionKey": ["k"], "sequenceNumber": [1]}
        | {"approximateArrivalTimestamp": [5], "subSequenceNumber": [0]},
        {"data": ["eA=="], "partitionKey": ["k"], "sequenceNumber": ["1"]}
        | {"approximateArrivalTimestamp": ["5"], "subSequenceNumber": [0]},
    ],
)
def test_malformed_record_columns_are_a_bad_field_not_a_crash(columns):
    line = orjson.dumps({"action": "processRecords", "recordColumns": columns})
    problem = decode_daemon_line(line)
    assert isinstance(problem, DecodeProblem) and problem.problem is Problem.BAD_FIELD


def test_initialize_offers_record_columns_only_with_the_extensions():
    offered = orjson.loads(Initialize("shardId-000000000001", "TRIM_HORIZON").encode())
    official = orjson.loads(Initialize("shardId-000000000001", "TRIM_HORIZON").encode(False))
    assert offered["recordColumns"] is True
    assert "recordColumns" not in official


@pytest.mark.parametrize(
    ("extra", "asks"),
    [({"recordColumns": True}, True), ({"recordColumns": "yes"}, False), ({}, False)],
)
def test_a_status_asks_for_record_columns_only_with_true(extra, asks):
    line = orjson.dumps({"action": "status", "responseFor": "initialize", **extra})
    assert decode_child_line(line) == Status("initialize", asks)
    assert decode_child_line(Status("initialize", asks).encode()) == Status("initialize", asks)


# -- the SDK --------------------------------------------------------------------------


def decoded(records: list[Any], columns: bool) -> list[Any]:
    line = ProcessRecords(records, 0, columns).encode()
    return dispatch.decode_action(orjson.loads(line)).records  # type: ignore[no-any-return]


ATTRIBUTES = (
    "binary_data",
    "data",
    "partition_key",
    "sequence_number",
    "sub_sequence_number",
    "timestamp_millis",
    "approximate_arrival_timestamp",
)


def test_column_records_read_exactly_like_object_records():
    records = some_records(40)
    from_objects, from_columns = decoded(records, False), decoded(records, True)
    assert [type(r) for r in from_columns] == [messages.ColumnRecord] * 40
    assert all(isinstance(record, messages.Record) for record in from_columns)
    for plain, column in zip(from_objects, from_columns, strict=True):
        for name in ATTRIBUTES:
            assert getattr(column, name) == getattr(plain, name), name
        for field in (*RECORD_FIELDS, "action"):
            assert column[field] == plain[field] == column.get(field)
        assert repr(column) == repr(plain)
    with pytest.raises(KeyError):
        from_columns[0].get("explicitHashKey")


def test_malformed_record_columns_stop_the_sdk_with_malformed_action():
    line = orjson.dumps({"action": "processRecords", "recordColumns": {"data": ["eA=="]}})
    with pytest.raises(dispatch.MalformedAction, match="recordColumns"):
        dispatch.decode_action(orjson.loads(line))


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def initialize(self, initialize_input: Any) -> None:
        pass

    def process_records(self, process_records_input: Any) -> None:
        self.batches.append([r.binary_data for r in process_records_input.records])

    def lease_lost(self, lease_lost_input: Any) -> None:
        pass

    def shard_ended(self, shard_ended_input: Any) -> None:
        pass

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("offered", "accept", "asks"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_the_sdk_asks_for_columns_only_when_offered_and_wanted(offered, accept, asks):
    records = some_records(5)
    initialize = Initialize("shardId-000000000001", "TRIM_HORIZON").encode(extensions=offered)
    batch = ProcessRecords(records, 0, columns=asks).encode()
    recorder = Recorder()
    lines = run_in_process(recorder, [initialize, batch], record_columns=accept)
    assert decode_child_line(lines[0]) == Status("initialize", asks)
    assert decode_child_line(lines[1]) == Status("processRecords")
    assert recorder.batches == [[base64.b64decode(r["data"]) for r in records]]
