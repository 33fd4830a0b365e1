"""The fast GetRecords path gives the child exactly what the record-by-record path gives.

Every test here compares the spliced JSON of ``daemon.fast_records`` (reached through the
real ``before-parse`` hook and ``convert_records``) with the WireRecord dicts of the general
conversion, byte for byte once encoded as processRecords.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.conversion import arrival_millis, convert_records
from daemon.fast_records import (
    FastRecords,
    aggregate_columns,
    decode_get_records,
    millis_text,
    record_columns,
)
from daemon.kinesis_client import _parse_get_records
from daemon.sequence import ExtendedSequenceNumber
from protocol.aggregation import MAGIC, UserRecord, deaggregate, encode_aggregate
from protocol.messages import ProcessRecords
from protocol.records import EncodedRecords, splice_records, wire_record


def hook(body: bytes) -> dict[str, Any]:
    response_dict: dict[str, Any] = {"status_code": 200, "body": body, "headers": {}}
    customized: dict[str, Any] = {}
    _parse_get_records(response_dict=response_dict, customized_response_dict=customized)
    assert customized, "the fast path refused the body"
    return customized


def body_of(records: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"Records": records, "NextShardIterator": "it/1+", **extra})


def kinesis_record(seq: int, data: bytes, key: str = "pk", arrival: float = 1.7e9) -> dict:
    return {
        "SequenceNumber": str(seq),
        "ApproximateArrivalTimestamp": arrival,
        "Data": base64.b64encode(data).decode(),
        "PartitionKey": key,
    }


def both_ways(body: bytes, record_columns: bool = False, **options: Any) -> tuple[Any, Any]:
    """(fast conversion, record-by-record conversion) of the same parsed body."""
    records = hook(body)["Records"]
    fast = convert_records(records, record_columns=record_columns, **options)
    general = convert_records(list(records), **options)
    return fast, general


def assert_same(fast: Any, general: Any) -> None:
    for columns in (False, True):
        assert (
            ProcessRecords(fast.records, 7, columns).encode()
            == ProcessRecords(general.records, 7, columns).encode()
        )
    assert fast.records == general.records
    assert len(fast.records) == len(general.records)
    assert fast.byte_size == general.byte_size
    assert fast.last_position == general.last_position
    assert fast.last_sequence_number == general.last_sequence_number
    assert fast.dropped_sequence_numbers == general.dropped_sequence_numbers


def aggregate_of(*items: tuple[str, bytes], hash_key: str | None = None) -> bytes:
    return encode_aggregate([UserRecord(key, data, hash_key) for key, data in items])


def hash_of(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


# -- splicing -----------------------------------------------------------------------------

texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\'), max_size=12
).filter(lambda text: not any(ord(c) < 0x20 for c in text))


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(texts, texts, st.integers(0, 10**56), st.integers(0, 2**53), st.integers(0, 99)),
        max_size=6,
    ),
    st.booleans(),
)
def test_spliced_array_is_what_orjson_writes_for_the_wire_records(
    rows: list[tuple[str, str, int, int, int]], with_subs: bool
) -> None:
    data = [row[0] for row in rows]
    keys = [row[1] for row in rows]
    sequences = [str(row[2]) for row in rows]
    millis = [row[3] for row in rows]
    subs = [row[4] if with_subs else 0 for row in rows]
    expected = orjson.dumps(
        [wire_record(*row) for row in zip(data, keys, sequences, millis, subs, strict=True)]
    )
    assert splice_records(data, keys, sequences, millis, subs if with_subs else None) == expected


@pytest.mark.parametrize("columns", [False, True])
def test_encoded_records_read_like_the_list_they_encode(columns: bool) -> None:
    records = [wire_record("aGk=", "k", "1", 5), wire_record("", "k2", "2", 6, 3)]
    encoded = EncodedRecords.splice(
        ["aGk=", ""], ["k", "k2"], ["1", "2"], ["5", "6"], ["0", "3"], columns=columns
    )
    assert len(encoded) == 2 and bool(encoded)
    assert encoded == records and records == encoded
    assert encoded[1]["subSequenceNumber"] == 3
    assert list(encoded) == records
    # Either form is there, whichever was spliced.
    assert encoded.json == orjson.dumps(records)
    assert (
        encoded.columns_json
        == ProcessRecords(records, None, True).encode()[
            len(b'{"action":"processRecords","recordColumns":') : -len(
                b',"millisBehindLatest":null}'
            )
        ]
    )
    for form in (False, True):
        assert (
            ProcessRecords(encoded, None, form).encode()
            == ProcessRecords(records, None, form).encode()
        )


def test_encoded_records_without_sub_sequence_numbers_mean_zero() -> None:
    encoded = EncodedRecords.splice(["aGk="], ["k"], ["1"], [5], columns=True)
    assert list(encoded) == [wire_record("aGk=", "k", "1", 5, 0)]
    assert orjson.loads(encoded.columns_json)["subSequenceNumber"] == [0]


def test_millis_text_rounds_like_arrival_millis() -> None:
    times = [1714564800.123, 1714564800.123, 1714564800.1235, 1700000000, 0.0005]
    assert millis_text(times) == [str(arrival_millis(t)) for t in times]


# -- the hook's columns --------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        {"SequenceNumber": "1", "Data": "eA==", "ApproximateArrivalTimestamp": 1.0},
        {
            "SequenceNumber": "1",
            "Data": "eA==",
            "PartitionKey": None,
            "ApproximateArrivalTimestamp": 1,
        },
        {"SequenceNumber": "1", "Data": "eA==", "PartitionKey": "k"},
    ],
)
def test_records_without_every_field_get_no_columns_but_still_convert(record: dict) -> None:
    body = body_of([record])
    assert record_columns(orjson.loads(body)["Records"], body) is None
    records = hook(body)["Records"]
    assert type(records) is not FastRecords
    out = convert_records(records)
    assert [r["sequenceNumber"] for r in out.records] == ["1"]


@pytest.mark.parametrize("key", ['quote"d', "back\\slash", "new\nline", "tab\tbed"])
def test_strings_that_need_escaping_are_encoded_by_orjson(key: str) -> None:
    fast, general = both_ways(body_of([kinesis_record(1, b"x", key)]))
    assert not hook(body_of([kinesis_record(1, b"x", key)]))["Records"].verbatim
    assert_same(fast, general)
    assert orjson.loads(ProcessRecords(fast.records).encode())["records"][0]["partitionKey"] == key


def test_a_backslash_elsewhere_in_the_body_keeps_the_fast_path() -> None:
    body = body_of([kinesis_record(1, b"x", "k")], NextShardIterator="it\\/1")
    records = hook(body)["Records"]
    assert records.verbatim
    assert_same(*both_ways(body))


# -- whole responses ---------------------------------------------------------------------


@pytest.mark.parametrize("record_columns", [False, True])
def test_plain_records_splice_to_the_same_message(record_columns: bool) -> None:
    raw = [
        kinesis_record(10 + n, bytes([n]) * n, f"key-{n}é", 1714564800.5 + n / 7) for n in range(9)
    ]
    fast, general = both_ways(body_of(raw), record_columns)
    assert isinstance(fast.records, EncodedRecords)
    assert_same(fast, general)
    assert fast.last_position == ExtendedSequenceNumber("18", 0)


@pytest.mark.parametrize("record_columns", [False, True])
def test_aggregates_and_plain_records_mixed_splice_to_the_same_message(
    record_columns: bool,
) -> None:
    blob = aggregate_of(("a", b"one"), ("b", b"two"), ("a", b""), ("c\u00e9", b"four"))
    raw = [
        kinesis_record(1, b"plain"),
        kinesis_record(2, blob, "outer"),
        kinesis_record(3, MAGIC + b"not really an aggregate"),
        kinesis_record(4, aggregate_of()),
    ]
    fast, general = both_ways(body_of(raw), record_columns)
    assert isinstance(fast.records, EncodedRecords)
    assert_same(fast, general)
    assert [(r["sequenceNumber"], r["subSequenceNumber"]) for r in fast.records] == [
        ("1", 0),
        ("2", 0),
        ("2", 1),
        ("2", 2),
        ("2", 3),
        ("3", 0),
        ("4", 0),
    ]  # fmt: skip  (an aggregate of nothing is too short to be one: it passes through)


def test_last_position_is_the_last_sub_record_of_a_final_aggregate() -> None:
    raw = [kinesis_record(1, b"plain"), kinesis_record(2, aggregate_of(("a", b"1"), ("b", b"2")))]
    fast, general = both_ways(body_of(raw))
    assert_same(fast, general)
    assert fast.last_position == ExtendedSequenceNumber("2", 1)


def test_aggregates_outside_the_hash_range_are_dropped_alike() -> None:
    inside, outside = "in-key", "out-key"
    low = min(hash_of(inside), hash_of(outside))
    high = max(hash_of(inside), hash_of(outside)) - 1
    if hash_of(inside) > high:
        inside, outside = outside, inside
    raw = [
        kinesis_record(1, aggregate_of((inside, b"kept"))),
        kinesis_record(2, aggregate_of((inside, b"x"), (outside, b"y"))),
        kinesis_record(3, aggregate_of((outside, b"z"), hash_key=str(low))),
        kinesis_record(4, aggregate_of((outside, b"bad"), hash_key="not-a-number")),
    ]
    fast, general = both_ways(body_of(raw), hash_range=(low, high))
    assert_same(fast, general)
    assert fast.dropped_sequence_numbers == ["2", "4"]


def test_a_partition_key_needing_escaping_inside_an_aggregate_falls_back() -> None:
    raw = [kinesis_record(1, aggregate_of(('say "hi"', b"x"), ("ok", b"y")))]
    fast, general = both_ways(body_of(raw))
    assert_same(fast, general)


def test_a_checkpoint_to_skip_through_uses_the_general_path() -> None:
    raw = [kinesis_record(n, b"d") for n in (4, 5, 6)]
    fast, general = both_ways(body_of(raw), skip_through=ExtendedSequenceNumber("5"))
    assert_same(fast, general)
    assert [r["sequenceNumber"] for r in fast.records] == ["6"]


def test_an_empty_response_converts_to_no_records() -> None:
    fast, general = both_ways(body_of([]))
    assert_same(fast, general)
    assert fast.last_position is None and fast.last_sequence_number is None


# -- aggregates as columns ----------------------------------------------------------------


def as_tuples(subs: Any) -> list[tuple[str, bytes, str | None]]:
    return [(s.partition_key, s.data, s.explicit_hash_key) for s in subs]


def columns_as_tuples(blob: bytes) -> list[tuple[str, bytes, str | None]] | None:
    aggregate = aggregate_columns(blob)
    if aggregate is None:
        return None
    hash_keys = aggregate.explicit_hash_keys or [None] * len(aggregate.data)
    return list(zip(aggregate.partition_keys, aggregate.data, hash_keys, strict=True))


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "\u00e9"]), st.binary(max_size=20), st.booleans()),
        max_size=5,
    ),
    st.integers(0, 400),
    st.integers(0, 255),
    st.booleans(),
)
def test_aggregate_columns_accept_and_refuse_what_deaggregate_does(
    items: list[tuple[str, bytes, bool]], position: int, value: int, corrupt: bool
) -> None:
    blob = bytearray(
        encode_aggregate(
            [
                UserRecord(key, data, "12345" if with_hash else None)
                for key, data, with_hash in items
            ]
        )
    )
    if corrupt and blob:
        blob[position % len(blob)] = value
        # Keep the digest right so that the protobuf itself gets parsed.
        body = bytes(blob[4:-16])
        blob[-16:] = hashlib.md5(body).digest()
    subs = deaggregate(bytes(blob))
    assert columns_as_tuples(bytes(blob)) == (None if subs is None else as_tuples(subs))


@pytest.mark.parametrize("key", ["", "k", "clé-ключ-☃", "x" * 256])
def test_the_cached_partition_key_hash_is_the_effective_hash_key(key: str) -> None:
    from daemon.fast_records import partition_key_hash
    from protocol.aggregation import effective_hash_key

    assert partition_key_hash(key) == effective_hash_key(key, None)
    assert partition_key_hash(key) == partition_key_hash(key)


# -- msgspec's decode of a whole body ------------------------------------------------------


def test_msgspec_decodes_a_body_into_the_columns_orjson_gives() -> None:
    raw = [kinesis_record(n, bytes([n]) * n, f"key-{n}é", 1714564800 + n / 8) for n in range(20)]
    children = [{"ShardId": "shardId-000000000001", "ParentShards": ["shardId-000000000000"]}]
    body = body_of(raw, MillisBehindLatest=12, ChildShards=children)
    decoded = decode_get_records(body)
    assert decoded is not None
    fast = decoded["Records"]
    slow = record_columns(orjson.loads(body)["Records"], body)
    assert type(fast) is FastRecords and slow is not None
    for column in ("data", "sequence_numbers", "partition_keys", "arrival_times", "data_text"):
        assert getattr(fast, column) == getattr(slow, column), column
    assert fast.verbatim and slow.verbatim
    assert list(fast) == raw and fast[3] == raw[3] and len(fast) == 20
    assert decoded["NextShardIterator"] == "it/1+"
    assert decoded["MillisBehindLatest"] == 12
    assert decoded["ChildShards"] == children


@pytest.mark.parametrize(
    "body",
    [
        body_of([kinesis_record(1, b"x", 'quote"d')]),  # an escape: the orjson path checks it
        body_of([{"SequenceNumber": "1", "Data": "eA==", "ApproximateArrivalTimestamp": 1.0}]),
        body_of([{**kinesis_record(1, b"x"), "ApproximateArrivalTimestamp": True}]),
        body_of([{**kinesis_record(1, b"x"), "Data": 5}]),
        body_of([kinesis_record(1, b"x")], MillisBehindLatest=1.5),
        body_of([kinesis_record(1, b"x")], NextShardIterator=7),
        b'{"Records": [',
    ],
)
def test_msgspec_leaves_every_other_body_to_the_orjson_path(body: bytes) -> None:
    assert decode_get_records(body) is None


def test_a_body_without_next_iterator_reads_as_a_null_one() -> None:
    decoded = decode_get_records(orjson.dumps({"Records": [kinesis_record(1, b"x")]}))
    assert decoded is not None and decoded["NextShardIterator"] is None
    assert "MillisBehindLatest" not in decoded


def test_bodies_of_a_few_large_records_keep_the_orjson_route() -> None:
    from daemon.fast_records import MSGSPEC_MAX_BYTES_PER_RECORD

    large = body_of([kinesis_record(n, b"x" * MSGSPEC_MAX_BYTES_PER_RECORD) for n in range(3)])
    assert decode_get_records(large) is None
    assert type(hook(large)["Records"]) is FastRecords  # still the fast path, via orjson
