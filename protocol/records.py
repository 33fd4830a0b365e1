"""Record objects of ``processRecords`` and the two ways they travel: objects or columns.

The official protocol sends one JSON object per record (:class:`WireRecord`,
in the official daemon's field order, ``action`` last). This module builds
that array without a dict per record (:func:`splice_records`), and owns the
record-columns extension, which sends the same values as five lists.

Record-columns extension
------------------------
A ``processRecords`` line carries one JSON object per record, six keys each;
decoding those objects is most of what a child spends on a batch (orjson
builds the 10,000 dicts of a 10,000-record batch about four times slower than
the same values as five lists). Children that say so get the same values as
columns instead:

* ``initialize`` carries ``"recordColumns": true`` (the daemon offers it);
* a child that wants columns answers that ``initialize`` with
  ``{"action":"status","responseFor":"initialize","recordColumns":true}``;
* from then on, until the child exits, its ``processRecords`` messages hold
  ``"recordColumns": {"data": [...], "partitionKey": [...],
  "sequenceNumber": [...], "approximateArrivalTimestamp": [...],
  "subSequenceNumber": [...]}`` (five lists of equal length, record i being
  item i of each) in place of ``"records"``.

The official child libraries never answer with ``recordColumns``, so they
keep receiving ``records``; our SDK opts in only when the daemon offered it,
because the official daemon may refuse unknown fields in a status.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypedDict, overload

import orjson


class WireRecord(TypedDict):
    """A record object as it travels inside ``processRecords``.

    Built as a plain dict (not a class instance) because the daemon creates
    hundreds of thousands per second and orjson serialises dicts fastest.
    """

    data: str
    partitionKey: str
    sequenceNumber: str
    approximateArrivalTimestamp: int
    subSequenceNumber: int
    action: str


def wire_record(
    data_b64: str,
    partition_key: str,
    sequence_number: str,
    approximate_arrival_timestamp: int,
    sub_sequence_number: int = 0,
) -> WireRecord:
    """One record object, in the official daemon's field order."""
    return {
        "data": data_b64,
        "partitionKey": partition_key,
        "sequenceNumber": sequence_number,
        "approximateArrivalTimestamp": approximate_arrival_timestamp,
        "subSequenceNumber": sub_sequence_number,
        "action": "record",
    }


# The pieces of one record object around its five values, for splicing.
_DATA = '{"data":"'
_KEY = '","partitionKey":"'
_SEQUENCE = '","sequenceNumber":"'
_ARRIVAL = '","approximateArrivalTimestamp":'
_SUB = ',"subSequenceNumber":'
_END = ',"action":"record"},'
_LAST_END = ',"action":"record"}'
_SUB_ZERO_END = _SUB + "0" + _END


def splice_records(
    data_b64: Sequence[str],
    partition_keys: Sequence[str],
    sequence_numbers: Sequence[str],
    arrival_millis: Iterable[int | str],
    sub_sequence_numbers: Iterable[int | str] | None = None,
) -> bytes:
    """The JSON array of record objects for parallel columns of values, built by splicing.

    Byte for byte what ``orjson.dumps([wire_record(...), ...])`` writes, but
    with no dict per record: the text is assembled by slice assignments and
    one join, which costs less than building the dicts alone. Only for strings that JSON writes
    verbatim (no ``"``, no ``\\``, no control character): the caller
    guarantees that (base64 always qualifies; the daemon checks the rest).
    Numbers may come as integers or, in a list, all as their decimal text.
    ``sub_sequence_numbers`` None means 0 for every record.
    """
    count = len(data_b64)
    if not count:
        return b"[]"
    if sub_sequence_numbers is None:
        pieces: list[str] = [_DATA, "", _KEY, "", _SEQUENCE, "", _ARRIVAL, "", _SUB_ZERO_END]
        pieces *= count
        pieces[7::9] = _as_text(arrival_millis)
        pieces[-1] = _SUB + "0" + _LAST_END + "]"
    else:
        pieces = [_DATA, "", _KEY, "", _SEQUENCE, "", _ARRIVAL, "", _SUB, "", _END] * count
        pieces[7::11] = _as_text(arrival_millis)
        pieces[9::11] = _as_text(sub_sequence_numbers)
        pieces[-1] = _LAST_END + "]"
    step = len(pieces) // count
    pieces[0] = "[" + _DATA
    pieces[1::step] = data_b64
    pieces[3::step] = partition_keys
    pieces[5::step] = sequence_numbers
    return "".join(pieces).encode()


def _as_text(numbers: Iterable[int | str]) -> Iterable[str]:
    if isinstance(numbers, list) and numbers and type(numbers[0]) is str:
        return numbers  # already text (all of it: the caller's promise)
    return map(str, numbers)


#: The record fields, in wire order: the keys of a record object and of ``recordColumns``.
RECORD_FIELDS = (
    "data",
    "partitionKey",
    "sequenceNumber",
    "approximateArrivalTimestamp",
    "subSequenceNumber",
)


def splice_columns(
    data_b64: Sequence[str],
    partition_keys: Sequence[str],
    sequence_numbers: Sequence[str],
    arrival_millis: Iterable[int | str],
    sub_sequence_numbers: Iterable[int | str] | None = None,
) -> bytes:
    """The ``recordColumns`` object for parallel columns of values, built by joins.

    Byte for byte what ``orjson.dumps`` writes for the same five lists, under
    the same promise as :func:`splice_records` (strings JSON writes verbatim).
    """
    return splice_columns_joined(
        '","'.join(data_b64).encode(),
        len(data_b64),
        partition_keys,
        sequence_numbers,
        arrival_millis,
        sub_sequence_numbers,
    )


