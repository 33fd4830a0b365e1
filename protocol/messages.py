"""Messages of the multilang protocol and their one-line JSON codec.

Both sides use this module: the daemon encodes daemon->child messages and
decodes child lines; the processor SDK does the reverse. The wire facts come
from ``shared/spec/multilang-protocol.md``:

* one compact UTF-8 JSON object per line, ``action`` first in messages,
  nulls written, record objects in the official daemon's field order
  (``action`` last);
* record ``data`` is standard base64 and passes through as a string, so the
  daemon never decodes and re-encodes payloads on the hot path;
* decoding a child line never raises: blank lines, non-JSON, unknown actions
  and wrong field types come back as a :class:`DecodeProblem` naming the
  problem, because a child must never be able to crash the daemon.

Prepared-checkpoint extension
-----------------------------
The official protocol has no two-phase checkpoint; the seed's tweet counter
needs one ("prepare the checkpoint, write, then checkpoint"). We add it
without disturbing the official child libraries, which ignore unknown
top-level scalar keys:

* ``initialize`` carries ``"preparedCheckpoints": true`` (the daemon supports
  the extension) plus ``pendingCheckpointSequenceNumber`` and
  ``pendingCheckpointSubSequenceNumber``: the lease's prepared-but-not-
  committed checkpoint, both ``null`` when there is none. A child that finds
  a pending checkpoint knows its previous incarnation prepared work up to that
  position and may not have finished it.
* A child asks to *prepare* rather than commit by adding ``"prepare": true``
  to its ``checkpoint`` request. The daemon stores the position as the
  lease's pending checkpoint (same range checks as a checkpoint) and replies
  with the usual ``checkpoint`` message plus ``"prepare": true``.
* A later ordinary checkpoint commits and clears the pending checkpoint.

A child that never sends ``prepare`` sees the classic protocol; the official
daemon simply never announces the extension. ``Initialize.encode`` omits the
extension fields when ``extensions=False`` (that is the official wire form,
which the golden transcripts check byte for byte).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, overload

import orjson

# -- daemon -> child ----------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Initialize:
    shard_id: str
    sequence_number: str
    sub_sequence_number: int = 0
    pending_checkpoint_sequence_number: str | None = None
    pending_checkpoint_sub_sequence_number: int | None = None

    action = "initialize"

    def encode(self, extensions: bool = True) -> bytes:
        body: dict[str, Any] = {
            "action": "initialize",
            "shardId": self.shard_id,
            "sequenceNumber": self.sequence_number,
            "subSequenceNumber": self.sub_sequence_number,
        }
        if extensions:
            body["preparedCheckpoints"] = True
            body["pendingCheckpointSequenceNumber"] = self.pending_checkpoint_sequence_number
            body["pendingCheckpointSubSequenceNumber"] = self.pending_checkpoint_sub_sequence_number
        return orjson.dumps(body)


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


class EncodedRecords(Sequence[WireRecord]):
    """Record objects already encoded as one JSON array; a read-only sequence of WireRecords.

    The daemon's fast path builds the array text straight from a GetRecords
    response (:func:`splice_records`) and ``ProcessRecords.encode`` splices it
    into the message as it is. Reading an item decodes the array once (then
    the dicts are kept), so code that looks at records still sees WireRecords.
    """

    __slots__ = ("json", "_count", "_decoded")

    def __init__(self, json: bytes, count: int) -> None:
        self.json = json
        self._count = count
        self._decoded: list[WireRecord] | None = None

    def _records(self) -> list[WireRecord]:
        if self._decoded is None:
            self._decoded = orjson.loads(self.json)
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
        return f"EncodedRecords({self._count} records, {len(self.json)} bytes)"


@dataclass(frozen=True, slots=True)
class ProcessRecords:
    records: Sequence[WireRecord]
    millis_behind_latest: int | None = None

    action = "processRecords"

    def encode(self) -> bytes:
        records = self.records
        if type(records) is EncodedRecords:
            return b"".join(
                (
                    b'{"action":"processRecords","records":',
                    records.json,
                    b',"millisBehindLatest":',
                    orjson.dumps(self.millis_behind_latest),
                    b"}",
                )
            )
        return orjson.dumps(
            {
                "action": "processRecords",
                "records": records if type(records) is list else list(records),
                "millisBehindLatest": self.millis_behind_latest,
            }
        )


@dataclass(frozen=True, slots=True)
class CheckpointReply:
    """The daemon's answer to a child's checkpoint request."""

    sequence_number: str | None
    sub_sequence_number: int | None
    error: str | None = None
    prepare: bool = False

    action = "checkpoint"

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "action": "checkpoint",
            "sequenceNumber": self.sequence_number,
            "subSequenceNumber": self.sub_sequence_number,
            "error": self.error,
        }
        if self.prepare:
            body["prepare"] = True
        return orjson.dumps(body)


@dataclass(frozen=True, slots=True)
class LeaseLost:
    action = "leaseLost"

    def encode(self) -> bytes:
        return b'{"action":"leaseLost"}'


@dataclass(frozen=True, slots=True)
class ShardEnded:
    action = "shardEnded"

    def encode(self) -> bytes:
        return b'{"action":"shardEnded"}'


@dataclass(frozen=True, slots=True)
class ShutdownRequested:
    action = "shutdownRequested"

    def encode(self) -> bytes:
        return b'{"action":"shutdownRequested"}'


DaemonMessage = (
    Initialize | ProcessRecords | CheckpointReply | LeaseLost | ShardEnded | ShutdownRequested
)

#: Actions that the child must answer with a ``status`` naming them.
ACTIONS_NEEDING_STATUS = frozenset(
    ("initialize", "processRecords", "leaseLost", "shardEnded", "shutdownRequested")
)

# -- child -> daemon ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    response_for: str

    action = "status"

    def encode(self) -> bytes:
        return orjson.dumps({"action": "status", "responseFor": self.response_for})


@dataclass(frozen=True, slots=True)
class CheckpointRequest:
    """A child asking to checkpoint (or, with ``prepare``, to prepare one).

    ``sequence_number`` None means "the largest permitted value". It is kept
    as the child sent it (a string, possibly non-numeric): range and format
    checks belong to the checkpointer, which answers IllegalArgumentException.
    """

    sequence_number: str | None
    sub_sequence_number: int | None = None
    prepare: bool = False

    action = "checkpoint"

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "action": "checkpoint",
            "sequenceNumber": self.sequence_number,
            "subSequenceNumber": self.sub_sequence_number,
        }
        if self.prepare:
            body["prepare"] = True
        return orjson.dumps(body)


ChildMessage = Status | CheckpointRequest


class Problem(enum.Enum):
    """Why a line could not be understood."""

    BLANK = "blank line"
    NOT_JSON = "not JSON"
    NOT_OBJECT = "JSON but not an object"
    NO_ACTION = "no 'action' field"
    UNKNOWN_ACTION = "unknown action"
    BAD_FIELD = "field of the wrong type"


@dataclass(frozen=True, slots=True)
class DecodeProblem:
    """A line that is not a valid message; never raised, always returned.

    ``action`` is set when the line named a known action but a field was
    wrong, so the caller can still answer it (a malformed checkpoint request
    gets an IllegalArgumentException reply instead of leaving the child
    blocked on a reply that never comes).
    """

    problem: Problem
    detail: str
    action: str | None = None

    def describe(self) -> str:
        return f"{self.problem.value}: {self.detail}"


_PREVIEW = 200


def _preview(line: bytes | str) -> str:
    text = line if isinstance(line, str) else line[:_PREVIEW].decode("utf-8", "replace")
    return repr(text[:_PREVIEW])


def _as_sequence_number(value: object) -> str | None:
    """Accept strings, and numbers sent where strings belong (aws-kcl may)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"sequenceNumber must be a string or null, got {type(value).__name__}")


