"""The inputs handed to record processors, and the record wrapper.

Same class names, constructors (each takes the decoded JSON object) and
attribute names as ``amazon_kclpy.messages``, so processors and their unit
tests that build inputs by hand keep working.

Speed is the reason this module is not a plain port: a ``Record`` only keeps
a reference to its JSON object and reads fields on access. Base64 decoding
(``binary_data``) and the ``datetime`` of ``approximate_arrival_timestamp``
are computed only when asked for, so a processor that routes on the
partition key or sequence number never pays for them.
"""

from __future__ import annotations

import binascii
from abc import ABCMeta
from datetime import datetime
from typing import Any

from processors.kclpy.checkpoint_error import CheckpointError
from protocol.records import RECORD_FIELDS


class MessageDispatcher:
    """An action from the daemon that knows which processor method it calls.

    Not an ABC on purpose: amazon_kclpy's ``__metaclass__`` line has no
    effect on Python 3, so its abstract methods are never enforced, and some
    processors rely on that.
    """

    _action: str

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        raise NotImplementedError

    @property
    def action(self) -> str:
        """The name of the action that created this message."""
        return self._action


class InitializeInput(MessageDispatcher):
    """The shard a processor is about to work on and where it starts."""

    def __init__(self, json_dict: dict[str, Any]) -> None:
        self._shard_id = json_dict["shardId"]
        self._sequence_number = json_dict["sequenceNumber"]
        self._sub_sequence_number = json_dict.get("subSequenceNumber")
        self._action = json_dict.get("action", "initialize")
        # The prepared-checkpoint extension (see protocol.messages); absent
        # when the daemon is the official one.
        self._supports_prepared = json_dict.get("preparedCheckpoints") is True
        self._offers_record_columns = json_dict.get("recordColumns") is True
        self._pending_sequence_number = json_dict.get("pendingCheckpointSequenceNumber")
        self._pending_sub_sequence_number = json_dict.get("pendingCheckpointSubSequenceNumber")

    @property
    def shard_id(self) -> str:
        return self._shard_id

    @property
    def sequence_number(self) -> str | None:
        """The lease's checkpoint: digits, or TRIM_HORIZON / LATEST / AT_TIMESTAMP."""
        return self._sequence_number

    @property
    def sub_sequence_number(self) -> int | None:
        return self._sub_sequence_number

    @property
    def supports_prepared_checkpoints(self) -> bool:
        """True when the daemon announced the prepared-checkpoint extension."""
        return self._supports_prepared

    @property
    def offers_record_columns(self) -> bool:
        """True when the daemon offered the record-columns extension (protocol.records)."""
        return self._offers_record_columns

    @property
    def pending_checkpoint_sequence_number(self) -> str | None:
        """A checkpoint a previous processor prepared but did not commit, or None."""
        return self._pending_sequence_number

    @property
    def pending_checkpoint_sub_sequence_number(self) -> int | None:
        return self._pending_sub_sequence_number

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        record_processor.initialize(self)


class ProcessRecordsInput(MessageDispatcher):
    """A batch of records, how far behind the stream tip it is, and a checkpointer."""

    def __init__(self, json_dict: dict[str, Any]) -> None:
        self._records = json_dict["records"]
        self._millis_behind_latest = json_dict.get("millisBehindLatest")
        self._checkpointer: Any = None
        self._action = json_dict.get("action", "processRecords")

    @property
    def records(self) -> list[Record]:
        return self._records

    @property
    def millis_behind_latest(self) -> int | None:
        return self._millis_behind_latest

    @property
    def checkpointer(self) -> Any:
        return self._checkpointer

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        self._checkpointer = checkpointer
        record_processor.process_records(self)


class LeaseLostCheckpointer:
    """Stands in for a checkpointer after the lease is lost (v1/v2 ``shutdown`` ZOMBIE)."""

    def checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> None:
        raise CheckpointError("Checkpointing is not allowed when the lease is lost")


