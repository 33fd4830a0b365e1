"""Protobuf (proto2) wire codec for the KPL's AggregatedRecord message.

Owns the bytes-level work behind ``protocol.aggregation`` and no public API:
varint encoding with precomputed tables, varint decoding, skipping unknown
fields of any wire type (groups included), and parsing an AggregatedRecord
body into its key tables and records. Parsing raises :class:`WireFormatError`
for malformed input; reading past the end of the buffer surfaces as
``IndexError``, which the caller turns into a format error once for the
whole message instead of paying for a bounds check on every byte.

The rules follow protobuf-java, which the KCL parses aggregates with: field
number 0, wire types 6 and 7, an END_GROUP without its START_GROUP, varints
longer than 10 bytes and missing required fields (Record's partition key
index and data, Tag's key) are malformed; a known field number with an
unexpected wire type is an unknown field; the last value of a singular field
wins.
"""

from __future__ import annotations

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LENGTH_DELIMITED = 2
WIRE_START_GROUP = 3
WIRE_END_GROUP = 4
WIRE_FIXED32 = 5

MAX_FIELD_NUMBER = (1 << 29) - 1
# protobuf-java's default recursion limit; bounds the group-skipping stack.
MAX_GROUP_DEPTH = 100

# Tags (field number << 3 | wire type) of the schema's fields.
PK_TABLE_TAG = 0x0A  # AggregatedRecord.partition_key_table, Tag.key
EHK_TABLE_TAG = 0x12  # AggregatedRecord.explicit_hash_key_table, Tag.value
RECORDS_TAG = 0x1A  # AggregatedRecord.records
PK_INDEX_TAG = 0x08  # Record.partition_key_index
EHK_INDEX_TAG = 0x10  # Record.explicit_hash_key_index
DATA_TAG = 0x1A  # Record.data: the same byte as RECORDS_TAG
TAGS_TAG = 0x22  # Record.tags

# Every value below this has a precomputed encoding; it covers all one- and
# two-byte varints, which is every key index and every record length below
# 16 KiB.
TABLE_LIMIT = 1 << 14


class WireFormatError(ValueError):
    """The bytes are not a well-formed protobuf message of the expected shape."""


def _encode_varint_slow(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"varints here are unsigned, got {value}")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


VARINTS: tuple[bytes, ...] = tuple(_encode_varint_slow(i) for i in range(TABLE_LIMIT))


def encode_varint(value: int) -> bytes:
    """The base-128 varint encoding of a non-negative integer."""
    if 0 <= value < TABLE_LIMIT:
        return VARINTS[value]
    return _encode_varint_slow(value)


