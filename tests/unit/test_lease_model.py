"""Lease <-> DynamoDB item mapping (KCL 2.x schema)."""

from __future__ import annotations

import pytest

from daemon.leases.model import Lease, lease_from_item, lease_to_item
from daemon.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber

FULL_LEASE = Lease(
    lease_key="shardId-000000000002",
    lease_owner="host-a:123",
    lease_counter=41,
    checkpoint=ExtendedSequenceNumber(
        "49590338271490256608559692538361571095921575989136588898", 3
    ),
    pending_checkpoint=ExtendedSequenceNumber(
        "49590338271490256608559692538361571095921575989136588899"
    ),
    pending_checkpoint_state=b"\x00state\xff",
    owner_switches_since_checkpoint=2,
    parent_shard_ids=frozenset({"shardId-000000000000", "shardId-000000000001"}),
    child_shard_ids=frozenset({"shardId-000000000003"}),
    starting_hash_key=0,
    ending_hash_key=2**128 - 1,
)


def test_full_lease_round_trips_through_item() -> None:
    assert lease_from_item(lease_to_item(FULL_LEASE)) == FULL_LEASE


def test_item_uses_kcl_attribute_names_and_types() -> None:
    item = lease_to_item(FULL_LEASE)
    assert item["leaseKey"] == {"S": "shardId-000000000002"}
    assert item["leaseOwner"] == {"S": "host-a:123"}
    assert item["leaseCounter"] == {"N": "41"}
    assert item["ownerSwitchesSinceCheckpoint"] == {"N": "2"}
    assert item["checkpoint"] == {"S": "49590338271490256608559692538361571095921575989136588898"}
    assert item["checkpointSubSequenceNumber"] == {"N": "3"}
    assert item["pendingCheckpointSubSequenceNumber"] == {"N": "0"}
    assert item["pendingCheckpointState"] == {"B": b"\x00state\xff"}
    assert item["parentShardId"] == {"SS": ["shardId-000000000000", "shardId-000000000001"]}
    assert item["childShardIds"] == {"SS": ["shardId-000000000003"]}
    assert item["startingHashKey"] == {"S": "0"}
    assert item["endingHashKey"] == {"S": str(2**128 - 1)}


def test_new_lease_item_omits_owner_empty_sets_and_pending_fields() -> None:
    item = lease_to_item(Lease("shardId-0", checkpoint=ExtendedSequenceNumber(TRIM_HORIZON)))
    assert set(item) == {
        "leaseKey",
        "leaseCounter",
        "ownerSwitchesSinceCheckpoint",
        "checkpoint",
        "checkpointSubSequenceNumber",
    }
    assert item["checkpoint"] == {"S": "TRIM_HORIZON"}


def test_unknown_attributes_are_preserved_on_round_trip() -> None:
    item = lease_to_item(FULL_LEASE)
    item["checkpointOwner"] = {"S": "host-b"}
    item["throughputKBps"] = {"N": "12.5"}
    item["entityType"] = {"S": "LEASE"}
    lease = lease_from_item(item)
    assert lease is not None
    assert lease.extra == {
        "checkpointOwner": {"S": "host-b"},
        "throughputKBps": {"N": "12.5"},
        "entityType": {"S": "LEASE"},
    }
    assert lease_to_item(lease) == item


@pytest.mark.parametrize("entity_type", ["WORKER_METRICS", "CLIENT_VERSION", "LEASE_ASSIGNMENT"])
def test_items_of_other_entity_types_are_skipped(entity_type: str) -> None:
    item = {"leaseKey": {"S": "x"}, "entityType": {"S": entity_type}}
    assert lease_from_item(item) is None


def test_minimal_item_reads_with_defaults() -> None:
    lease = lease_from_item({"leaseKey": {"S": "shardId-7"}})
    assert lease == Lease("shardId-7")
    assert lease.lease_owner is None
    assert lease.checkpoint is None


def test_checkpoint_without_sub_sequence_reads_as_zero() -> None:
    lease = lease_from_item({"leaseKey": {"S": "s"}, "checkpoint": {"S": SHARD_END}})
    assert lease is not None
    assert lease.checkpoint == ExtendedSequenceNumber(SHARD_END, 0)
    assert lease.is_finished


def test_single_parent_written_as_string_set_of_one() -> None:
    lease = Lease("child", parent_shard_ids=frozenset({"parent"}))
    assert lease_to_item(lease)["parentShardId"] == {"SS": ["parent"]}


def test_item_without_lease_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="leaseKey"):
        lease_from_item({"leaseCounter": {"N": "1"}})


def test_malformed_checkpoint_is_rejected_with_the_key() -> None:
    with pytest.raises(ValueError, match="shard-9"):
        lease_from_item({"leaseKey": {"S": "shard-9"}, "checkpoint": {"S": "not-a-number"}})


def test_lease_is_hashable_despite_extra_attributes() -> None:
    lease = Lease("a", extra={"throughputKBps": {"N": "1"}})
    assert {lease: 1}[lease] == 1


def test_only_shard_end_checkpoint_means_finished() -> None:
    assert not Lease("a").is_finished
    assert not Lease("a", checkpoint=ExtendedSequenceNumber("99")).is_finished
    assert Lease("a", checkpoint=ExtendedSequenceNumber(SHARD_END)).is_finished
