"""The fast path from a GetRecords body to the child's JSON, without a dict per record.

Owns what ``fastGetRecords`` does to records after orjson has parsed a body
(``daemon.kinesis_client`` hands them over as :class:`FastRecords`): their
values taken out as columns while their types are checked, and the
records of the child's ``processRecords`` message spliced from those
columns as JSON text, in the form the child asked for
(:class:`protocol.records.EncodedRecords`), KPL aggregates included.
``daemon.conversion`` uses :func:`splice_batch` and falls back to its
record-by-record conversion whenever this returns None.

Why splicing is exact: a body with no backslash holds no JSON escape, so
every string orjson decoded from it is written back by JSON verbatim (JSON
forbids a raw quote or control character inside a string). Bodies with a
backslash are checked string by string instead. Base64 never needs escaping;
a partition key out of an aggregate is checked before it is spliced.

Measured here (2 busy cores) on a 10,000-record response of 100-byte
records: orjson's parse, this conversion and the message encoding cost about
2.0 us a record for a child that asked for record columns and 2.3 us for
record objects, against 2.6 to 2.7 us when the same parse feeds WireRecord
dicts (orjson.loads alone is 0.8 us; botocore's own parser, the
``fastGetRecords = false`` path, about 20 us). A response of 40 KPL
aggregates costs 1.6 us (columns) or 1.85 us (objects) per user record.
``bench/bench_relay.py`` has the whole daemon's figures.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from typing import Any, overload

import msgspec

from daemon.sequence import ExtendedSequenceNumber
from protocol._protobuf import WireFormatError, parse_aggregated_record
from protocol.aggregation import MAGIC, SubRecord, all_in_hash_range, effective_hash_key
from protocol.records import EncodedRecords, splice_columns_joined

#: Every aggregate's base64 starts with these 5 characters (the magic's first
#: 30 bits). The 6th depends on the next byte too: it is "g" ("84mawg") only
#: when that byte is below 0x10, as the usual 0x0A tag of field 1 is.
MAGIC_BASE64_PREFIX = "84maw"
_DIGEST_SIZE = 16
_NUMBER_TYPES = frozenset((int, float))
_NEEDS_ESCAPING = re.compile(r'[\x00-\x1f"\\]')
_md5 = hashlib.md5


class FastRecords(Sequence[dict[str, Any]]):
    """The ``Records`` of a GetRecords body the fast path parsed, as columns.

    Reads as the usual sequence of record dicts (so every caller of
    ``get_records`` sees the usual shape); the dicts are built only when
    someone reads an item, which the conversion for the child never does:
    it takes the columns, checked for type when they were made:

    * ``data``, ``sequence_numbers``, ``partition_keys``: the strings;
    * ``arrival_times``: epoch seconds (int or float);
    * ``data_text``: every ``data`` string joined (for cheap scans);
    * ``verbatim``: True when no string in these columns needs escaping in
      JSON (no ``"``, no backslash, no control character).
    """

    __slots__ = (
        "data",
        "sequence_numbers",
        "partition_keys",
        "arrival_times",
        "data_text",
        "verbatim",
        "_dicts",
    )

    def __init__(
        self,
        data: list[str],
        sequence_numbers: list[str],
        partition_keys: list[str],
        arrival_times: list[int | float],
        verbatim: bool,
        dicts: list[dict[str, Any]] | None = None,
    ) -> None:
        self.data = data
        self.sequence_numbers = sequence_numbers
        self.partition_keys = partition_keys
        self.arrival_times = arrival_times
        self.data_text = "".join(data)
        self.verbatim = verbatim
        self._dicts = dicts

    def _records(self) -> list[dict[str, Any]]:
        if self._dicts is None:
            self._dicts = [
                {
                    "SequenceNumber": sequence_number,
                    "ApproximateArrivalTimestamp": arrival,
                    "Data": data,
                    "PartitionKey": key,
                }
                for sequence_number, arrival, data, key in zip(
                    self.sequence_numbers,
                    self.arrival_times,
                    self.data,
                    self.partition_keys,
                    strict=True,
                )
            ]
        return self._dicts

    def __len__(self) -> int:
        return len(self.data)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self._records()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._records())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FastRecords | list | tuple):
            return self._records() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FastRecords({len(self)} records)"


def record_columns(records: list[Any], body: bytes) -> FastRecords | None:
    """``records`` (dicts) as :class:`FastRecords` when every record has all four fields
    with exactly the expected types; None otherwise (the caller then checks record by
    record)."""
    try:
        data = [record["Data"] for record in records]
        sequence_numbers = [record["SequenceNumber"] for record in records]
        partition_keys = [record["PartitionKey"] for record in records]
        arrival_times = [record["ApproximateArrivalTimestamp"] for record in records]
        # join raises TypeError unless every item is a str.
        texts = ("".join(data), "".join(sequence_numbers), "".join(partition_keys))
    except (KeyError, TypeError):
        return None
    if not {*map(type, arrival_times)} <= _NUMBER_TYPES:
        return None
    verbatim = b"\\" not in body or not any(map(_NEEDS_ESCAPING.search, texts))
    return FastRecords(data, sequence_numbers, partition_keys, arrival_times, verbatim, records)


class _Record(msgspec.Struct, gc=False):
    SequenceNumber: str
    ApproximateArrivalTimestamp: int | float
    Data: str
    PartitionKey: str


class _Body(msgspec.Struct):
    Records: list[_Record]
    NextShardIterator: str | None = None
    MillisBehindLatest: int | None = None
    ChildShards: list[Any] | None = None


_BODY_DECODER = msgspec.json.Decoder(_Body)
#: Bodies averaging more per record go the orjson way (see decode_get_records).
MSGSPEC_MAX_BYTES_PER_RECORD = 4096


def decode_get_records(body: bytes) -> dict[str, Any] | None:
    """A GetRecords body whose records all have the four fields, decoded straight into
    columns (no dict per record); None for any other body (then orjson decodes it).

    msgspec checks every type while it decodes, into structs it builds in C:
    about 0.35 us a record here against 0.95 us for orjson's dicts, which was
    a third of the daemon's CPU per plain record. Bodies with a backslash
    (an escape somewhere) are left to the orjson path, which checks them
    string by string.
    """
    if b"\\" in body:
        return None
    # msgspec's gain is one dict per record; on responses of a few large
    # records (KPL aggregates) it has none, and the whole daemon measured
    # more CPU with it (3.6 to 4.4 against 3.2 us per user record, cause not
    # found), so those keep the orjson route.
    records_in_body = body.count(b'"SequenceNumber"')
    if not records_in_body or len(body) > records_in_body * MSGSPEC_MAX_BYTES_PER_RECORD:
        return None
    try:
        decoded = _BODY_DECODER.decode(body)
    except msgspec.DecodeError:  # ValidationError included
        return None
    records = decoded.Records
    parsed: dict[str, Any] = {
        "Records": FastRecords(
            [record.Data for record in records],
            [record.SequenceNumber for record in records],
            [record.PartitionKey for record in records],
            [record.ApproximateArrivalTimestamp for record in records],
            verbatim=True,
        ),
        "NextShardIterator": decoded.NextShardIterator,
    }
    if decoded.MillisBehindLatest is not None:
        parsed["MillisBehindLatest"] = decoded.MillisBehindLatest
    if decoded.ChildShards is not None:
        parsed["ChildShards"] = decoded.ChildShards
    return parsed


def base64_decoded_size(text: str) -> int:
    """Bytes that standard, padded base64 ``text`` stands for, without decoding it."""
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    return len(text) * 3 // 4 - padding


def millis_text(arrival_times: Sequence[int | float]) -> list[str]:
    """Epoch milliseconds, as text, of epoch-second arrival times (``round(s * 1000)``).

    Records that arrived together share a timestamp, so each distinct one is
    converted once.
    """
    distinct: dict[int | float, str] = dict.fromkeys(arrival_times, "")
    for seconds in distinct:
        distinct[seconds] = str(round(seconds * 1000))
    return list(map(distinct.__getitem__, arrival_times))


_SUB_SEQUENCE_TEXTS = [str(n) for n in range(1024)]
_SUB_SEQUENCE_LOCK = threading.Lock()  # conversions run in several pool threads


def sub_sequence_texts(count: int) -> list[str]:
    """["0", "1", ... str(count - 1)], from a table that grows as needed."""
    table = _SUB_SEQUENCE_TEXTS
    if count > len(table):
        with _SUB_SEQUENCE_LOCK:
            if count > len(table):
                table += map(str, range(len(table), count))
    return table[:count]


@dataclass
class Aggregate:
    """The user records of one KPL aggregate, as columns (see :func:`aggregate_columns`)."""

    data: list[bytes]
    partition_keys: list[str]
    explicit_hash_keys: list[str | None] | None  # None: no record has one
    key_table: list[str]

    def in_hash_range(self, low: int, high: int) -> bool:
        """``protocol.aggregation.all_in_hash_range`` of these records."""
        if self.explicit_hash_keys is None:
            return all(low <= partition_key_hash(key) <= high for key in set(self.partition_keys))
        pairs = set(zip(self.partition_keys, self.explicit_hash_keys, strict=True))
        probes = [SubRecord(key, b"", hash_key, 0) for key, hash_key in pairs]
        return all_in_hash_range(probes, low, high)


@lru_cache(maxsize=16_384)
def partition_key_hash(partition_key: str) -> int:
    """``effective_hash_key`` of a partition key with no explicit hash key, cached: the
    producers behind a stream reuse their keys batch after batch, and hashing every
    distinct key of every aggregate was 15% of the daemon's CPU on aggregates."""
    return effective_hash_key(partition_key, None)


def aggregate_columns(blob: bytes) -> Aggregate | None:
    """The user records in ``blob``, or None when it is not a well-formed aggregate.

    Accepts and refuses exactly what ``protocol.aggregation.deaggregate`` does
    (a unit test holds the two together), without building a SubRecord per
    user record.
    """
    if len(blob) - len(MAGIC) <= _DIGEST_SIZE or blob[: len(MAGIC)] != MAGIC:
        return None
    body = blob[len(MAGIC) : -_DIGEST_SIZE]
    if _md5(body).digest() != blob[-_DIGEST_SIZE:]:
        return None
    try:
        key_table, hash_key_table, key_indexes, hash_key_by_record, data = parse_aggregated_record(
            body
        )
    except (IndexError, WireFormatError):
        return None
    if not data:
        return Aggregate([], [], None, key_table)
    if max(key_indexes) >= len(key_table):
        return None
    hash_keys: list[str | None] | None = None
    if hash_key_by_record:
        if max(hash_key_by_record.values()) >= len(hash_key_table):
            return None
        hash_keys = [None] * len(data)
        for position, index in hash_key_by_record.items():
            hash_keys[position] = hash_key_table[index]
    return Aggregate(data, list(map(key_table.__getitem__, key_indexes)), hash_keys, key_table)


@dataclass
class Spliced:
    """One response's records, encoded for the child (see :func:`splice_batch`)."""

    records: EncodedRecords
    byte_size: int
    last_sequence_number: str | None
    last_position: ExtendedSequenceNumber | None
    dropped_sequence_numbers: list[str] = field(default_factory=list)


def splice_batch(
    raw: FastRecords, hash_range: tuple[int, int] | None, columns: bool = False
) -> Spliced | None:
    """The child's records for one fast-parsed response, or None where this path does not
    apply (an empty response, strings that need escaping, a partition key in an aggregate
    that needs escaping): then convert record by record.

    Same results as ``daemon.conversion``'s record-by-record conversion with no
    checkpoint to skip through: plain records pass through as base64, aggregates
    become their user records (dropped whole when ``hash_range`` excludes any).
    ``columns``: splice the record-columns form (``protocol.records``).
    """
    data = raw.data
    if not data or not raw.verbatim:
        return None
    text = raw.data_text
    sequence_numbers = raw.sequence_numbers
    last = sequence_numbers[-1]
    if MAGIC_BASE64_PREFIX not in text or not any(
        map(str.startswith, data, repeat(MAGIC_BASE64_PREFIX))
    ):
        return Spliced(
            EncodedRecords.splice(
                data,
                raw.partition_keys,
                sequence_numbers,
                millis_text(raw.arrival_times),
                columns=columns,
            ),
            # Exact for well-formed base64 (lengths a multiple of 4, "=" only
            # as padding), which is all Kinesis sends.
            len(text) * 3 // 4 - text.count("="),
            last,
            ExtendedSequenceNumber(last, 0),
        )
    return _splice_with_aggregates(raw, hash_range, columns)


def _splice_with_aggregates(
    raw: FastRecords, hash_range: tuple[int, int] | None, columns: bool
) -> Spliced | None:
    # Each record's base64 followed by "\n", in chunks: an aggregate's user
    # records are encoded in one pass (b2a_base64 ends each with "\n"), and
    # the data column is cut from the whole text at once, with no string per
    # record in the record-columns form.
    data_lines: list[bytes] = []
    out_keys: list[str] = []
    out_sequences: list[str] = []
    out_millis: list[str] = []
    out_subs: list[str] = []
    dropped: list[str] = []
    size = 0
    last_sub = 0
    rows = zip(
        raw.data,
        raw.partition_keys,
        raw.sequence_numbers,
        millis_text(raw.arrival_times),
        strict=True,
    )
    for text, key, sequence_number, millis in rows:
        aggregate = None
        if text.startswith(MAGIC_BASE64_PREFIX):
            try:
                aggregate = aggregate_columns(binascii.a2b_base64(text))
            except (binascii.Error, ValueError):
                aggregate = None  # not base64 after all: a plain record
        if aggregate is None:
            data_lines.append(text.encode("ascii") + b"\n")  # verbatim: ASCII, no newline
            out_keys.append(key)
            out_sequences.append(sequence_number)
            out_millis.append(millis)
            out_subs.append("0")
            size += base64_decoded_size(text)
            last_sub = 0
            continue
        if any(map(_NEEDS_ESCAPING.search, aggregate.key_table)):
            return None
        if hash_range is not None and not aggregate.in_hash_range(*hash_range):
            dropped.append(sequence_number)
            continue
        count = len(aggregate.data)
        if not count:
            continue
        data_lines.append(b"".join(map(binascii.b2a_base64, aggregate.data)))
        out_keys += aggregate.partition_keys
        out_sequences += repeat(sequence_number, count)
        out_millis += repeat(millis, count)
        out_subs += sub_sequence_texts(count)
        size += sum(map(len, aggregate.data))
        last_sub = count - 1
    lines = b"".join(data_lines)[:-1]  # without the last newline
    count = len(out_sequences)
    if columns:
        records = EncodedRecords(
            splice_columns_joined(
                lines.replace(b"\n", b'","'), count, out_keys, out_sequences, out_millis, out_subs
            ),
            count,
            columns=True,
        )
    else:
        out_data = lines.decode("ascii").split("\n") if count else []
        records = EncodedRecords.splice(out_data, out_keys, out_sequences, out_millis, out_subs)
    last_position = ExtendedSequenceNumber(out_sequences[-1], last_sub) if out_sequences else None
    return Spliced(records, size, raw.sequence_numbers[-1], last_position, dropped)
