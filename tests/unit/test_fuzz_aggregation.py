"""Fuzzing the KPL aggregated-record decoder: ``deaggregate`` never raises (a list or None),
``decode_aggregate`` raises only AggregateFormatError, and on generated aggregates ours agrees
with Google's protobuf parser (upb, through aws-kinesis-agg's generated classes): the same
records where it reads them, a pass-through where protobuf-java would reject the body.

Random bytes almost never pass the magic and MD5 checks, so most inputs are built to pass them:
protobuf written field by field from a grammar (half the bodies well-formed but unusual: fields
in any order and count, unknown fields of every wire type, groups, overlong varints, keys that
are not UTF-8; the other half also with lengths that lie, invalid wire types and field numbers,
missing required fields, indices out of range), and valid aggregates with bytes flipped, cut
or inserted, each framed with a correct MD5. The retrieval path that calls the decoder
(``daemon.conversion.convert_records``, with raw and base64 data and a hash-range filter) is
fuzzed with the same aggregates. The number of inputs is in each test's settings
(``KCL_FUZZ_SCALE`` multiplies them).
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

# aws_kinesis_agg.aggregator puts its own folder on sys.path so that its generated
# messages_pb2 can import config_pb2; import it first.
from aws_kinesis_agg.aggregator import RecordAggregator  # noqa: F401  # isort: skip
from aws_kinesis_agg import messages_pb2  # isort: skip
from google.protobuf.message import DecodeError  # isort: skip

from daemon.conversion import convert_records
from protocol.aggregation import (
    MAGIC,
    MAX_HASH_KEY,
    AggregateFormatError,
    SubRecord,
    UserRecord,
    all_in_hash_range,
    deaggregate,
    decode_aggregate,
    encode_aggregate,
)
from tests.faults.fuzzing import fuzz_settings

# -- a protobuf writer of our own, for inputs no encoder would write ----------------------------


def varint(value: int, padding: int = 0) -> bytes:
    """``value`` as a varint, padded with ``padding`` redundant bytes (overlong)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            break
        out.append(byte | 0x80)
    if padding:
        out[-1] |= 0x80
        out.extend([0x80] * (padding - 1) + [0x00])
    return bytes(out)


