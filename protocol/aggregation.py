"""The KPL aggregated-record format: encoding, exact sizing, deaggregation.

Owns the wire format of ``shared/spec/aggregation.md`` and the facts that
come with it (effective hash keys, the outer Kinesis record of an aggregate,
the post-reshard hash-range check of ``lease-table.md``). Pure logic, no I/O,
and no protobuf library: the schema is tiny, so it is encoded here and parsed
by the hand-written wire codec in ``protocol._protobuf``, which is also what
makes both directions faster than aws-kinesis-agg's generated classes
(``bench/bench_aggregation.py``).

Format: ``MAGIC | AggregatedRecord (proto2) | MD5(AggregatedRecord)``::

    AggregatedRecord: 1 partition_key_table (repeated string)
                      2 explicit_hash_key_table (repeated string)
                      3 records (repeated Record)
    Record:           1 partition_key_index (uint64, required)
                      2 explicit_hash_key_index (uint64, optional)
                      3 data (bytes, required)
                      4 tags (repeated Tag: 1 key string required, 2 value string)

Decoding follows the KCL (protobuf-java; details in ``protocol._protobuf``):
unknown fields are skipped, missing required fields are a parse error, and
key strings that are not UTF-8 decode with U+FFFD. Anything that is not a
well-formed aggregate makes :func:`deaggregate` return ``None`` (the caller
passes the record through unchanged); :func:`decode_aggregate` raises
:class:`AggregateFormatError` naming the reason instead, for logging.
One deliberate difference: an out-of-range key index makes the whole record
a pass-through, where the KCL logs an error and keeps the sub-records it had
already emitted.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat

from protocol._protobuf import (
    DATA_TAG,
    EHK_INDEX_TAG,
    EHK_TABLE_TAG,
    PK_INDEX_TAG,
    PK_TABLE_TAG,
    RECORDS_TAG,
    TABLE_LIMIT,
    VARINTS,
    WireFormatError,
    encode_varint,
    parse_aggregated_record,
)

__all__ = [
    "AGGREGATE_PARTITION_KEY",
    "DEFAULT_MAX_COUNT",
    "DEFAULT_MAX_SIZE",
    "MAGIC",
    "MAX_HASH_KEY",
    "OVERHEAD",
    "AggregateFormatError",
    "Aggregator",
    "SubRecord",
    "UserRecord",
    "aggregated_size",
    "all_in_hash_range",
    "decode_aggregate",
    "deaggregate",
    "effective_hash_key",
    "encode_aggregate",
    "outer_record",
    "validate_explicit_hash_key",
]

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_SIZE = 16
OVERHEAD = len(MAGIC) + DIGEST_SIZE
MAX_HASH_KEY = (1 << 128) - 1
# KPL defaults: AggregationMaxSize and AggregationMaxCount.
DEFAULT_MAX_SIZE = 51200
DEFAULT_MAX_COUNT = 4294967295
# The KPL sends every multi-record aggregate under this partition key; the
# explicit hash key, not this key, decides the shard.
AGGREGATE_PARTITION_KEY = "a"

# Field heads (tag byte + varint) looked up rather than built on the hot
# path. One table serves both AggregatedRecord.records and Record.data, whose
# heads are the same bytes; data shorter than _FAST_DATA_LIMIT keeps the
# record's own length inside that table too.
_FIELD3 = tuple(bytes((RECORDS_TAG,)) + v for v in VARINTS)
_FAST_DATA_LIMIT = TABLE_LIMIT - 64
# Key tables and key indices: 1024 covers every partition key (at most 256
# characters, so 1024 UTF-8 bytes) and most aggregates' key counts.
_SMALL = 1024
_PK_ENTRY_HEADS = tuple(bytes((PK_TABLE_TAG,)) + v for v in VARINTS[:_SMALL])
_EHK_ENTRY_HEADS = tuple(bytes((EHK_TABLE_TAG,)) + v for v in VARINTS[:_SMALL])
_PK_INDEX_FIELDS = tuple(bytes((PK_INDEX_TAG,)) + v for v in VARINTS[:_SMALL])
_EHK_INDEX_FIELDS = tuple(bytes((EHK_INDEX_TAG,)) + v for v in VARINTS[:_SMALL])


def _head(tag: int, value: int) -> bytes:
    """A one-byte tag followed by a varint (a length or a key index)."""
    return bytes((tag,)) + encode_varint(value)


_md5 = hashlib.md5


class AggregateFormatError(ValueError):
    """The bytes are not a KPL aggregate; the record passes through as it is."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One record as a producer's user hands it over."""

    partition_key: str
    data: bytes
    explicit_hash_key: str | None = None


