"""GetRecords' records turned into the child's records: deaggregated, filtered, encoded.

Two routes with the same results. Records parsed by the fast GetRecords path
(``fastGetRecords``, see ``daemon.kinesis_client``) come with their fields as
columns, and ``daemon.fast_records`` splices the child's JSON straight from
them, in the form the child asked for: the batch's ``records`` is then a
``protocol.records.EncodedRecords`` (a read-only sequence of WireRecords that
``ProcessRecords.encode`` copies in as it is). Everything else -- boto3's
records, the first response after a checkpoint, strings that need escaping --
is converted one record at a time into WireRecord dicts.

Pure logic: ``daemon.retrieval`` calls :func:`convert_records` in its thread
pool for every response.
"""

from __future__ import annotations

import binascii
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.fast_records import (
    MAGIC_BASE64_PREFIX,
    FastRecords,
    base64_decoded_size,
    splice_batch,
)
from daemon.sequence import ExtendedSequenceNumber
from protocol.aggregation import MAGIC, SubRecord, all_in_hash_range, deaggregate
from protocol.records import WireRecord, wire_record

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_MILLISECOND = datetime.timedelta(milliseconds=1)
_b64encode = binascii.b2a_base64


def arrival_millis(value: object) -> int:
    """Epoch milliseconds of an arrival time: a datetime (boto3) or epoch seconds (JSON)."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return round((value - _EPOCH) / _MILLISECOND)
    if isinstance(value, int | float):
        return round(value * 1000)
    return 0


@dataclass
class Converted:
    """Records of one response, converted; see :func:`convert_records`."""

    records: Sequence[WireRecord] = field(default_factory=list)
    byte_size: int = 0
    dropped_sequence_numbers: list[str] = field(default_factory=list)
    # The last Kinesis record of the response, delivered or not: where an
    # iterator resumes after expiry.
    last_sequence_number: str | None = None
    # That of the last record in ``records`` (None when it is empty).
    last_position: ExtendedSequenceNumber | None = None
    # Kinesis records in the response (before deaggregation and skipping).
    kinesis_records: int = 0


def convert_records(
    raw: Sequence[Mapping[str, Any]],
    *,
    skip_through: ExtendedSequenceNumber | None = None,
    hash_range: tuple[int, int] | None = None,
    record_columns: bool = False,
) -> Converted:
    """Turn GetRecords' records into the child's WireRecords, deaggregating.

    ``Data`` may be bytes (boto3) or base64 text (the fast path, passed on
    untouched unless it is an aggregate). Records at or below ``skip_through``
    (a checkpoint; sub-sequence included) are dropped. With ``hash_range``,
    an aggregate holding any sub-record outside it is dropped whole.

    Records parsed by the fast path (:class:`FastRecords`) come out as
    ``EncodedRecords`` (JSON text spliced from their columns, in the
    record-columns form when ``record_columns``; see ``daemon.fast_records``)
    unless a checkpoint is to be skipped through.
    """
    if type(raw) is FastRecords and skip_through is None:
        spliced = splice_batch(raw, hash_range, record_columns)
        if spliced is not None:
            return Converted(
                spliced.records,
                spliced.byte_size,
                spliced.dropped_sequence_numbers,
                spliced.last_sequence_number,
                spliced.last_position,
                len(raw),
            )
    out = _convert_each(raw, skip_through, hash_range)
    out.kinesis_records = len(raw)
    if out.records:
        last = out.records[-1]
        out.last_position = ExtendedSequenceNumber(
            last["sequenceNumber"], last["subSequenceNumber"]
        )
    return out


def _deaggregate_base64(text: str) -> list[SubRecord] | None:
    try:
        blob = binascii.a2b_base64(text)
    except (binascii.Error, ValueError):
        return None  # not base64 after all: passed on as it came
    return deaggregate(blob)


def _convert_each(
    raw: Sequence[Mapping[str, Any]],
    skip_through: ExtendedSequenceNumber | None,
    hash_range: tuple[int, int] | None,
) -> Converted:
    """convert_records, one record at a time (boto3's records, aggregates, skips)."""
    out = Converted()
    records: list[WireRecord] = []
    out.records = records
    append = records.append
    size = 0
    skip_seq = int(skip_through.sequence_number) if skip_through is not None else None
    skip_sub_at_checkpoint = skip_through.sub_sequence_number if skip_through is not None else -1
    for record in raw:
        seq: str = record["SequenceNumber"]
        out.last_sequence_number = seq
        skip_sub = -1  # sub-records up to this index were processed already
        if skip_seq is not None:
            number = int(seq)
            if number < skip_seq:
                continue
            if number == skip_seq:
                skip_sub = skip_sub_at_checkpoint
            else:
                skip_seq = None  # sequence numbers only grow: no more checks needed
        data = record["Data"]
        arrival = arrival_millis(record.get("ApproximateArrivalTimestamp"))
        key = record.get("PartitionKey") or ""
        if type(data) is str:
            subs = _deaggregate_base64(data) if data.startswith(MAGIC_BASE64_PREFIX) else None
            if subs is None:
                if skip_sub < 0:
                    append(wire_record(data, key, seq, arrival))
                    size += base64_decoded_size(data)
                continue
        else:
            subs = deaggregate(data) if data[:4] == MAGIC else None
            if subs is None:
                if skip_sub < 0:
                    append(
                        wire_record(
                            _b64encode(data, newline=False).decode("ascii"), key, seq, arrival
                        )
                    )
                    size += len(data)
                continue
        if hash_range is not None and not all_in_hash_range(subs, *hash_range):
            out.dropped_sequence_numbers.append(seq)
            continue
        for sub in subs:
            index = sub.sub_sequence_number
            if index > skip_sub:
                encoded = _b64encode(sub.data, newline=False).decode("ascii")
                append(wire_record(encoded, sub.partition_key, seq, arrival, index))
                size += len(sub.data)
    out.byte_size = size
    return out