def head(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def frame(body: bytes) -> bytes:
    return MAGIC + body + hashlib.md5(body).digest()


# The grammar draws from a random.Random seeded by hypothesis: one draw per input instead of
# dozens keeps thousands of inputs within seconds (a failure still names its seed).


class Grammar:
    """Writes AggregatedRecord bodies. A ``sane`` grammar writes only well-formed protobuf --
    though in unusual shapes: fields in any order, singular fields repeated (the last wins),
    overlong varints, unknown fields of every valid wire type, groups, tags, keys that are not
    UTF-8 -- so about half the bodies hold records. Otherwise anything goes: lengths that lie,
    wire types 6 and 7, field number 0, unclosed groups, indices out of range."""

    def __init__(self, rng: random.Random, sane: bool) -> None:
        self.rng = rng
        self.sane = sane

    def blob(self, most: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, most))

    def varint(self, value: int) -> bytes:
        # Padding must keep a 64-bit value within protobuf's 10 bytes when sane.
        padding = self.rng.choice([0, 0, 0, 1, 3])
        if self.sane and value >= 2**40:
            padding = 0
        return varint(value, padding)

    def length_delimited(self, payload: bytes) -> bytes:
        lie = 0 if self.sane else self.rng.choice([0, 0, 0, 0, 1, -1, 5, 2**32])
        return varint(max(len(payload) + lie, 0)) + payload

    def key(self) -> bytes:
        if self.rng.random() < 0.7:
            alphabet = "ab\u00e9\u4e2d\U0001f600 "
            return "".join(
                self.rng.choice(alphabet) for _ in range(self.rng.randint(0, 6))
            ).encode()
        return self.blob(6)  # often not UTF-8

    def unknown_field(self, depth: int = 2) -> bytes:
        """A field the schema does not have, any wire type (valid ones when sane)."""
        rng = self.rng
        if self.sane:
            number, wire_type = rng.choice([5, 15, 16, 2**29 - 1]), rng.choice([0, 1, 2, 3, 5])
        else:
            number, wire_type = rng.choice([1, 2, 3, 4, 5, 15, 2**29, 0]), rng.randint(0, 7)
        out = head(number, wire_type)
        if wire_type == 0:
            out += self.varint(rng.randint(0, 2**64 - 1 if self.sane else 2**70))
        elif wire_type == 1:
            out += rng.randbytes(8) if self.sane else self.blob(8)
        elif wire_type == 2:
            out += self.length_delimited(self.blob(12))
        elif wire_type == 3:
            if depth > 0:
                out += b"".join(self.unknown_field(depth - 1) for _ in range(rng.randint(0, 2)))
            if self.sane:
                out += head(number, 4)
            else:
                out += rng.choice([head(number, 4), head(number + 1, 4), b""])
        elif wire_type == 5:
            out += rng.randbytes(4) if self.sane else self.blob(4)
        return out

    def tag_message(self) -> bytes:
        out = b""
        if self.sane or self.rng.random() < 0.5:
            out += head(1, 2) + self.length_delimited(self.key())
        if self.rng.random() < 0.5:
            out += head(2, 2) + self.length_delimited(self.key())
        return out

    def record_message(self, pk_count: int, ehk_count: int) -> bytes:
        """A Record: its fields in any order, some repeated, unknown ones mixed in (and, when
        not sane, required ones missing and indices out of range)."""
        rng = self.rng

        def index(count: int) -> int:
            if self.sane:
                return rng.randrange(count)
            return rng.choice([rng.randint(0, count + 1), rng.randint(0, 2**64 - 1)])

        times = [1, 1, 1, 2] if self.sane else [1, 1, 1, 0, 2]
        parts = [head(1, 0) + self.varint(index(pk_count)) for _ in range(rng.choice(times))]
        if (ehk_count or not self.sane) and rng.random() < 0.5:
            parts.append(head(2, 0) + self.varint(index(ehk_count)))
        for _ in range(rng.choice(times)):
            parts.append(head(3, 2) + self.length_delimited(self.blob(20)))
        if rng.random() < 0.25:
            parts.append(head(4, 2) + self.length_delimited(self.tag_message()))
        if rng.random() < 0.25:
            parts.append(self.unknown_field())
        if rng.random() < 0.5:
            rng.shuffle(parts)
        return b"".join(parts)

    def body(self) -> bytes:
        """An AggregatedRecord body: key tables, records, unknown fields, in any order."""
        rng = self.rng
        pk_count = rng.randint(1 if self.sane else 0, 4)
        ehk_count = rng.randint(0, 3)
        parts = [head(1, 2) + self.length_delimited(self.key()) for _ in range(pk_count)]
        parts += [
            head(2, 2) + self.length_delimited(rng.choice(HASH_KEYS).encode())
            for _ in range(ehk_count)
        ]
        parts += [
            head(3, 2) + self.length_delimited(self.record_message(pk_count, ehk_count))
            for _ in range(rng.randint(0, 5))
        ]
        if rng.random() < 0.25:
            parts.append(self.unknown_field())
        if rng.random() < 0.5:
            rng.shuffle(parts)
        return b"".join(parts)


HASH_KEYS = ["0", "1", str(MAX_HASH_KEY), str(MAX_HASH_KEY + 1), "-1", "x", "", "\u0663"]


def aggregate_body(seed: int) -> bytes:
    rng = random.Random(seed)
    return Grammar(rng, sane=rng.random() < 0.5).body()


def aggregate_bodies() -> st.SearchStrategy[bytes]:
    return st.integers(0, 2**64).map(aggregate_body)


user_records = st.builds(
    UserRecord,
    st.text(min_size=1, max_size=8),
    st.binary(max_size=30),
    st.none() | st.integers(0, MAX_HASH_KEY).map(str),
)


def mutated_aggregate(rng: random.Random) -> bytes:
    """A valid aggregate with bytes flipped, set, inserted or deleted, and a correct MD5."""
    grammar = Grammar(rng, sane=True)
    records = [
        UserRecord(
            grammar.key().decode("utf-8", "replace") or "k",
            grammar.blob(30),
            rng.choice([None, str(rng.randint(0, MAX_HASH_KEY))]),
        )
        for _ in range(rng.randint(1, 6))
    ]
    body = bytearray(encode_aggregate(records)[4:-16])
    for _ in range(rng.randint(1, 5)):
        position = rng.randint(0, len(body))
        operation = rng.choice(["flip", "set", "insert", "delete"])
        if operation == "flip" and position < len(body):
            body[position] ^= 1 << rng.randint(0, 7)
        elif operation == "set" and position < len(body):
            body[position] = rng.choice([0x00, 0x7F, 0x80, 0xFF, 0x08, 0x10, 0x1A])
        elif operation == "insert":
            body[position:position] = grammar.blob(6) or b"\x80"
        elif operation == "delete":
            del body[position : position + rng.randint(1, 6)]
    return frame(bytes(body))


def mutated_aggregates() -> st.SearchStrategy[bytes]:
    return st.integers(0, 2**64).map(lambda seed: mutated_aggregate(random.Random(seed)))