def varint_size(value: int) -> int:
    """How many bytes ``encode_varint(value)`` takes, without building it."""
    if value < 0x80:
        return 1
    return (value.bit_length() + 6) // 7


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the varint starting at ``pos``; return ``(value, next_pos)``.

    Raises ``IndexError`` when the buffer ends inside the varint.
    """
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireFormatError("varint longer than 10 bytes")


def check_tag(tag: int) -> None:
    """Reject tags no protobuf encoder writes (field 0, out-of-range numbers)."""
    field_number = tag >> 3
    if field_number == 0 or field_number > MAX_FIELD_NUMBER:
        raise WireFormatError(f"invalid field number {field_number}")


def skip_field(buf: bytes, pos: int, tag: int, limit: int) -> int:
    """Skip the value of a field whose ``tag`` was just read; return the new
    position, which is never beyond ``limit`` (the end of the enclosing
    message)."""
    check_tag(tag)
    wire_type = tag & 7
    if wire_type == WIRE_VARINT:
        _, pos = read_varint(buf, pos)
    elif wire_type == WIRE_LENGTH_DELIMITED:
        length, pos = read_varint(buf, pos)
        pos += length
    elif wire_type == WIRE_FIXED64:
        pos += 8
    elif wire_type == WIRE_FIXED32:
        pos += 4
    elif wire_type == WIRE_START_GROUP:
        pos = _skip_group(buf, pos, tag >> 3, limit)
    else:
        # A stray END_GROUP ends the message early in protobuf-java, which then
        # fails its last-tag check; wire types 6 and 7 do not exist.
        raise WireFormatError(f"unexpected wire type {wire_type}")
    if pos > limit:
        raise WireFormatError("field runs past the end of its message")
    return pos


def _skip_group(buf: bytes, pos: int, field_number: int, limit: int) -> int:
    # Iterative so that hostile nesting cannot exhaust the Python stack.
    open_groups = [field_number]
    while open_groups:
        if pos >= limit:
            raise WireFormatError("group not closed before the end of its message")
        tag, pos = read_varint(buf, pos)
        check_tag(tag)
        wire_type = tag & 7
        if wire_type == WIRE_END_GROUP:
            if tag >> 3 != open_groups[-1]:
                raise WireFormatError("END_GROUP does not match its START_GROUP")
            open_groups.pop()
        elif wire_type == WIRE_START_GROUP:
            open_groups.append(tag >> 3)
            if len(open_groups) > MAX_GROUP_DEPTH:
                raise WireFormatError("groups nested too deeply")
        else:
            pos = skip_field(buf, pos, tag, limit)
    return pos


def _check_tag_message(buf: bytes, pos: int, stop: int) -> None:
    # Tag.key is required; protobuf-java rejects the whole aggregate without it.
    has_key = False
    while pos < stop:
        tag = buf[pos]
        pos += 1
        if tag > 0x7F:
            tag, pos = read_varint(buf, pos - 1)
        if tag in (PK_TABLE_TAG, EHK_TABLE_TAG):
            has_key = has_key or tag == PK_TABLE_TAG
            length, pos = read_varint(buf, pos)
            pos += length
        else:
            pos = skip_field(buf, pos, tag, stop)
    if pos != stop:
        raise WireFormatError("tag runs past its end")
    if not has_key:
        raise WireFormatError("tag without its required key")


def _parse_record(body: bytes, pos: int, end: int) -> tuple[int, int, bytes, int]:
    """The Record whose length prefix starts at ``pos``, in any valid encoding:
    ``(partition key index, explicit hash key index or -1, data, next pos)``."""
    length, pos = read_varint(body, pos)
    stop = pos + length
    if stop > end:
        raise WireFormatError("record runs past the end of the aggregate")
    pk_index = ehk_index = -1
    data = None
    while pos < stop:
        tag, pos = read_varint(body, pos)
        if tag == PK_INDEX_TAG:
            pk_index, pos = read_varint(body, pos)
        elif tag == DATA_TAG:
            length, pos = read_varint(body, pos)
            data = body[pos : pos + length]
            pos += length
        elif tag == EHK_INDEX_TAG:
            ehk_index, pos = read_varint(body, pos)
        elif tag == TAGS_TAG:
            length, pos = read_varint(body, pos)
            if pos + length > stop:
                raise WireFormatError("tag runs past the end of its record")
            _check_tag_message(body, pos, pos + length)
            pos += length
        else:
            pos = skip_field(body, pos, tag, stop)
    if pos != stop:
        raise WireFormatError("record field runs past the end of its record")
    if pk_index < 0 or data is None:
        raise WireFormatError("record without its required partition key index or data")
    return pk_index, ehk_index, data, stop


def parse_aggregated_record(
    body: bytes,
) -> tuple[list[str], list[str], list[int], dict[int, int], list[bytes]]:
    """Parse the AggregatedRecord in ``body`` (the bytes between magic and
    MD5) into the key tables, each record's partition key index and data,
    and the explicit hash key index of the records (by position) that have
    one. Key strings that are not UTF-8 decode with U+FFFD, as in Java.

    The tags are literals here, not the named constants, because this loop
    runs once per user record: 0x1A records / data, 0x08 partition key index,
    0x10 explicit hash key index, 0x0A / 0x12 the key tables.
    """
    pk_table: list[str] = []
    ehk_table: list[str] = []
    pk_indices: list[int] = []
    ehk_by_record: dict[int, int] = {}
    datas: list[bytes] = []
    add_pk_index = pk_indices.append
    add_data = datas.append
    pos = 0
    end = len(body)
    while pos < end:
        tag = body[pos]
        pos += 1
        if tag > 0x7F:
            tag, pos = read_varint(body, pos - 1)
        if tag == 0x1A:
            # Fast path for the layout every KPL-compatible encoder writes,
            # "L 08 K [10 E] 1a N data" with one- or two-byte varints, inlined
            # because a call per field would double the cost. Every byte it
            # reads lies before the final ``p``, and ``p + N == stop`` puts
            # them all inside the record; any other shape, and any check that
            # fails, goes to _parse_record.
            p = pos
            stop = ehk_index = -1
            b0 = body[p]
            if b0 < 0x80:
                p += 1
                stop = p + b0
            elif body[p + 1] < 0x80:
                p += 2
                stop = p + ((b0 & 0x7F) | (body[p - 1] << 7))
            if pos < stop <= end and body[p] == 0x08:
                pk_index = body[p + 1]
                p += 2
                if pk_index > 0x7F:
                    b1 = body[p]
                    pk_index = (pk_index & 0x7F) | (b1 << 7) if b1 < 0x80 else -1
                    p += 1
                if body[p] == 0x10:
                    ehk_index = body[p + 1]
                    p += 2
                    if ehk_index > 0x7F:
                        b1 = body[p]
                        ehk_index = (ehk_index & 0x7F) | (b1 << 7) if b1 < 0x80 else -2
                        p += 1
                if pk_index >= 0 and ehk_index >= -1 and body[p] == 0x1A:
                    length = body[p + 1]
                    p += 2
                    if length > 0x7F:
                        b1 = body[p]
                        length = (length & 0x7F) | (b1 << 7) if b1 < 0x80 else -1
                        p += 1
                    if length >= 0 and p + length == stop:
                        if ehk_index >= 0:
                            ehk_by_record[len(datas)] = ehk_index
                        add_pk_index(pk_index)
                        add_data(body[p:stop])
                        pos = stop
                        continue
            pk_index, ehk_index, data, pos = _parse_record(body, pos, end)
            if ehk_index >= 0:
                ehk_by_record[len(datas)] = ehk_index
            add_pk_index(pk_index)
            add_data(data)
        elif tag == 0x0A or tag == 0x12:  # noqa: SIM109 (a tuple would be built per key)
            # Encoders write each table as one run; read the run in one loop.
            add_key = (pk_table if tag == 0x0A else ehk_table).append
            while True:
                length = body[pos]
                pos += 1
                if length > 0x7F:
                    length, pos = read_varint(body, pos - 1)
                add_key(body[pos : pos + length].decode("utf-8", "replace"))
                pos += length
                if pos >= end or body[pos] != tag:
                    break
                pos += 1
            if pos > end:
                raise WireFormatError("key runs past the end of the aggregate")
        else:
            pos = skip_field(body, pos, tag, end)
    return pk_table, ehk_table, pk_indices, ehk_by_record, datas
