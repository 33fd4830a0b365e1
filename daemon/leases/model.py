"""The lease record and its DynamoDB item form (KCL 2.x schema).

Owns the mapping between a ``Lease`` and a DynamoDB item in the low-level
attribute-value format (``{"leaseKey": {"S": "shardId-0"}}``), so that a table
written by the Java KCL (2.x, or 3.x's lease items) reads back and writes out
without losing anything: attributes this module does not know are kept, raw,
in ``Lease.extra`` and written back unchanged. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from daemon.sequence import ExtendedSequenceNumber

LEASE_KEY = "leaseKey"
LEASE_OWNER = "leaseOwner"
LEASE_COUNTER = "leaseCounter"
OWNER_SWITCHES = "ownerSwitchesSinceCheckpoint"
CHECKPOINT = "checkpoint"
CHECKPOINT_SUB = "checkpointSubSequenceNumber"
PENDING_CHECKPOINT = "pendingCheckpoint"
PENDING_CHECKPOINT_SUB = "pendingCheckpointSubSequenceNumber"
PENDING_CHECKPOINT_STATE = "pendingCheckpointState"
PARENT_SHARD_IDS = "parentShardId"
CHILD_SHARD_IDS = "childShardIds"
STARTING_HASH_KEY = "startingHashKey"
ENDING_HASH_KEY = "endingHashKey"
ENTITY_TYPE = "entityType"
ENTITY_TYPE_LEASE = "LEASE"

KNOWN_ATTRIBUTES = frozenset(
    (
        LEASE_KEY,
        LEASE_OWNER,
        LEASE_COUNTER,
        OWNER_SWITCHES,
        CHECKPOINT,
        CHECKPOINT_SUB,
        PENDING_CHECKPOINT,
        PENDING_CHECKPOINT_SUB,
        PENDING_CHECKPOINT_STATE,
        PARENT_SHARD_IDS,
        CHILD_SHARD_IDS,
        STARTING_HASH_KEY,
        ENDING_HASH_KEY,
    )
)

# A DynamoDB item in attribute-value form: {"name": {"S": "value"}}.
Item = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Lease:
    """One shard's lease as last read from (or written to) the table.

    Frozen so a lease can cross threads safely; derive changed copies with
    ``dataclasses.replace``. ``extra`` holds attributes written by other
    clients (KCL 3.x ``checkpointOwner``, ``throughputKBps``, ``entityType``)
    in raw attribute-value form; treat it as read-only.
    """

    lease_key: str
    lease_owner: str | None = None
    lease_counter: int = 0
    checkpoint: ExtendedSequenceNumber | None = None
    pending_checkpoint: ExtendedSequenceNumber | None = None
    pending_checkpoint_state: bytes | None = None
    owner_switches_since_checkpoint: int = 0
    parent_shard_ids: frozenset[str] = frozenset()
    child_shard_ids: frozenset[str] = frozenset()
    starting_hash_key: int | None = None
    ending_hash_key: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def is_finished(self) -> bool:
        """True once the shard was processed to its end (checkpoint SHARD_END)."""
        return self.checkpoint is not None and self.checkpoint.is_shard_end


def _str(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if value is None or "NULL" in value:
        return None
    return str(value["S"])


def _int(item: Mapping[str, Any], name: str) -> int | None:
    value = item.get(name)
    if value is None or "NULL" in value:
        return None
    # Decimal, not float: tolerates "3.0" without losing precision on big values.
    return int(Decimal(value["N"]))


def _string_set(item: Mapping[str, Any], name: str) -> frozenset[str]:
    value = item.get(name)
    if value is None:
        return frozenset()
    if "SS" in value:
        return frozenset(value["SS"])
    if "L" in value:  # not written by KCL, but harmless to accept
        return frozenset(str(v["S"]) for v in value["L"])
    if "S" in value:
        return frozenset((value["S"],))
    return frozenset()


def _position(
    item: Mapping[str, Any], seq_name: str, sub_name: str
) -> ExtendedSequenceNumber | None:
    seq = _str(item, seq_name)
    if seq is None:
        return None
    return ExtendedSequenceNumber(seq, _int(item, sub_name) or 0)


def lease_from_item(item: Mapping[str, Any]) -> Lease | None:
    """Parse a table item; None for KCL 3.x non-lease items (entityType != LEASE).

    Raises ValueError for an item without a string ``leaseKey`` or with a
    malformed checkpoint, so a caller can skip it with a log line.
    """
    entity_type = _str(item, ENTITY_TYPE)
    if entity_type is not None and entity_type != ENTITY_TYPE_LEASE:
        return None
    key_value = item.get(LEASE_KEY)
    if key_value is None or "S" not in key_value:
        raise ValueError(f"lease item without a string {LEASE_KEY}: {sorted(item)}")
    try:
        state_value = item.get(PENDING_CHECKPOINT_STATE)
        state = bytes(state_value["B"]) if state_value and "B" in state_value else None
        start = _str(item, STARTING_HASH_KEY)
        end = _str(item, ENDING_HASH_KEY)
        return Lease(
            lease_key=key_value["S"],
            lease_owner=_str(item, LEASE_OWNER),
            lease_counter=_int(item, LEASE_COUNTER) or 0,
            checkpoint=_position(item, CHECKPOINT, CHECKPOINT_SUB),
            pending_checkpoint=_position(item, PENDING_CHECKPOINT, PENDING_CHECKPOINT_SUB),
            pending_checkpoint_state=state,
            owner_switches_since_checkpoint=_int(item, OWNER_SWITCHES) or 0,
            parent_shard_ids=_string_set(item, PARENT_SHARD_IDS),
            child_shard_ids=_string_set(item, CHILD_SHARD_IDS),
            starting_hash_key=int(start) if start is not None else None,
            ending_hash_key=int(end) if end is not None else None,
            extra={k: v for k, v in item.items() if k not in KNOWN_ATTRIBUTES},
        )
    except (KeyError, TypeError, ValueError, InvalidOperation) as error:
        raise ValueError(f"malformed lease item {key_value['S']!r}: {error}") from error


def string_set(values: Iterable[str]) -> dict[str, list[str]]:
    """A DynamoDB SS value, sorted so written items are reproducible."""
    return {"SS": sorted(values)}


def position_values(position: ExtendedSequenceNumber) -> tuple[dict[str, str], dict[str, str]]:
    """The (sequence, sub-sequence) attribute values for a checkpoint position."""
    return {"S": position.sequence_number}, {"N": str(position.sub_sequence_number)}


def lease_to_item(lease: Lease) -> Item:
    """The full table item for ``lease``; absent values are omitted, not nulled.

    DynamoDB rejects empty string sets, so empty parent/child sets are left
    out, as the Java client does.
    """
    item: Item = dict(lease.extra)
    item[LEASE_KEY] = {"S": lease.lease_key}
    item[LEASE_COUNTER] = {"N": str(lease.lease_counter)}
    item[OWNER_SWITCHES] = {"N": str(lease.owner_switches_since_checkpoint)}
    if lease.lease_owner is not None:
        item[LEASE_OWNER] = {"S": lease.lease_owner}
    if lease.checkpoint is not None:
        item[CHECKPOINT], item[CHECKPOINT_SUB] = position_values(lease.checkpoint)
    if lease.pending_checkpoint is not None:
        item[PENDING_CHECKPOINT], item[PENDING_CHECKPOINT_SUB] = position_values(
            lease.pending_checkpoint
        )
    if lease.pending_checkpoint_state is not None:
        item[PENDING_CHECKPOINT_STATE] = {"B": lease.pending_checkpoint_state}
    if lease.parent_shard_ids:
        item[PARENT_SHARD_IDS] = string_set(lease.parent_shard_ids)
    if lease.child_shard_ids:
        item[CHILD_SHARD_IDS] = string_set(lease.child_shard_ids)
    if lease.starting_hash_key is not None:
        item[STARTING_HASH_KEY] = {"S": str(lease.starting_hash_key)}
    if lease.ending_hash_key is not None:
        item[ENDING_HASH_KEY] = {"S": str(lease.ending_hash_key)}
    return item
