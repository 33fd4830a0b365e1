"""Turning one decoded daemon line into the input object a processor receives.

amazon_kclpy decodes with ``json.loads(line, object_hook=...)``, building a
Python object for every nested JSON object. Here a line is decoded once by
``orjson.loads`` (in ``_channel``) and only the record list is wrapped, one
thin ``Record`` per record object; records that come as ``recordColumns``
(the extension in ``protocol.records``) become ``ColumnRecord`` tuples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processors.kclpy import messages


class MalformedAction(Exception):
    """A daemon message without an ``action``, or with one nobody knows."""


def _process_records(json_dict: dict[str, Any]) -> messages.ProcessRecordsInput:
    if "recordColumns" in json_dict and "records" not in json_dict:
        try:
            json_dict["records"] = messages.column_records(json_dict.pop("recordColumns"))
        except ValueError as error:
            raise MalformedAction(f"processRecords: {error}") from None
        return messages.ProcessRecordsInput(json_dict)
    records = json_dict.get("records")
    if not isinstance(records, list):
        raise MalformedAction(f"processRecords without a records list: {_preview(json_dict)}")
    # The decoded dict is ours alone, so the wrapped list replaces the raw one
    # in place rather than being copied into a new dict.
    json_dict["records"] = list(map(messages.Record, records))
    return messages.ProcessRecordsInput(json_dict)


_INPUTS: dict[str, Callable[[dict[str, Any]], messages.MessageDispatcher]] = {
    "initialize": messages.InitializeInput,
    "processRecords": _process_records,
    "leaseLost": messages.LeaseLostInput,
    "shardEnded": messages.ShardEndedInput,
    "shutdownRequested": messages.ShutdownRequestedInput,
    "shutdown": messages.LegacyShutdownInput,
}

#: Actions that are valid on the wire but are not processor calls: a checkpoint
#: reply arriving outside a checkpoint call, or a bare record.
STRAY_ACTIONS = frozenset(("checkpoint", "record", "status"))


def _preview(json_dict: dict[str, Any]) -> str:
    return repr(json_dict)[:200]


def decode_action(json_dict: dict[str, Any]) -> messages.MessageDispatcher:
    """The input object for one decoded daemon message (records wrapped).

    Raises MalformedAction for an unknown action or a message missing a
    field the processor call needs.
    """
    action = json_dict.get("action")
    build = _INPUTS.get(action)  # type: ignore[arg-type]
    if build is None:
        raise MalformedAction(
            f"unknown action {action!r}; expected one of {', '.join(sorted(_INPUTS))}"
        )
    try:
        return build(json_dict)
    except KeyError as missing:
        raise MalformedAction(
            f"{action} message without {missing}: {_preview(json_dict)}"
        ) from None


def message_decode(json_dict: dict[str, Any]) -> Any:
    """amazon_kclpy's ``object_hook``: one JSON object to its message class.

    Kept for code that calls ``dispatch.message_decode`` directly; it maps a
    single object and does not recurse (with ``json.loads(object_hook=...)``
    the records are mapped first, as in amazon_kclpy).
    """
    try:
        action = json_dict["action"]
    except KeyError:
        raise MalformedAction(f"message without an action: {_preview(json_dict)}") from None
    if action == "record":
        return messages.Record(json_dict)
    if action == "checkpoint":
        return messages.CheckpointInput(json_dict)
    if action == "processRecords":
        return messages.ProcessRecordsInput(json_dict)
    return decode_action(json_dict)