def _as_sub_sequence_number(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.lstrip("-").isdigit():
        return int(value)
    raise TypeError(f"subSequenceNumber must be an integer or null, got {value!r:.60}")


def _load_with_lone_surrogates(line: bytes | str) -> Any:
    """Valid JSON that orjson refuses: a \\uD800-\\uDFFF escape without its pair.

    Python's json.dumps and Node's JSON.stringify write exactly that for a
    string holding a lone surrogate. The standard library reads it; top-level
    strings are then made encodable again (the surrogate becomes U+FFFD), so
    an answer that echoes them can be written. None when it is not JSON.
    """
    try:
        body = json.loads(line, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    if isinstance(body, dict):
        return {_encodable(key): _encodable(value) for key, value in body.items()}
    return body


def _not_json(constant: str) -> Any:
    # The standard library accepts NaN and Infinity; JSON (and orjson) do not.
    raise ValueError(f"{constant} is not JSON")


def _encodable(value: Any) -> Any:
    if isinstance(value, str) and any("\ud800" <= char <= "\udfff" for char in value):
        return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in value)
    return value


def _load_object(line: bytes | str) -> dict[str, Any] | DecodeProblem:
    if not line.strip():
        return DecodeProblem(Problem.BLANK, "")
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        body = _load_with_lone_surrogates(line)
        if body is None:
            return DecodeProblem(Problem.NOT_JSON, f"{error.msg} in {_preview(line)}")
    if not isinstance(body, dict):
        return DecodeProblem(Problem.NOT_OBJECT, _preview(line))
    action = body.get("action")
    if action is None:
        return DecodeProblem(Problem.NO_ACTION, _preview(line))
    if not isinstance(action, str):
        return DecodeProblem(Problem.BAD_FIELD, f"action is {type(action).__name__}")
    return body


def decode_child_line(line: bytes | str) -> ChildMessage | DecodeProblem:
    """Decode one line a child wrote. Never raises."""
    body = _load_object(line)
    if isinstance(body, DecodeProblem):
        return body
    action = body["action"]
    if action == "status":
        response_for = body.get("responseFor")
        if not isinstance(response_for, str):
            return DecodeProblem(
                Problem.BAD_FIELD,
                f"status.responseFor must be a string, got {response_for!r:.60}",
                "status",
            )
        return Status(response_for)
    if action == "checkpoint":
        try:
            sequence_number = _as_sequence_number(body.get("sequenceNumber"))
            sub_sequence_number = _as_sub_sequence_number(body.get("subSequenceNumber"))
        except TypeError as error:
            return DecodeProblem(Problem.BAD_FIELD, str(error), "checkpoint")
        return CheckpointRequest(sequence_number, sub_sequence_number, body.get("prepare") is True)
    return DecodeProblem(Problem.UNKNOWN_ACTION, f"{action!r:.60}")


def decode_daemon_line(line: bytes | str) -> DaemonMessage | DecodeProblem:
    """Decode one line the daemon wrote (the child's side). Never raises.

    Record objects inside ``processRecords`` stay plain dicts: turning them
    into objects is the SDK's job, and it does so lazily.
    """
    body = _load_object(line)
    if isinstance(body, DecodeProblem):
        return body
    action = body["action"]
    try:
        if action == "processRecords":
            records = body.get("records")
            if not isinstance(records, list):
                raise TypeError("processRecords.records must be a list")
            return ProcessRecords(records, body.get("millisBehindLatest"))
        if action == "checkpoint":
            error = body.get("error")
            if error is not None and not isinstance(error, str):
                raise TypeError("checkpoint.error must be a string or null")
            return CheckpointReply(
                _as_sequence_number(body.get("sequenceNumber")),
                _as_sub_sequence_number(body.get("subSequenceNumber")),
                error,
                body.get("prepare") is True,
            )
        if action == "initialize":
            shard_id = body.get("shardId")
            if not isinstance(shard_id, str):
                raise TypeError("initialize.shardId must be a string")
            sequence_number = _as_sequence_number(body.get("sequenceNumber"))
            if sequence_number is None:
                raise TypeError("initialize.sequenceNumber must be a string")
            return Initialize(
                shard_id,
                sequence_number,
                _as_sub_sequence_number(body.get("subSequenceNumber")) or 0,
                _as_sequence_number(body.get("pendingCheckpointSequenceNumber")),
                _as_sub_sequence_number(body.get("pendingCheckpointSubSequenceNumber")),
            )
    except TypeError as error:
        return DecodeProblem(Problem.BAD_FIELD, str(error), action)
    if action == "leaseLost":
        return LeaseLost()
    if action == "shardEnded":
        return ShardEnded()
    if action == "shutdownRequested":
        return ShutdownRequested()
    return DecodeProblem(Problem.UNKNOWN_ACTION, f"{action!r:.60}")
