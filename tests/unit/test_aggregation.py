"""The KPL aggregated-record format: spec vector, pass-through rules, exact
sizing, hash keys, fuzzing, and cross-checks against aws-kinesis-agg."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# aws_kinesis_agg.aggregator puts its own folder on sys.path so that its
# generated messages_pb2 can import config_pb2; import it first.
from aws_kinesis_agg.aggregator import RecordAggregator  # isort: skip
from aws_kinesis_agg import messages_pb2  # isort: skip
from aws_kinesis_agg.deaggregator import iter_deaggregate_records  # isort: skip
from google.protobuf.message import DecodeError  # isort: skip

from protocol.aggregation import (
    MAGIC,
    AggregateFormatError,
    Aggregator,
    SubRecord,
    UserRecord,
    aggregated_size,
    all_in_hash_range,
    deaggregate,
    decode_aggregate,
    effective_hash_key,
    encode_aggregate,
    outer_record,
    validate_explicit_hash_key,
)

SPEC_VECTOR = "f3899ac20a01610a01621a0508001a01781a0508011a0179b0031909ae75891ca94acec2ecce3125"
MAX_HASH_KEY = 2**128 - 1


# --- an independent protobuf writer for hand-made inputs --------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire_type) + payload


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return field(number, 2, varint(len(payload)) + payload)


def vi(number: int, value: int) -> bytes:
    """A varint field."""
    return field(number, 0, varint(value))


def frame(body: bytes) -> bytes:
    return MAGIC + body + hashlib.md5(body).digest()


def record_body(pk_index: int, data: bytes, ehk_index: int | None = None) -> bytes:
    body = vi(1, pk_index)
    if ehk_index is not None:
        body += vi(2, ehk_index)
    return body + ld(3, data)


def md5_int(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


# --- strategies -------------------------------------------------------------

partition_keys = st.text(min_size=1, max_size=12) | st.sampled_from(["a", "b", "shard-key"])
hash_keys = st.none() | st.integers(0, MAX_HASH_KEY).map(str) | st.sampled_from(["0", "7"])
user_records = st.builds(UserRecord, partition_keys, st.binary(max_size=300), hash_keys)
record_lists = st.lists(user_records, max_size=40)


def as_sub_records(records: list[UserRecord]) -> list[SubRecord]:
    return [
        SubRecord(r.partition_key, r.data, r.explicit_hash_key, i) for i, r in enumerate(records)
    ]


# --- encoding ---------------------------------------------------------------


def test_two_records_encode_to_the_spec_test_vector() -> None:
    records = [UserRecord("a", b"x"), UserRecord("b", b"y")]
    assert encode_aggregate(records).hex() == SPEC_VECTOR


def test_spec_test_vector_decodes_to_its_two_records() -> None:
    assert deaggregate(bytes.fromhex(SPEC_VECTOR)) == [
        SubRecord("a", b"x", None, 0),
        SubRecord("b", b"y", None, 1),
    ]


def test_magic_is_the_kpl_magic() -> None:
    assert MAGIC.hex() == "f3899ac2"


def test_explicit_hash_key_index_is_written_only_for_records_that_have_one() -> None:
    data = encode_aggregate([UserRecord("a", b"x"), UserRecord("b", b"y", "5")])
    expected_body = b"".join(
        [
            ld(1, b"a"),
            ld(1, b"b"),
            ld(2, b"5"),
            ld(3, record_body(0, b"x")),
            ld(3, record_body(1, b"y", ehk_index=0)),
        ]
    )
    assert data == frame(expected_body)
    parsed = messages_pb2.AggregatedRecord()
    parsed.ParseFromString(data[4:-16])
    assert [r.HasField("explicit_hash_key_index") for r in parsed.records] == [False, True]


def test_partition_key_index_zero_is_still_written() -> None:
    data = encode_aggregate([UserRecord("a", b"")])
    assert data == frame(ld(1, b"a") + ld(3, bytes([0x08, 0x00, 0x1A, 0x00])))


def test_key_tables_are_deduplicated_in_first_seen_order() -> None:
    records = [
        UserRecord("b", b"1", "9"),
        UserRecord("a", b"2", "3"),
        UserRecord("b", b"3", "9"),
        UserRecord("c", b"4"),
        UserRecord("a", b"5", "3"),
    ]
    parsed = messages_pb2.AggregatedRecord()
    parsed.ParseFromString(encode_aggregate(records)[4:-16])
    assert list(parsed.partition_key_table) == ["b", "a", "c"]
    assert list(parsed.explicit_hash_key_table) == ["9", "3"]
    assert [r.partition_key_index for r in parsed.records] == [0, 1, 0, 2, 1]
    assert [
        r.explicit_hash_key_index if r.HasField("explicit_hash_key_index") else None
        for r in parsed.records
    ] == [0, 1, 0, None, 1]


def test_non_ascii_partition_keys_are_sized_and_encoded_as_utf8() -> None:
    records = [UserRecord("ключ-🔑", b"data"), UserRecord("é", b"")]
    data = encode_aggregate(records)
    assert len(data) == aggregated_size(records)
    assert deaggregate(data) == as_sub_records(records)


def test_large_records_use_multi_byte_lengths() -> None:
    records = [UserRecord("a", b"x" * 20000), UserRecord("b", b"y" * 200)]
    data = encode_aggregate(records)
    assert len(data) == aggregated_size(records)
    assert deaggregate(data) == as_sub_records(records)


def test_many_partition_keys_use_multi_byte_indices() -> None:
    records = [UserRecord(f"k{i}", b"d", str(i) if i % 3 else None) for i in range(17000)]
    data = encode_aggregate(records)
    assert len(data) == aggregated_size(records)
    assert deaggregate(data) == as_sub_records(records)


def test_empty_aggregate_is_twenty_bytes() -> None:
    assert encode_aggregate([]) == MAGIC + hashlib.md5(b"").digest()
    assert aggregated_size([]) == 20


@settings(max_examples=100, deadline=None)
@given(record_lists)
def test_round_trip_returns_the_records_in_order(records: list[UserRecord]) -> None:
    data = encode_aggregate(records)
    assert len(data) == aggregated_size(records)
    if records:
        assert deaggregate(data) == as_sub_records(records)


# --- the incremental aggregator ---------------------------------------------


def test_try_add_refuses_the_record_that_would_pass_max_size() -> None:
    first, second = UserRecord("a", b"x" * 10), UserRecord("a", b"y" * 10)
    limit = aggregated_size([first, second])
    aggregator = Aggregator(max_size=limit - 1)
    assert aggregator.try_add(first)
    assert not aggregator.try_add(second)
    assert aggregator.records == (first,)
    assert aggregator.size_bytes == aggregated_size([first])


def test_try_add_accepts_a_record_that_fills_max_size_exactly() -> None:
    first, second = UserRecord("a", b"x" * 10), UserRecord("b", b"y" * 10, "12")
    aggregator = Aggregator(max_size=aggregated_size([first, second]))
    assert aggregator.try_add(first)
    assert aggregator.try_add(second)
    assert aggregator.size_bytes == aggregator.max_size == len(aggregator.encode())


def test_try_add_refuses_past_max_count() -> None:
    aggregator = Aggregator(max_count=2)
    assert aggregator.try_add(UserRecord("a", b"1"))
    assert aggregator.try_add(UserRecord("a", b"2"))
    assert not aggregator.try_add(UserRecord("a", b"3"))
    assert aggregator.count == 2


def test_empty_aggregator_accepts_a_record_larger_than_max_size() -> None:
    aggregator = Aggregator(max_size=100)
    big = UserRecord("a", b"x" * 500)
    assert aggregator.try_add(big)
    assert aggregator.size_bytes == len(aggregator.encode()) > 100
    assert not aggregator.try_add(UserRecord("b", b""))
    assert aggregator.outer_record() == ("a", big.data, None)


def test_refused_record_leaves_key_tables_untouched() -> None:
    aggregator = Aggregator(max_size=60)
    assert aggregator.try_add(UserRecord("a", b"x"))
    assert not aggregator.try_add(UserRecord("new-key", b"y" * 40, "123"))
    assert aggregator.try_add(UserRecord("b", b"z", "4"))
    records = [UserRecord("a", b"x"), UserRecord("b", b"z", "4")]
    assert aggregator.encode() == encode_aggregate(records)


def test_clear_empties_the_aggregator() -> None:
    aggregator = Aggregator()
    aggregator.try_add(UserRecord("a", b"x", "1"))
    aggregator.clear()
    assert (aggregator.count, aggregator.size_bytes, aggregator.records) == (0, 20, ())
    assert aggregator.try_add(UserRecord("b", b"y"))
    assert aggregator.encode() == encode_aggregate([UserRecord("b", b"y")])


def test_aggregator_rejects_non_positive_limits() -> None:
    with pytest.raises(ValueError):
        Aggregator(max_size=0)
    with pytest.raises(ValueError):
        Aggregator(max_count=0)


@settings(max_examples=100, deadline=None)
@given(record_lists, st.integers(20, 3000), st.integers(1, 50))
def test_size_bytes_is_always_the_encoded_length(
    records: list[UserRecord], max_size: int, max_count: int
) -> None:
    aggregator = Aggregator(max_size=max_size, max_count=max_count)
    for record in records:
        before = aggregator.size_bytes
        if aggregator.try_add(record):
            assert aggregator.count <= max_count
            assert aggregator.size_bytes <= max_size or aggregator.count == 1
        else:
            # Refused only when the record really does not fit.
            with_it = aggregated_size([*aggregator.records, record])
            assert with_it > max_size or aggregator.count >= max_count
            assert aggregator.size_bytes == before
            aggregator.clear()
            assert aggregator.try_add(record)
        assert aggregator.size_bytes == len(aggregator.encode())
        assert aggregator.encode() == encode_aggregate(aggregator.records)


# --- pass-through rules -----------------------------------------------------

VALID = bytes.fromhex(SPEC_VECTOR)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(MAGIC[:3], id="shorter-than-magic"),
        pytest.param(b"\x00" + VALID[1:], id="wrong-magic"),
        pytest.param(MAGIC, id="magic-only"),
        pytest.param(MAGIC + hashlib.md5(b"").digest(), id="exactly-16-after-magic"),
        pytest.param(MAGIC + b"\x01" * 15, id="fewer-than-16-after-magic"),
        pytest.param(VALID[:-1] + bytes([VALID[-1] ^ 1]), id="md5-mismatch"),
        pytest.param(VALID[:10] + b"\x00" + VALID[11:], id="body-changed-md5-kept"),
        pytest.param(frame(b"\x1a\x05\x08"), id="truncated-record"),
        pytest.param(frame(ld(1, b"a") + ld(3, record_body(1, b"x"))), id="pk-index-out-of-range"),
        pytest.param(
            frame(ld(1, b"a") + ld(2, b"1") + ld(3, record_body(0, b"x", ehk_index=1))),
            id="ehk-index-out-of-range",
        ),
        pytest.param(
            frame(ld(1, b"a") + ld(3, record_body(0, b"x", ehk_index=0))),
            id="ehk-index-with-empty-table",
        ),
        pytest.param(frame(ld(1, b"a") + ld(3, vi(1, 0))), id="record-without-data"),
        pytest.param(frame(ld(1, b"a") + ld(3, ld(3, b"x"))), id="record-without-pk-index"),
        pytest.param(
            frame(ld(1, b"a") + ld(3, record_body(0, b"x") + ld(4, ld(2, b"v")))),
            id="tag-without-key",
        ),
        pytest.param(frame(ld(1, b"a") + field(5, 6, b"")), id="wire-type-6"),
        pytest.param(frame(ld(1, b"a") + field(5, 7, b"")), id="wire-type-7"),
        pytest.param(frame(ld(1, b"a") + b"\x02\x00"), id="field-number-0"),
        pytest.param(frame(ld(1, b"a") + field(5, 4, b"")), id="stray-end-group"),
        pytest.param(frame(field(5, 3, b"") + field(6, 4, b"")), id="mismatched-end-group"),
        pytest.param(frame(field(5, 3, b"")), id="unclosed-group"),
        pytest.param(frame(vi(5, 1) + b"\xff" * 11), id="varint-longer-than-10-bytes"),
        pytest.param(frame(b"\x0a\x05ab"), id="key-past-end"),
        pytest.param(
            frame(ld(1, b"a") + ld(3, vi(1, 0) + b"\x1a\x05x")), id="data-past-record-end"
        ),
        pytest.param(
            frame(ld(1, b"a") + ld(3, vi(1, 0) + ld(3, b"x") + b"\x08")),
            id="varint-past-record-end",
        ),
    ],
)
def test_non_aggregates_pass_through(data: bytes) -> None:
    assert deaggregate(data) is None
    with pytest.raises(AggregateFormatError):
        decode_aggregate(data)


def test_decode_aggregate_names_the_reason() -> None:
    with pytest.raises(AggregateFormatError, match="MD5"):
        decode_aggregate(VALID[:-1] + b"\x00")


def test_deaggregate_accepts_bytearray_and_memoryview() -> None:
    expected = deaggregate(VALID)
    assert deaggregate(bytearray(VALID)) == expected
    assert deaggregate(memoryview(VALID)) == expected


def test_aggregate_without_records_has_no_sub_records() -> None:
    assert deaggregate(frame(ld(1, b"a"))) == []


# --- what a protobuf parser must tolerate ------------------------------------


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    unknown = (
        vi(9, 300)
        + field(10, 1, b"\x00" * 8)
        + ld(11, b"junk")
        + field(12, 3, vi(1, 1) + field(13, 3, ld(2, b"x") + field(13, 4, b"")) + field(12, 4, b""))
        + field(14, 5, b"\x00" * 4)
        + vi(3, 7)  # a known field number with the wrong wire type is unknown too
    )
    record = unknown + vi(1, 0) + unknown + ld(3, b"x") + unknown
    body = unknown + ld(1, b"a") + ld(3, record) + unknown
    assert deaggregate(frame(body)) == [SubRecord("a", b"x", None, 0)]


def test_fields_may_come_in_any_order() -> None:
    record = ld(3, b"x") + vi(2, 0) + vi(1, 1)
    body = ld(3, record) + ld(2, b"42") + ld(1, b"p") + ld(1, b"q")
    assert deaggregate(frame(body)) == [SubRecord("q", b"x", "42", 0)]


def test_later_values_of_a_singular_field_win() -> None:
    record = vi(1, 0) + ld(3, b"old") + vi(1, 1) + ld(3, b"new")
    body = ld(1, b"a") + ld(1, b"b") + ld(3, record)
    assert deaggregate(frame(body)) == [SubRecord("b", b"new", None, 0)]


def test_tags_with_a_key_are_accepted_and_ignored() -> None:
    record = record_body(0, b"x") + ld(4, ld(1, b"k") + ld(2, b"v")) + ld(4, ld(1, b"k2"))
    assert deaggregate(frame(ld(1, b"a") + ld(3, record))) == [SubRecord("a", b"x", None, 0)]


def test_overlong_varints_are_accepted() -> None:
    # Padded encodings of tag 0x1a, length 5, index 0 and length 1.
    record = b"\x88\x00" + b"\x80\x00" + b"\x1a\x81\x00" + b"x"
    body = ld(1, b"a") + b"\x9a\x00" + bytes([len(record)]) + record
    assert deaggregate(frame(body)) == [SubRecord("a", b"x", None, 0)]


def test_keys_that_are_not_utf8_decode_with_replacement_characters() -> None:
    body = ld(1, b"a\xffb") + ld(3, record_body(0, b"x"))
    assert deaggregate(frame(body)) == [SubRecord("a\ufffdb", b"x", None, 0)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_deaggregate_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    result = deaggregate(data)
    assert result is None or isinstance(result, list)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_deaggregate_never_raises_on_any_correctly_framed_body(body: bytes) -> None:
    result = deaggregate(frame(body))
    assert result is None or all(isinstance(r, SubRecord) for r in result)


small_records = st.builds(
    UserRecord,
    st.sampled_from(["a", "b", "ключ", "k" * 130]),
    st.sampled_from([b"", b"x", b"y" * 127, b"z" * 200]),
    st.sampled_from([None, "5", str(MAX_HASH_KEY)]),
)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    body = bytearray(encode_aggregate(draw(st.lists(small_records, min_size=1, max_size=5)))[4:-16])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and at < len(body):
            body[at] = draw(st.integers(0, 255))
        elif action == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif action == "delete":
            del body[at : at + draw(st.integers(1, 3))]
        else:
            del body[at:]
    return bytes(body)


def upb_records(body: bytes) -> list[SubRecord] | None:
    """What protobuf (upb) makes of ``body`` under the KCL's rules: None when
    it cannot parse it, a required field is missing (upb does not check them,
    protobuf-java does) or a key index is out of range."""
    parsed = messages_pb2.AggregatedRecord()
    try:
        parsed.ParseFromString(body)
    except DecodeError:
        return None
    # upb hands back keys that are not UTF-8 as bytes; the KCL (and we)
    # decode them with replacement characters.
    pks = [
        k.decode("utf-8", "replace") if isinstance(k, bytes) else k
        for k in parsed.partition_key_table
    ]
    ehks = [
        k.decode("utf-8", "replace") if isinstance(k, bytes) else k
        for k in parsed.explicit_hash_key_table
    ]
    out = []
    for i, r in enumerate(parsed.records):
        if not (r.HasField("partition_key_index") and r.HasField("data")):
            return None
        if not all(tag.HasField("key") for tag in r.tags):
            return None
        if r.partition_key_index >= len(pks):
            return None
        ehk = None
        if r.HasField("explicit_hash_key_index"):
            if r.explicit_hash_key_index >= len(ehks):
                return None
            ehk = ehks[r.explicit_hash_key_index]
        out.append(SubRecord(pks[r.partition_key_index], r.data, ehk, i))
    return out


def assert_decodes_like_protobuf(body: bytes) -> None:
    # An empty body leaves only 16 bytes after the magic: not an aggregate.
    expected = upb_records(body) if body else None
    try:
        ours: list[SubRecord] | None = decode_aggregate(frame(body))
    except AggregateFormatError as error:
        ours = None
        if expected is not None:
            # protobuf-java, which the KCL parses with, rejects field number 0
            # inside a skipped group too; upb does not look there.
            assert "invalid field number 0" in str(error)
            return
    assert ours == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bodies())
def test_mutated_aggregates_decode_exactly_as_protobuf_under_kcl_rules(body: bytes) -> None:
    assert_decodes_like_protobuf(body)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=60))
def test_arbitrary_bodies_decode_exactly_as_protobuf_under_kcl_rules(body: bytes) -> None:
    assert_decodes_like_protobuf(body)


def test_field_number_zero_inside_an_unknown_group_is_malformed() -> None:
    body = (
        ld(1, b"a")
        + ld(3, record_body(0, b"x"))
        + field(5, 3, b"\x01" + b"\x00" * 8)
        + field(5, 4, b"")
    )
    assert deaggregate(frame(body)) is None


# --- hash keys --------------------------------------------------------------


def test_effective_hash_key_is_md5_of_the_partition_key_big_endian() -> None:
    for key in ["a", "partition-1", "ключ", "🔑"]:
        assert effective_hash_key(key, None) == md5_int(key)
    assert effective_hash_key("a", None) == 0x0CC175B9C0F1B6A831C399E269772661


def test_explicit_hash_key_overrides_the_partition_key() -> None:
    assert effective_hash_key("a", "12345") == 12345
    assert effective_hash_key("a", str(MAX_HASH_KEY)) == MAX_HASH_KEY


@pytest.mark.parametrize("value", ["0", "1", "007", str(MAX_HASH_KEY), "0" * 50 + "9"])
def test_valid_explicit_hash_keys_are_accepted(value: str) -> None:
    assert validate_explicit_hash_key(value) == int(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "0x10",
        "1_000",
        "abc",
        "\u0661",
        str(MAX_HASH_KEY + 1),
        "9" * 5000,
    ],
)
def test_invalid_explicit_hash_keys_are_rejected(value: str) -> None:
    with pytest.raises(ValueError):
        validate_explicit_hash_key(value)
    with pytest.raises(ValueError):
        effective_hash_key("a", value)


def test_all_in_hash_range_checks_every_sub_record() -> None:
    low, high = md5_int("a"), md5_int("b")
    start, end = min(low, high), max(low, high)
    records = [SubRecord("a", b"", None, 0), SubRecord("b", b"", None, 1)]
    assert all_in_hash_range(records, start, end)
    assert not all_in_hash_range(records, start + 1, end)
    assert not all_in_hash_range(records, start, end - 1)
    assert all_in_hash_range([SubRecord("zzz", b"", str(start), 0)], start, end)
    assert not all_in_hash_range([SubRecord("a", b"", "not-a-key", 0)], 0, MAX_HASH_KEY)
    assert all_in_hash_range([], 5, 4)


# --- the outer Kinesis record -------------------------------------------------


def test_a_single_record_goes_raw_with_its_own_keys() -> None:
    assert outer_record([UserRecord("pk", b"raw")]) == ("pk", b"raw", None)
    assert outer_record([UserRecord("pk", b"raw", "99")]) == ("pk", b"raw", "99")


def test_a_single_records_explicit_hash_key_is_sent_in_canonical_form() -> None:
    assert outer_record([UserRecord("pk", b"raw", "0099")]) == ("pk", b"raw", "99")


def test_an_aggregate_goes_under_key_a_with_the_first_records_hash_key() -> None:
    records = [UserRecord("first", b"1"), UserRecord("second", b"2", "5")]
    assert outer_record(records) == ("a", encode_aggregate(records), str(md5_int("first")))
    records = [UserRecord("first", b"1", "77"), UserRecord("second", b"2")]
    assert outer_record(records) == ("a", encode_aggregate(records), "77")


def test_aggregator_outer_record_matches_the_function() -> None:
    records = [UserRecord("x", b"1"), UserRecord("y", b"2")]
    aggregator = Aggregator()
    for record in records:
        aggregator.try_add(record)
    assert aggregator.outer_record() == outer_record(records)
    aggregator.clear()
    aggregator.try_add(records[0])
    assert aggregator.outer_record() == outer_record(records[:1])


def test_outer_record_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        outer_record([])
    with pytest.raises(ValueError):
        Aggregator().outer_record()


# --- cross-checks against aws-kinesis-agg -------------------------------------


def their_sub_records(data: bytes) -> list[dict[str, Any]]:
    source = {
        "Data": data,
        "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "PartitionKey": "a",
        "ApproximateArrivalTimestamp": 0,
    }
    return [r["kinesis"] for r in iter_deaggregate_records([source], data_format="Boto3")]


def their_aggregate(records: list[UserRecord]) -> bytes:
    aggregator = RecordAggregator()
    for record in records:
        assert (
            aggregator.add_user_record(record.partition_key, record.data, record.explicit_hash_key)
            is None
        )
    complete = aggregator.clear_and_get()
    assert complete is not None
    return complete.get_contents()[2]


# aws-kinesis-agg writes no explicit hash key for an empty string, so our
# generated keys are never empty.
cross_lists = st.lists(user_records, min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(cross_lists)
def test_aws_kinesis_agg_decodes_what_we_encode(records: list[UserRecord]) -> None:
    theirs = their_sub_records(encode_aggregate(records))
    assert [
        (r["partitionKey"], base64.b64decode(r["data"]), r["subSequenceNumber"]) for r in theirs
    ] == [(r.partition_key, r.data, i) for i, r in enumerate(records)]
    # aws-kinesis-agg reads explicit_hash_key_index without asking whether it
    # is set, so a record without one gets table entry 0 whenever the table is
    # non-empty (the KCL and we return None). Compare explicit hash keys only
    # where the record has one, or where no record has one.
    any_ehk = any(r.explicit_hash_key is not None for r in records)
    for record, sub in zip(records, theirs, strict=True):
        if record.explicit_hash_key is not None or not any_ehk:
            assert sub["explicitHashKey"] == record.explicit_hash_key


@settings(max_examples=60, deadline=None)
@given(cross_lists)
def test_we_decode_what_aws_kinesis_agg_encodes(records: list[UserRecord]) -> None:
    data = their_aggregate(records)
    assert deaggregate(data) == as_sub_records(records)
    # Same table order, same field order: the bytes are identical, so our
    # exact size is theirs too.
    assert data == encode_aggregate(records)
    assert len(data) == aggregated_size(records)