def splice_columns_joined(
    data_joined: bytes,
    count: int,
    partition_keys: Sequence[str],
    sequence_numbers: Sequence[str],
    arrival_millis: Iterable[int | str],
    sub_sequence_numbers: Iterable[int | str] | None = None,
) -> bytes:
    """:func:`splice_columns` for ``count`` records whose base64 data come already joined
    by ``","`` (the daemon encodes a KPL aggregate's user records in one pass that way,
    with no string per record)."""
    if not count:
        return b'{"data":[],"partitionKey":[],"sequenceNumber":[],' + (
            b'"approximateArrivalTimestamp":[],"subSequenceNumber":[]}'
        )
    subs = (
        ",".join(_as_text(sub_sequence_numbers))
        if sub_sequence_numbers is not None
        else ",".join(["0"] * count)
    )
    return b"".join(
        (
            b'{"data":["',
            data_joined,
            "".join(
                (
                    '"],"partitionKey":["',
                    '","'.join(partition_keys),
                    '"],"sequenceNumber":["',
                    '","'.join(sequence_numbers),
                    '"],"approximateArrivalTimestamp":[',
                    ",".join(_as_text(arrival_millis)),
                    '],"subSequenceNumber":[',
                    subs,
                    "]}",
                )
            ).encode(),
        )
    )


def records_to_columns(records: Sequence[WireRecord]) -> dict[str, list[Any]]:
    """Record objects as the five ``recordColumns`` lists."""
    return {
        "data": [record["data"] for record in records],
        "partitionKey": [record["partitionKey"] for record in records],
        "sequenceNumber": [record["sequenceNumber"] for record in records],
        "approximateArrivalTimestamp": [
            record["approximateArrivalTimestamp"] for record in records
        ],
        "subSequenceNumber": [record["subSequenceNumber"] for record in records],
    }


def columns_to_records(columns: object) -> list[WireRecord]:
    """The record objects of a decoded ``recordColumns`` value; TypeError when it is not
    an object of five lists of equal length with strings and integers where they belong."""
    if not isinstance(columns, dict):
        raise TypeError("processRecords.recordColumns must be an object")
    lists: list[Any] = [columns.get(name) for name in RECORD_FIELDS]
    if not all(isinstance(values, list) for values in lists):
        raise TypeError(
            f"processRecords.recordColumns must hold the lists {', '.join(RECORD_FIELDS)}"
        )
    data, keys, sequences, millis, subs = lists
    if len({len(values) for values in lists}) > 1:
        raise TypeError("processRecords.recordColumns lists differ in length")
    texts = (value for column in (data, keys, sequences) for value in column)
    numbers = (value for column in (millis, subs) for value in column)
    if not all(type(value) is str for value in texts) or not all(
        type(value) is int for value in numbers
    ):
        raise TypeError("processRecords.recordColumns holds a value of the wrong type")
    return [wire_record(*row) for row in zip(data, keys, sequences, millis, subs, strict=True)]


class EncodedRecords(Sequence[WireRecord]):
    """Records already encoded for the child; a read-only sequence of WireRecords.

    The daemon's fast path splices the text straight from a GetRecords
    response's columns, in the form the child asked for (:meth:`splice`):
    the array of record objects or the ``recordColumns`` object.
    ``ProcessRecords.encode`` copies it into the message as it is. The other
    form, and the items, are derived on demand (reading an item decodes the
    text once, then the dicts are kept), so code that looks at records still
    sees WireRecords.

    Splicing at once, in the fetcher's thread, matters: keeping the column
    strings until the message is encoded costs the daemon about 15% more CPU
    per record (the strings are freed later, away from their allocation).
    """

    __slots__ = ("_text", "_columns", "_count", "_decoded")

    def __init__(self, text: bytes, count: int, columns: bool = False) -> None:
        """``text``: a JSON array of record objects, or (``columns``) a ``recordColumns`` object."""
        self._text = text
        self._columns = columns
        self._count = count
        self._decoded: list[WireRecord] | None = None

    @classmethod
    def splice(
        cls,
        data_b64: Sequence[str],
        partition_keys: Sequence[str],
        sequence_numbers: Sequence[str],
        arrival_millis: Sequence[int | str],
        sub_sequence_numbers: Sequence[int | str] | None = None,
        *,
        columns: bool = False,
    ) -> EncodedRecords:
        """Splice parallel columns (see :func:`splice_records` for the promise they keep)."""
        splice = splice_columns if columns else splice_records
        text = splice(
            data_b64, partition_keys, sequence_numbers, arrival_millis, sub_sequence_numbers
        )
        return cls(text, len(data_b64), columns)

    @property
    def json(self) -> bytes:
        """The JSON array of record objects."""
        return orjson.dumps(self._records()) if self._columns else self._text

    @property
    def columns_json(self) -> bytes:
        """The ``recordColumns`` JSON object."""
        if self._columns:
            return self._text
        return orjson.dumps(records_to_columns(self._records()))

    def _records(self) -> list[WireRecord]:
        if self._decoded is None:
            decoded = orjson.loads(self._text)
            self._decoded = columns_to_records(decoded) if self._columns else decoded
        return self._decoded

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> WireRecord: ...
    @overload
    def __getitem__(self, index: slice) -> list[WireRecord]: ...
    def __getitem__(self, index: int | slice) -> WireRecord | list[WireRecord]:
        return self._records()[index]

    def __iter__(self) -> Iterator[WireRecord]:
        return iter(self._records())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EncodedRecords):
            return self.json == other.json
        if isinstance(other, list | tuple):
            return self._records() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        form = "recordColumns" if self._columns else "record objects"
        return f"EncodedRecords({self._count} records as {form}, {len(self._text)} bytes)"
