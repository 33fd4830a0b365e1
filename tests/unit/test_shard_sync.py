"""Shard-sync planning (which shards get leases, from where) and the ListShards shell."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from daemon.errors import DependencyError, StreamNotFoundError, ThrottledError
from daemon.leases.model import Lease
from daemon.sequence import AT_TIMESTAMP, LATEST, SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from daemon.shard_sync import (
    children_of,
    is_closed,
    list_all_shards,
    plan_new_leases,
    sync_shards,
)

MAX_HASH = 2**128 - 1
HALF = 2**127
AT_LATEST = ExtendedSequenceNumber(LATEST)
AT_TRIM = ExtendedSequenceNumber(TRIM_HORIZON)
AT_TIME = ExtendedSequenceNumber(AT_TIMESTAMP)


def shard(
    shard_id: str,
    *,
    parent: str | None = None,
    adjacent: str | None = None,
    closed: bool = False,
    hash_range: tuple[int, int] = (0, MAX_HASH),
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ShardId": shard_id,
        "HashKeyRange": {
            "StartingHashKey": str(hash_range[0]),
            "EndingHashKey": str(hash_range[1]),
        },
        "SequenceNumberRange": {"StartingSequenceNumber": "100"},
    }
    if parent:
        entry["ParentShardId"] = parent
    if adjacent:
        entry["AdjacentParentShardId"] = adjacent
    if closed:
        entry["SequenceNumberRange"]["EndingSequenceNumber"] = "200"
    return entry


# shard-0 split into shard-1 (low half) and shard-2 (high half).
SPLIT = [
    shard("shard-0", closed=True),
    shard("shard-1", parent="shard-0", hash_range=(0, HALF - 1)),
    shard("shard-2", parent="shard-0", hash_range=(HALF, MAX_HASH)),
]
# shard-1 and shard-2 merged into shard-3.
MERGE = [
    shard("shard-1", closed=True, hash_range=(0, HALF - 1)),
    shard("shard-2", closed=True, hash_range=(HALF, MAX_HASH)),
    shard("shard-3", parent="shard-1", adjacent="shard-2"),
]


def existing(*keys: str, checkpoint: str = "150") -> dict[str, Lease]:
    return {
        key: Lease(key, lease_owner="w", checkpoint=ExtendedSequenceNumber(checkpoint))
        for key in keys
    }


def by_key(leases: list[Lease]) -> dict[str, Lease]:
    return {lease.lease_key: lease for lease in leases}


def checkpoints(leases: list[Lease]) -> dict[str, str]:
    return {lease.lease_key: str(lease.checkpoint) for lease in leases}


# -- helpers ----------------------------------------------------------------------


def test_children_of_finds_split_and_merge_children() -> None:
    assert children_of("shard-0", SPLIT) == ["shard-1", "shard-2"]
    assert children_of("shard-2", MERGE) == ["shard-3"]
    assert children_of("shard-1", SPLIT) == []


def test_shard_with_ending_sequence_number_is_closed() -> None:
    assert is_closed(SPLIT[0])
    assert not is_closed(SPLIT[1])


# -- planning ----------------------------------------------------------------------


def test_empty_table_at_latest_leases_open_shards_only() -> None:
    planned = plan_new_leases(SPLIT, {}, AT_LATEST)
    assert checkpoints(planned) == {"shard-1": LATEST, "shard-2": LATEST}
    assert by_key(planned)["shard-1"].parent_shard_ids == {"shard-0"}


def test_empty_table_at_trim_horizon_leases_whole_lineage_parents_first() -> None:
    planned = plan_new_leases(list(reversed(SPLIT)), {}, AT_TRIM)
    assert [lease.lease_key for lease in planned] == ["shard-0", "shard-1", "shard-2"]
    assert set(checkpoints(planned).values()) == {TRIM_HORIZON}


def test_empty_table_at_timestamp_starts_whole_lineage_from_the_timestamp() -> None:
    planned = plan_new_leases(SPLIT, {}, AT_TIME)
    assert checkpoints(planned) == {
        "shard-0": AT_TIMESTAMP,
        "shard-1": AT_TIMESTAMP,
        "shard-2": AT_TIMESTAMP,
    }


def test_new_leases_are_unowned_with_counter_zero() -> None:
    for lease in plan_new_leases(SPLIT, {}, AT_TRIM):
        assert lease.lease_owner is None
        assert lease.lease_counter == 0


def test_split_children_of_leased_parent_start_at_trim_horizon_with_lineage() -> None:
    planned = by_key(plan_new_leases(SPLIT, existing("shard-0"), AT_LATEST))
    assert set(planned) == {"shard-1", "shard-2"}
    low = planned["shard-1"]
    assert low.checkpoint == AT_TRIM
    assert low.parent_shard_ids == {"shard-0"}
    assert (low.starting_hash_key, low.ending_hash_key) == (0, HALF - 1)
    assert (planned["shard-2"].starting_hash_key, planned["shard-2"].ending_hash_key) == (
        HALF,
        MAX_HASH,
    )


def test_merge_child_names_both_parents() -> None:
    planned = plan_new_leases(MERGE, existing("shard-1", "shard-2"), AT_LATEST)
    assert len(planned) == 1
    assert planned[0].lease_key == "shard-3"
    assert planned[0].checkpoint == AT_TRIM
    assert planned[0].parent_shard_ids == {"shard-1", "shard-2"}


def test_merge_child_with_one_leased_parent_still_starts_at_trim_horizon() -> None:
    planned = plan_new_leases(MERGE, existing("shard-1", checkpoint=SHARD_END), AT_LATEST)
    assert checkpoints(planned) == {"shard-3": TRIM_HORIZON}


def test_existing_leases_are_never_planned_again() -> None:
    current = existing("shard-0", "shard-1", "shard-2")
    assert plan_new_leases(SPLIT, current, AT_TRIM) == []


def test_cleaned_up_parent_is_not_recreated() -> None:
    current = existing("shard-1", "shard-2")
    assert plan_new_leases(SPLIT, current, AT_TRIM) == []


def test_closed_parent_skipped_at_latest_stays_skipped_on_the_next_sync() -> None:
    first = plan_new_leases(SPLIT, {}, AT_LATEST)
    assert plan_new_leases(SPLIT, by_key(first), AT_LATEST) == []


def test_missed_generation_is_leased_between_known_parent_and_new_child() -> None:
    shards = [
        shard("a", closed=True),
        shard("b", parent="a", closed=True),
        shard("c", parent="b"),
    ]
    planned = plan_new_leases(shards, existing("a"), AT_LATEST)
    assert [lease.lease_key for lease in planned] == ["b", "c"]
    assert set(checkpoints(planned).values()) == {TRIM_HORIZON}


def test_child_of_a_parent_missing_from_listing_gets_initial_position() -> None:
    shards = [shard("child", parent="trimmed-away")]
    planned = plan_new_leases(shards, {}, AT_LATEST)
    assert checkpoints(planned) == {"child": LATEST}
    assert planned[0].parent_shard_ids == {"trimmed-away"}


def test_interrupted_bootstrap_is_completed_by_the_next_sync() -> None:
    shards = [
        shard("root-a", closed=True),
        shard("root-b", closed=True),
        shard("merged", parent="root-a", adjacent="root-b"),
        shard("other"),
    ]
    created_before_crash = {"other": Lease("other", checkpoint=AT_TRIM)}
    planned = plan_new_leases(shards, created_before_crash, AT_TRIM)
    assert [lease.lease_key for lease in planned] == ["root-a", "root-b", "merged"]


def test_child_of_parent_not_yet_started_from_timestamp_starts_from_timestamp() -> None:
    planned = plan_new_leases(SPLIT, existing("shard-0", checkpoint=AT_TIMESTAMP), AT_TIME)
    assert set(checkpoints(planned).values()) == {AT_TIMESTAMP}


# -- ListShards shell --------------------------------------------------------------


@pytest.fixture
def kinesis() -> Any:
    return boto3.client(
        "kinesis",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_list_all_shards_follows_next_token_without_stream_name(kinesis: Any) -> None:
    with Stubber(kinesis) as stub:
        stub.add_response(
            "list_shards",
            {"Shards": [SPLIT[0]], "NextToken": "page-2"},
            {"StreamName": "tweets"},
        )
        stub.add_response("list_shards", {"Shards": SPLIT[1:]}, {"NextToken": "page-2"})
        shards = list_all_shards(kinesis, stream_name="tweets")
        stub.assert_no_pending_responses()
    assert [item["ShardId"] for item in shards] == ["shard-0", "shard-1", "shard-2"]


def test_list_all_shards_by_arn(kinesis: Any) -> None:
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/tweets"
    with Stubber(kinesis) as stub:
        stub.add_response("list_shards", {"Shards": SPLIT}, {"StreamARN": arn})
        assert len(list_all_shards(kinesis, stream_arn=arn)) == 3


def test_missing_stream_names_the_stream_and_the_fix(kinesis: Any) -> None:
    with Stubber(kinesis) as stub:
        stub.add_client_error("list_shards", "ResourceNotFoundException", "Stream not found")
        with pytest.raises(StreamNotFoundError, match=r"'tweets'.*create-stream"):
            list_all_shards(kinesis, stream_name="tweets")


def test_list_shards_throttling_is_throttled_error(kinesis: Any) -> None:
    with Stubber(kinesis) as stub:
        stub.add_client_error("list_shards", "LimitExceededException", "Rate exceeded")
        with pytest.raises(ThrottledError):
            list_all_shards(kinesis, stream_name="tweets")


def test_list_shards_server_error_is_retriable_dependency_error(kinesis: Any) -> None:
    with Stubber(kinesis) as stub:
        stub.add_client_error("list_shards", "InternalFailure", "boom", http_status_code=500)
        with pytest.raises(DependencyError) as caught:
            list_all_shards(kinesis, stream_name="tweets")
    assert caught.value.retriable


def test_list_all_shards_needs_exactly_one_stream_identifier(kinesis: Any) -> None:
    with pytest.raises(ValueError):
        list_all_shards(kinesis)
    with pytest.raises(ValueError):
        list_all_shards(kinesis, stream_name="a", stream_arn="arn:aws:kinesis:x")


class FakeTable:
    """An in-memory lease table; ``taken_by_peer`` keys are created by a 'peer' first."""

    def __init__(self, leases: list[Lease], taken_by_peer: dict[str, Lease] | None = None):
        self.leases = {lease.lease_key: lease for lease in leases}
        self.taken_by_peer = taken_by_peer or {}
        self.created: list[str] = []

    def list_leases(self) -> list[Lease]:
        return list(self.leases.values())

    def get_lease(self, lease_key: str) -> Lease | None:
        return self.leases.get(lease_key)

    def create_lease_if_absent(self, lease: Lease) -> bool:
        if lease.lease_key in self.taken_by_peer:
            self.leases[lease.lease_key] = self.taken_by_peer[lease.lease_key]
            return False
        self.created.append(lease.lease_key)
        self.leases[lease.lease_key] = lease
        return True


def test_sync_creates_missing_leases_and_returns_all(kinesis: Any) -> None:
    table = FakeTable(list(existing("shard-0").values()))
    with Stubber(kinesis) as stub:
        stub.add_response("list_shards", {"Shards": SPLIT}, {"StreamName": "tweets"})
        leases = sync_shards(kinesis, table, "tweets", AT_LATEST)
    assert table.created == ["shard-1", "shard-2"]
    assert sorted(lease.lease_key for lease in leases) == ["shard-0", "shard-1", "shard-2"]


def test_sync_returns_the_peers_lease_when_it_won_the_create_race(kinesis: Any) -> None:
    peer_lease = Lease("shard-1", lease_owner="peer", lease_counter=3, checkpoint=AT_TRIM)
    table = FakeTable(list(existing("shard-0").values()), {"shard-1": peer_lease})
    with Stubber(kinesis) as stub:
        stub.add_response("list_shards", {"Shards": SPLIT}, {"StreamName": "tweets"})
        leases = by_key(sync_shards(kinesis, table, "tweets", AT_LATEST))
    assert leases["shard-1"] == peer_lease
    assert table.created == ["shard-2"]