def check(data: bytes) -> list[SubRecord] | None:
    """deaggregate never raises, and what it returns is well formed."""
    result = deaggregate(data)
    if result is None:
        try:
            decode_aggregate(data)
        except AggregateFormatError:
            return None
        raise AssertionError("deaggregate said no, decode_aggregate said yes")
    assert isinstance(result, list)
    assert [r.sub_sequence_number for r in result] == list(range(len(result)))
    for record in result:
        assert type(record.partition_key) is str and type(record.data) is bytes
        assert record.explicit_hash_key is None or type(record.explicit_hash_key) is str
        (record.partition_key + (record.explicit_hash_key or "")).encode("utf-8")
    all_in_hash_range(result, 0, MAX_HASH_KEY)  # must not raise on any key
    return result


# -- the tests ---------------------------------------------------------------------------------


@fuzz_settings(1000)
@given(st.binary(max_size=500) | st.binary(max_size=500).map(MAGIC.__add__))
def test_any_bytes_deaggregate_to_a_list_or_none(data: bytes) -> None:
    check(data)


@fuzz_settings(800)
@given(st.binary(max_size=400))
def test_any_body_with_a_correct_md5_deaggregates_to_a_list_or_none(body: bytes) -> None:
    check(frame(body))


@fuzz_settings(2000)
@given(aggregate_bodies())
def test_grammar_built_aggregates_decode_as_googles_protobuf_parser_reads_them(
    body: bytes,
) -> None:
    ours = check(frame(body))
    expected = _read_with_protobuf(body)
    if expected is None:
        assert ours is None, "protobuf-java rejects it; we read records out of it"
    else:
        assert ours is not None, "protobuf reads it; we pass it through"
        assert [(r.partition_key, r.data, r.explicit_hash_key) for r in ours] == expected


def _read_with_protobuf(body: bytes) -> list[tuple[str, bytes, str | None]] | None:
    """The records Google's parser finds, or None where protobuf-java would reject the body:
    a parse error, a required field missing (upb does not check those while parsing), or a key
    index out of range. upb hands back a proto2 string that is not UTF-8 as bytes; it is
    decoded with U+FFFD, as Java does. An empty body is no aggregate (the KCL's rule: nothing
    between the magic and the digest)."""
    if not body:
        return None
    message: Any = messages_pb2.AggregatedRecord()
    try:
        message.ParseFromString(body)
    except DecodeError:
        return None
    if not message.IsInitialized():
        return None

    def text(value: str | bytes) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    pk_table = [text(key) for key in message.partition_key_table]
    ehk_table = [text(key) for key in message.explicit_hash_key_table]
    records = []
    for record in message.records:
        if record.partition_key_index >= len(pk_table):
            return None
        ehk = None
        if record.HasField("explicit_hash_key_index"):
            if record.explicit_hash_key_index >= len(ehk_table):
                return None
            ehk = ehk_table[record.explicit_hash_key_index]
        records.append((pk_table[record.partition_key_index], bytes(record.data), ehk))
    return records


@fuzz_settings(1000)
@given(mutated_aggregates())
def test_valid_aggregates_with_bytes_flipped_cut_or_inserted_deaggregate_to_a_list_or_none(
    data: bytes,
) -> None:
    check(data)


@fuzz_settings(200)
@given(st.lists(user_records, min_size=1, max_size=8))
def test_valid_aggregates_round_trip(records: list[UserRecord]) -> None:
    decoded = check(encode_aggregate(records))
    assert decoded is not None
    assert [(r.partition_key, r.data, r.explicit_hash_key) for r in decoded] == [
        (r.partition_key, r.data, r.explicit_hash_key) for r in records
    ]


@fuzz_settings(500)
@given(
    st.lists(aggregate_bodies().map(frame) | mutated_aggregates() | st.binary(max_size=40),
             min_size=1, max_size=4),
    st.booleans(),
    st.none() | st.tuples(st.integers(0, MAX_HASH_KEY), st.integers(0, MAX_HASH_KEY)),
)  # fmt: skip
def test_retrieval_converts_any_record_data_without_raising(
    datas: list[bytes], as_base64: bool, hash_range: tuple[int, int] | None
) -> None:
    raw = [
        {
            "SequenceNumber": str(1000 + index),
            "Data": base64.b64encode(data).decode() if as_base64 else data,
            "PartitionKey": "pk",
            "ApproximateArrivalTimestamp": 1.5,
        }
        for index, data in enumerate(datas)
    ]
    converted = convert_records(raw, hash_range=hash_range)
    for record in converted.records:
        base64.b64decode(record["data"], validate=True)
        assert record["sequenceNumber"] in {r["SequenceNumber"] for r in raw}
    assert converted.last_sequence_number == raw[-1]["SequenceNumber"]
