"""Shard map lookup by binary search, ListShards paging, and the refresh schedule."""

from __future__ import annotations

import pytest

from producer.shard_map import RefreshSchedule, Shard, ShardMap, fetch_shard_map
from producer.testing import FakeKinesis

TOP = (1 << 128) - 1


def four_shards() -> ShardMap:
    step = 1 << 126
    return ShardMap(
        [Shard(f"s{i}", i * step, TOP if i == 3 else (i + 1) * step - 1) for i in (2, 0, 3, 1)]
    )


@pytest.mark.parametrize(
    ("hash_key", "shard"),
    [(0, "s0"), ((1 << 126) - 1, "s0"), (1 << 126, "s1"), (1 << 127, "s2"), (TOP, "s3")],
)
def test_lookup_finds_the_shard_whose_range_holds_the_key(hash_key, shard):
    assert four_shards().shard_for(hash_key) == shard


def test_key_in_a_gap_between_shards_has_no_shard():
    shard_map = ShardMap([Shard("low", 0, 99), Shard("high", 200, TOP)])
    assert shard_map.shard_for(150) is None
    assert shard_map.shard_for(99) == "low" and shard_map.shard_for(200) == "high"


def test_key_above_every_shard_has_no_shard():
    assert ShardMap([Shard("only", 0, 10)]).shard_for(11) is None


def test_get_returns_the_shard_and_its_range():
    shard = four_shards().get("s1")
    assert shard is not None and shard.contains(1 << 126) and not shard.contains(1 << 127)
    assert four_shards().get("nope") is None


def test_fetch_reads_every_page_and_skips_closed_shards():
    kinesis = FakeKinesis(page_size=2)
    kinesis.create_stream("s", 3)
    children = kinesis.split_shard("s", "shardId-000000000001", 1 << 127)
    shard_map = fetch_shard_map(kinesis, "s")
    ids = {shard.shard_id for shard in shard_map.shards}
    assert ids == {"shardId-000000000000", "shardId-000000000002", *children}
    assert kinesis.list_calls == 3


def test_refresh_is_due_once_wanted_and_not_in_progress():
    schedule = RefreshSchedule()
    assert schedule.due(0.0)
    schedule.start()
    assert not schedule.due(0.0)
    schedule.request()
    assert not schedule.due(0.0)  # one fetch at a time
    schedule.succeeded(0.0)
    assert not schedule.due(0.5) and schedule.due(1.0)


def test_failed_refreshes_back_off_exponentially_up_to_a_cap():
    schedule = RefreshSchedule(backoff_min=0.5, backoff_max=3.0)
    delays = []
    for _ in range(6):
        schedule.start()
        delays.append(schedule.failed(0.0))
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    schedule.start()
    schedule.succeeded(10.0)
    assert schedule.failures == 0
