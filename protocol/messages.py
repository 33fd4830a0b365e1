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

The record objects of ``processRecords``, their splicing and the record-columns
extension are in ``protocol.records``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from protocol.records import (
    EncodedRecords,
    WireRecord,
    columns_to_records,
    records_to_columns,
)

# -- daemon -> child ----------------------------------------------------------


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
            body["recordColumns"] = True
            body["preparedCheckpoints"] = True
            body["pendingCheckpointSequenceNumber"] = self.pending_checkpoint_sequence_number
            body["pendingCheckpointSubSequenceNumber"] = self.pending_checkpoint_sub_sequence_number
        return orjson.dumps(body)


@dataclass(frozen=True, slots=True)
class ProcessRecords:
    """A batch for the child; ``columns`` True sends ``recordColumns`` (the extension)."""

    records: Sequence[WireRecord]
    millis_behind_latest: int | None = None
    columns: bool = False

    action = "processRecords"

    def encode(self) -> bytes:
        records = self.records
        if type(records) is EncodedRecords:
            return b"".join(
                (
                    b'{"action":"processRecords","recordColumns":'
                    if self.columns
                    else b'{"action":"processRecords","records":',
                    records.columns_json if self.columns else records.json,
                    b',"millisBehindLatest":',
                    orjson.dumps(self.millis_behind_latest),
                    b"}",
                )
            )
        if self.columns:
            return orjson.dumps(
                {
                    "action": "processRecords",
                    "recordColumns": records_to_columns(records),
                    "millisBehindLatest": self.millis_behind_latest,
                }
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
    """A child's answer to an action; ``record_columns`` asks for the extension
    (meaningful in the answer to ``initialize`` only)."""

    response_for: str
    record_columns: bool = False

    action = "status"

    def encode(self) -> bytes:
        if self.record_columns:
            return orjson.dumps(
                {"action": "status", "responseFor": self.response_for, "recordColumns": True}
            )
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
        return Status(response_for, body.get("recordColumns") is True)
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
            if "recordColumns" in body and "records" not in body:
                from_columns = columns_to_records(body["recordColumns"])
                return ProcessRecords(from_columns, body.get("millisBehindLatest"), columns=True)
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