@dataclass(frozen=True, slots=True)
class SubRecord:
    """One user record recovered from an aggregate; it shares the outer
    record's sequence number and is told apart by ``sub_sequence_number``."""

    partition_key: str
    data: bytes
    explicit_hash_key: str | None
    sub_sequence_number: int


def validate_explicit_hash_key(value: str) -> int:
    """The integer an explicit hash key stands for; ``ValueError`` unless it
    is a string of ASCII decimal digits for a value in ``0..2**128-1``."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise ValueError(f"explicit hash key must be a decimal integer, got {value!r}")
    # Bounding the digits first keeps int() cheap on hostile input.
    if len(value.lstrip("0")) > 39 or int(value) > MAX_HASH_KEY:
        raise ValueError(f"explicit hash key must be at most 2**128-1, got {value}")
    return int(value)


def effective_hash_key(partition_key: str, explicit_hash_key: str | None) -> int:
    """The hash key Kinesis routes a record by: the explicit hash key when
    given, else MD5 of the UTF-8 partition key as a big-endian 128-bit int."""
    if explicit_hash_key is not None:
        return validate_explicit_hash_key(explicit_hash_key)
    return int.from_bytes(_md5(partition_key.encode("utf-8")).digest(), "big")


class Aggregator:
    """Collects user records into one aggregate while keeping its exact
    encoded size, so "does the next record still fit?" costs O(1).

    ``size_bytes`` always equals ``len(encode())``. An empty aggregator
    accepts any record, even one larger than ``max_size``: such a record then
    goes out alone (and :meth:`outer_record` sends a lone record raw), which
    is what the KPL does; a caller that flushes whenever :meth:`try_add`
    says no therefore never loops. Records are not validated here: check
    explicit hash keys with :func:`validate_explicit_hash_key` on arrival.
    Not thread-safe.
    """

    __slots__ = (
        "max_size",
        "max_count",
        "_pk_fields",
        "_ehk_fields",
        "_pk_table",
        "_ehk_table",
        "_pieces",
        "_records",
        "_size",
        "_encoded",
    )

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, max_count: int = DEFAULT_MAX_COUNT):
        if max_size < 1 or max_count < 1:
            raise ValueError(f"max_size and max_count must be positive: {max_size}, {max_count}")
        self.max_size = max_size
        self.max_count = max_count
        # key -> its encoded index field (tag byte + varint index).
        self._pk_fields: dict[str, bytes] = {}
        self._ehk_fields: dict[str, bytes] = {}
        self._pk_table: list[bytes] = []
        self._ehk_table: list[bytes] = []
        # Alternating record headers and data, ready for one join.
        self._pieces: list[bytes] = []
        self._records: list[UserRecord] = []
        self._size = OVERHEAD
        self._encoded: bytes | None = None

    @property
    def size_bytes(self) -> int:
        """Exact length of :meth:`encode` (magic and MD5 included)."""
        return self._size

    @property
    def count(self) -> int:
        return len(self._records)

    @property
    def records(self) -> tuple[UserRecord, ...]:
        """The records added since the last :meth:`clear`, in order."""
        return tuple(self._records)

    def try_add(self, record: UserRecord) -> bool:
        """Add ``record`` unless that would pass ``max_size`` or ``max_count``
        (then nothing changes, and the caller flushes and retries)."""
        pk = record.partition_key
        pk_fields = self._pk_fields
        pk_field = pk_fields.get(pk)
        if pk_field is None:
            raw = pk.encode("utf-8")
            size = len(raw)
            pk_entry = (_PK_ENTRY_HEADS[size] if size < _SMALL else _head(PK_TABLE_TAG, size)) + raw
            index = len(pk_fields)
            pk_field = _PK_INDEX_FIELDS[index] if index < _SMALL else _head(PK_INDEX_TAG, index)
            added = len(pk_entry)
        else:
            pk_entry = None
            added = 0
        ehk = record.explicit_hash_key
        new_ehk = None
        if ehk is None:
            keys = pk_field
        else:
            ehk_field = self._ehk_fields.get(ehk)
            if ehk_field is None:
                raw = ehk.encode("utf-8")
                size = len(raw)
                ehk_entry = (
                    _EHK_ENTRY_HEADS[size] if size < _SMALL else _head(EHK_TABLE_TAG, size)
                ) + raw
                index = len(self._ehk_fields)
                ehk_field = (
                    _EHK_INDEX_FIELDS[index] if index < _SMALL else _head(EHK_INDEX_TAG, index)
                )
                new_ehk = (ehk, ehk_field, ehk_entry)
                added += len(ehk_entry)
            keys = pk_field + ehk_field
        data = record.data
        n = len(data)
        if n < _FAST_DATA_LIMIT:
            # Record length = keys + data tag and its 1- or 2-byte length + data.
            header = _FIELD3[len(keys) + n + (2 if n < 0x80 else 3)] + keys + _FIELD3[n]
        else:
            data_head = _head(DATA_TAG, n)
            header = _head(RECORDS_TAG, len(keys) + len(data_head) + n) + keys + data_head
        added += len(header) + n
        records = self._records
        if records and (self._size + added > self.max_size or len(records) >= self.max_count):
            return False
        if pk_entry is not None:
            pk_fields[pk] = pk_field
            self._pk_table.append(pk_entry)
        if new_ehk is not None:
            self._ehk_fields[new_ehk[0]] = new_ehk[1]
            self._ehk_table.append(new_ehk[2])
        self._pieces += (header, data)
        records.append(record)
        self._size += added
        self._encoded = None
        return True

    def encode(self) -> bytes:
        """The aggregate: magic, protobuf, MD5 of the protobuf."""
        if self._encoded is None:
            body = b"".join(self._pk_table + self._ehk_table + self._pieces)
            self._encoded = b"".join((MAGIC, body, _md5(body).digest()))
        return self._encoded

    def outer_record(self) -> tuple[str, bytes, str | None]:
        """``(partition_key, data, explicit_hash_key)`` of the Kinesis record
        that carries these records; see :func:`outer_record`."""
        records = self._records
        if len(records) != 1:
            return _outer_of_aggregate(records, self.encode)
        return _outer_of_single(records[0])

    def clear(self) -> None:
        self._pk_fields = {}
        self._ehk_fields = {}
        self._pk_table = []
        self._ehk_table = []
        self._pieces = []
        self._records = []
        self._size = OVERHEAD
        self._encoded = None


def _unbounded(records: Iterable[UserRecord]) -> Aggregator:
    aggregator = Aggregator(max_size=1 << 62, max_count=1 << 62)
    add = aggregator.try_add
    for record in records:
        add(record)
    return aggregator


def encode_aggregate(records: Sequence[UserRecord]) -> bytes:
    """All of ``records`` as one aggregate, whatever its size."""
    return _unbounded(records).encode()


def aggregated_size(records: Iterable[UserRecord]) -> int:
    """``len(encode_aggregate(records))``, computed without encoding."""
    return _unbounded(records).size_bytes


def _outer_of_single(record: UserRecord) -> tuple[str, bytes, str | None]:
    ehk = record.explicit_hash_key
    if ehk is not None:
        # Canonical form: the Kinesis API rejects leading zeros.
        ehk = str(validate_explicit_hash_key(ehk))
    return record.partition_key, record.data, ehk


def _outer_of_aggregate(
    records: Sequence[UserRecord], encode: Callable[[], bytes]
) -> tuple[str, bytes, str | None]:
    if not records:
        raise ValueError("an outer record needs at least one user record")
    first = records[0]
    hash_key = effective_hash_key(first.partition_key, first.explicit_hash_key)
    return AGGREGATE_PARTITION_KEY, encode(), str(hash_key)


def outer_record(records: Sequence[UserRecord]) -> tuple[str, bytes, str | None]:
    """``(partition_key, data, explicit_hash_key)`` of the Kinesis record
    carrying ``records``, as the KPL builds it.

    A lone record goes raw, under its own keys. Two or more go as an
    aggregate under partition key ``"a"`` with the first record's effective
    hash key (decimal) as explicit hash key, so the aggregate lands on the
    shard its records were predicted for.
    """
    if len(records) == 1:
        return _outer_of_single(records[0])
    return _outer_of_aggregate(records, lambda: encode_aggregate(records))


# --- decoding -------------------------------------------------------------

# Frozen dataclasses set each field through object.__setattr__ in __init__,
# which costs about 1.5 us per sub-record. Setting the slots through their
# descriptors, mapped over the whole batch, yields equal objects in a third
# of the time. SubRecord has no __post_init__ for this to skip.
_new_object = object.__new__


def _slot_setter(name: str) -> Callable[[SubRecord, object], None]:
    setter: Callable[[SubRecord, object], None] = vars(SubRecord)[name].__set__
    return setter


_set_partition_key = _slot_setter("partition_key")
_set_data = _slot_setter("data")
_set_explicit_hash_key = _slot_setter("explicit_hash_key")
_set_sub_sequence_number = _slot_setter("sub_sequence_number")
_consume: Callable[[Iterable[object]], None] = collections.deque[object](maxlen=0).extend


def decode_aggregate(data: bytes | bytearray | memoryview) -> list[SubRecord]:
    """The user records inside an aggregate, in order; raises
    :class:`AggregateFormatError` saying why when ``data`` is not one."""
    if len(data) < len(MAGIC):
        raise AggregateFormatError("shorter than the magic")
    if data[:4] != MAGIC:
        raise AggregateFormatError("no aggregate magic")
    if len(data) - len(MAGIC) <= DIGEST_SIZE:
        raise AggregateFormatError("nothing after the magic but a digest")
    body = bytes(data[4:-DIGEST_SIZE])
    if _md5(body).digest() != bytes(data[-DIGEST_SIZE:]):
        raise AggregateFormatError("MD5 mismatch")
    try:
        pk_table, ehk_table, pk_indices, ehk_by_record, datas = parse_aggregated_record(body)
    except IndexError as error:
        raise AggregateFormatError("protobuf truncated") from error
    except WireFormatError as error:
        raise AggregateFormatError(f"protobuf parse error: {error}") from error
    count = len(datas)
    if not count:
        return []
    if max(pk_indices) >= len(pk_table):
        raise AggregateFormatError("partition key index out of range")
    ehk_values: Iterable[str | None]
    if ehk_by_record:
        if max(ehk_by_record.values()) >= len(ehk_table):
            raise AggregateFormatError("explicit hash key index out of range")
        values: list[str | None] = [None] * count
        for position, index in ehk_by_record.items():
            values[position] = ehk_table[index]
        ehk_values = values
    else:
        ehk_values = repeat(None)
    records: list[SubRecord] = list(map(_new_object, repeat(SubRecord, count)))
    _consume(map(_set_partition_key, records, map(pk_table.__getitem__, pk_indices)))
    _consume(map(_set_data, records, datas))
    _consume(map(_set_explicit_hash_key, records, ehk_values))
    _consume(map(_set_sub_sequence_number, records, range(count)))
    return records


def deaggregate(data: bytes | bytearray | memoryview) -> list[SubRecord] | None:
    """The user records inside an aggregate, or ``None`` when ``data`` is not
    one (too short, wrong magic, no room for a digest, MD5 mismatch, protobuf
    error, key index out of range): the record then passes through as it is.
    Never raises for any bytes."""
    try:
        return decode_aggregate(data)
    except AggregateFormatError:
        return None


def all_in_hash_range(
    records: Iterable[SubRecord], starting_hash_key: int, ending_hash_key: int
) -> bool:
    """Whether every sub-record's effective hash key lies in the shard's
    range. After a reshard a parent shard can hold aggregates meant for a
    child; the KCL drops such an aggregate whole, so callers do too when this
    is False. A sub-record whose explicit hash key is not a valid hash key
    cannot belong to any shard and counts as outside."""
    seen: set[tuple[str, str | None]] = set()
    for record in records:
        keys = (record.partition_key, record.explicit_hash_key)
        if keys in seen:
            continue
        seen.add(keys)
        try:
            hash_key = effective_hash_key(*keys)
        except ValueError:
            return False
        if hash_key < starting_hash_key or hash_key > ending_hash_key:
            return False
    return True