class ShutdownInput:
    """The v2 ``shutdown`` input: reason TERMINATE (shard ended) or ZOMBIE (lease lost)."""

    @staticmethod
    def zombie() -> ShutdownInput:
        return ShutdownInput("ZOMBIE", LeaseLostCheckpointer())

    @staticmethod
    def terminate(checkpointer: Any) -> ShutdownInput:
        return ShutdownInput("TERMINATE", checkpointer)

    def __init__(self, reason: str, checkpointer: Any) -> None:
        self._action = "shutdown"
        self._reason = reason
        self._checkpointer = checkpointer

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def checkpointer(self) -> Any:
        return self._checkpointer

    @property
    def action(self) -> str:
        return self._action


class LeaseLostInput(MessageDispatcher):
    """This worker no longer holds the shard's lease; checkpointing is impossible."""

    def __init__(self, json_dict: dict[str, Any]) -> None:
        self._action = json_dict.get("action", "leaseLost")

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        record_processor.lease_lost(self)


class ShardEndedInput(MessageDispatcher):
    """The shard was split or merged; the processor must checkpoint to finish it."""

    def __init__(self, json_dict: dict[str, Any]) -> None:
        self._checkpointer: Any = None
        self._action = json_dict.get("action", "shardEnded")

    @property
    def checkpointer(self) -> Any:
        return self._checkpointer

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        self._checkpointer = checkpointer
        record_processor.shard_ended(self)


class ShutdownRequestedInput(MessageDispatcher):
    """The daemon is stopping or handing the lease off; last chance to checkpoint."""

    def __init__(self, json_dict: dict[str, Any]) -> None:
        self._checkpointer: Any = None
        self._action = json_dict.get("action", "shutdownRequested")

    @property
    def checkpointer(self) -> Any:
        return self._checkpointer

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        self._checkpointer = checkpointer
        record_processor.shutdown_requested(self)


class LegacyShutdownInput(MessageDispatcher):
    """The KCL 1.x ``{"action":"shutdown","reason":...}`` message.

    amazon_kclpy 2+ crashes on it; we map it onto the v3 calls instead, since
    an old daemon is the only thing that sends it.
    """

    def __init__(self, json_dict: dict[str, Any]) -> None:
        self._action = json_dict.get("action", "shutdown")
        self._reason = json_dict.get("reason")

    def dispatch(self, checkpointer: Any, record_processor: Any) -> None:
        if self._reason == "TERMINATE":
            shard_ended = ShardEndedInput({"action": "shardEnded"})
            shard_ended.dispatch(checkpointer, record_processor)
        else:
            record_processor.lease_lost(LeaseLostInput({"action": "leaseLost"}))


class CheckpointInput:
    """The daemon's answer to a checkpoint request (not for processors)."""

    def __init__(self, json_dict: dict[str, Any]) -> None:
        self._sequence_number = json_dict.get("sequenceNumber")
        self._sub_sequence_number = json_dict.get("subSequenceNumber")
        self._error = json_dict.get("error")
        self._prepare = json_dict.get("prepare") is True

    @property
    def sequence_number(self) -> str | None:
        return self._sequence_number

    @property
    def sub_sequence_number(self) -> int | None:
        return self._sub_sequence_number

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def prepare(self) -> bool:
        return self._prepare


class Record(metaclass=ABCMeta):  # noqa: B024 - ABCMeta only to register ColumnRecord
    """One Kinesis record (or one user record out of a KPL aggregate).

    Holds the record's JSON object and nothing else; every field is read on
    access. ``record["partitionKey"]`` and ``record.get("data")`` give the raw
    JSON values, as in amazon_kclpy.
    """

    __slots__ = ("_json_dict",)

    def __init__(self, json_dict: dict[str, Any]) -> None:
        self._json_dict = json_dict

    @property
    def binary_data(self) -> bytes:
        """The payload, decoded from base64 on each access (nothing is cached)."""
        # a2b_base64 is what base64.b64decode calls, minus its argument checks.
        return binascii.a2b_base64(self._json_dict["data"])

    @property
    def data(self) -> str:
        """The payload as the daemon sent it: a base64 string."""
        return self._json_dict["data"]

    @property
    def sequence_number(self) -> str:
        return self._json_dict["sequenceNumber"]

    @property
    def sub_sequence_number(self) -> int:
        """Position inside a KPL aggregate; 0 for a plain record."""
        return self._json_dict["subSequenceNumber"]

    @property
    def partition_key(self) -> str:
        return self._json_dict["partitionKey"]

    @property
    def timestamp_millis(self) -> int:
        """When Kinesis accepted the record, in epoch milliseconds."""
        return int(self._json_dict["approximateArrivalTimestamp"])

    @property
    def approximate_arrival_timestamp(self) -> datetime:
        """``timestamp_millis`` as a naive local datetime, as amazon_kclpy gives it."""
        return datetime.fromtimestamp(self.timestamp_millis / 1000.0)

    def get(self, field: str) -> Any:
        return self._json_dict[field]

    def __getitem__(self, field: str) -> Any:
        return self._json_dict[field]

    def __repr__(self) -> str:
        fields = self._json_dict
        return (
            f"Record(sequence_number={fields.get('sequenceNumber')!r}, "
            f"sub_sequence_number={fields.get('subSequenceNumber')!r}, "
            f"partition_key={fields.get('partitionKey')!r})"
        )


_value = tuple.__getitem__
_FIELD_INDEX = {name: index for index, name in enumerate(RECORD_FIELDS)}


class ColumnRecord(tuple):  # type: ignore[type-arg]
    """A record that arrived in ``recordColumns``: the same interface as :class:`Record`.

    A tuple of the record's five values in ``protocol.messages.RECORD_FIELDS``
    order, so a batch's records are built by ``zip`` and the tuple type in C,
    with no Python call per record (about half of what decoding a batch of
    record objects costs). ``isinstance(record, Record)`` holds. Being a
    tuple it also compares by value, which a dict-backed Record does not.
    """

    __slots__ = ()

    @property
    def binary_data(self) -> bytes:
        """The payload, decoded from base64 on each access (nothing is cached)."""
        return binascii.a2b_base64(_value(self, 0))

    @property
    def data(self) -> str:
        """The payload as the daemon sent it: a base64 string."""
        return _value(self, 0)  # type: ignore[no-any-return]

    @property
    def partition_key(self) -> str:
        return _value(self, 1)  # type: ignore[no-any-return]

    @property
    def sequence_number(self) -> str:
        return _value(self, 2)  # type: ignore[no-any-return]

    @property
    def timestamp_millis(self) -> int:
        """When Kinesis accepted the record, in epoch milliseconds."""
        return int(_value(self, 3))

    @property
    def approximate_arrival_timestamp(self) -> datetime:
        """``timestamp_millis`` as a naive local datetime, as amazon_kclpy gives it."""
        return datetime.fromtimestamp(self.timestamp_millis / 1000.0)

    @property
    def sub_sequence_number(self) -> int:
        """Position inside a KPL aggregate; 0 for a plain record."""
        return _value(self, 4)  # type: ignore[no-any-return]

    def get(self, field: str) -> Any:
        return self[field]

    def __getitem__(self, field: Any) -> Any:
        """A field by its JSON name, as ``Record`` reads its JSON object."""
        index = _FIELD_INDEX.get(field)
        if index is None:
            if field == "action":
                return "record"
            raise KeyError(field)
        return _value(self, index)

    def __repr__(self) -> str:
        return (
            f"Record(sequence_number={self.sequence_number!r}, "
            f"sub_sequence_number={self.sub_sequence_number!r}, "
            f"partition_key={self.partition_key!r})"
        )


Record.register(ColumnRecord)


def column_records(columns: Any) -> list[ColumnRecord]:
    """The records of a ``recordColumns`` object; ValueError when it is not five lists
    of equal length (values are read on access, as ``Record`` reads its object)."""
    try:
        lists = [columns[name] for name in RECORD_FIELDS]
    except (KeyError, TypeError):
        raise ValueError(f"recordColumns must hold the lists {', '.join(RECORD_FIELDS)}") from None
    if not all(type(values) is list for values in lists):
        raise ValueError(f"recordColumns must hold the lists {', '.join(RECORD_FIELDS)}")
    if len(set(map(len, lists))) > 1:
        raise ValueError("recordColumns lists differ in length")
    return list(map(ColumnRecord, zip(*lists, strict=True)))
