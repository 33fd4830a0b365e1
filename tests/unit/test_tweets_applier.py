"""Exactly-once application of batches: crashes between any two writes, replays with another
batching, zombies, duplicates on one shard and across shards (an in-memory store with
DynamoDB's conditional semantics stands in for the tables)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.tweets.applier import BatchApplier, InRecord
from processors.tweets.counting import Target, position_of
from processors.tweets.events import Tweet, encode_tweet, minute_of
from tests.support.tweets import Crash, MemoryStore, summed

MINUTE = 1714571100000  # 2024-05-01T13:45:00Z
LATENESS_MS = 60_000
SHARD = "shardId-000000000000"


def record(
    index: int, tweet_id: str, lang: str = "en", minute: int = 0, late: bool = False
) -> InRecord:
    created = MINUTE + minute * 60_000 + 5_000
    arrival = created + (3 * 60_000 if late else 2_000)
    # Three user records per Kinesis record, as out of a KPL aggregate.
    position = position_of(str(1000 + index // 3), index % 3)
    return InRecord(position, encode_tweet(Tweet(tweet_id, created, lang, "u", "t")), arrival)


def garbage(index: int) -> InRecord:
    return InRecord(position_of(str(1000 + index // 3), index % 3), b"\x00not a tweet", MINUTE)


def truth(records: list[InRecord], shard: str = SHARD) -> tuple[Counter, Counter]:
    """Expected (counts, late) summed over shards: the first copy of each id in stream order."""
    from processors.tweets.events import decode_tweet

    counts: Counter = Counter()
    late: Counter = Counter()
    seen = set()
    for item in records:
        tweet = decode_tweet(item.data)
        if tweet is None or tweet.tweet_id in seen:
            continue
        seen.add(tweet.tweet_id)
        is_late = item.arrival_ms - tweet.created_ms > 2 * 60_000
        (late if is_late else counts)[(tweet.lang, minute_of(tweet.created_ms))] += 1
    return counts, late


def new_applier(store: MemoryStore, shard: str = SHARD) -> BatchApplier:
    """A processor (re)starting: it knows only what the progress item says."""
    applier = BatchApplier(store, shard, LATENESS_MS)
    applier.applied_through = store.applied_through(Target("progress", shard))
    return applier


def assert_exact(store: MemoryStore, records: list[InRecord]) -> None:
    counts, late = truth(records)
    assert summed(store.table("counts")) == counts
    assert summed(store.table("late")) == late
    progress = store.items[Target("progress", SHARD)]
    assert progress["records"] == len(records)


@st.composite
def streams(draw: st.DrawFn) -> list[InRecord]:
    size = draw(st.integers(1, 40))
    out = []
    for index in range(size):
        if draw(st.integers(0, 19)) == 0:
            out.append(garbage(index))
            continue
        out.append(
            record(
                index,
                tweet_id=str(draw(st.integers(1, 25))),  # a small id pool: many duplicates
                lang=draw(st.sampled_from(["en", "ja", "es"])),
                minute=draw(st.integers(0, 2)),
                late=draw(st.booleans()),
            )
        )
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=streams(), data=st.data())
def test_crashes_anywhere_and_replays_with_other_batchings_count_exactly_once(
    records: list[InRecord], data: st.DataObject
) -> None:
    store = MemoryStore()
    checkpoint = 0  # index of the first record after the committed checkpoint
    for _life in range(30):
        applier = new_applier(store)
        # Each life may die at some write, or after a batch's writes before its checkpoint.
        crashes = data.draw(st.integers(0, 3)) > 0
        store.crash_after = store.writes + data.draw(st.integers(0, 15)) if crashes else None
        index = checkpoint
        try:
            while index < len(records):
                size = data.draw(st.integers(1, 8), label="batch size")
                applier.apply(records[index : index + size])
                index += size
                if data.draw(st.integers(0, 3)) == 0:
                    raise Crash("killed after the writes, before the checkpoint")
                checkpoint = min(index, len(records))
            break
        except Crash:
            continue
    else:
        # Not finished after 30 lives: finish cleanly (the property is about what was applied).
        new_applier(store).apply(records[checkpoint:])
    assert_exact(store, records)


def test_the_same_batch_twice_adds_nothing_the_second_time() -> None:
    store = MemoryStore()
    batch = [record(i, str(i), minute=i % 2, late=i == 3) for i in range(6)]
    new_applier(store).apply(batch)
    again = new_applier(store).apply(batch)
    assert again.already_applied == 6 and not again.outcomes
    assert_exact(store, batch)


def test_a_replay_that_starts_inside_the_applied_range_adds_only_the_rest() -> None:
    store = MemoryStore()
    records = [record(i, str(i)) for i in range(10)]
    first = new_applier(store)
    first.apply(records[:6])
    # Restart whose progress item is stale (the crash came before the progress write).
    stale = BatchApplier(store, SHARD, LATENESS_MS)
    result = stale.apply(records[2:10])
    assert result.refused_writes >= 1  # the counts row refused, then took only 6..9
    assert result.outcomes["counted"] == 8  # outcomes are recomputed, the sums are not
    assert_exact(store, records)


def test_a_zombie_and_the_new_owner_interleaving_count_each_record_once() -> None:
    store = MemoryStore()
    records = [record(i, str(i % 9), minute=i % 3) for i in range(24)]
    zombie = new_applier(store)
    zombie.apply(records[:5])
    owner = new_applier(store)  # took the lease; starts after the zombie's checkpoint
    owner.apply(records[5:12])
    zombie.apply(records[5:9])  # the zombie still works through its old batches
    zombie.apply(records[9:15])
    owner.apply(records[12:20])
    zombie.apply(records[15:24])
    owner.apply(records[20:24])
    assert_exact(store, records)


def test_a_duplicate_within_one_batch_is_counted_once() -> None:
    store = MemoryStore()
    batch = [record(0, "7"), record(1, "8"), record(2, "7")]
    result = new_applier(store).apply(batch)
    assert result.outcomes == Counter({"counted": 2, "duplicates": 1})
    assert sum(store.table("counts").values()) == 2


def test_copies_on_two_shards_count_once_and_replays_keep_the_same_winner() -> None:
    store = MemoryStore()
    parent, child = "shardId-000000000000", "shardId-000000000002"
    copy_on_parent = [record(0, "42", lang="ja"), record(1, "43")]
    copy_on_child = [record(0, "42", lang="ja"), record(1, "44")]
    BatchApplier(store, parent, LATENESS_MS).apply(copy_on_parent)
    BatchApplier(store, child, LATENESS_MS).apply(copy_on_child)
    BatchApplier(store, child, LATENESS_MS).apply(copy_on_child)  # replayed on the child
    BatchApplier(store, parent, LATENESS_MS).apply(copy_on_parent)  # and on the parent
    counts = store.table("counts")
    assert counts[("ja", "2024-05-01T13:45Z", parent)] == 1
    assert ("ja", "2024-05-01T13:45Z", child) not in counts
    assert sum(counts.values()) == 3
    assert store.items[Target("progress", child)]["duplicates"] == 1


def test_claims_run_in_parallel_with_the_same_result() -> None:
    records = [record(i, str(i % 17), lang=["en", "ja"][i % 2]) for i in range(60)]
    store = MemoryStore()
    with ThreadPoolExecutor(8) as pool:
        applier = BatchApplier(store, SHARD, LATENESS_MS, pool=pool)
        applier.apply(records[:31])
        applier.apply(records[31:])
    assert_exact(store, records)
    assert len(store.claims) == 17


def test_stage_hook_sees_the_stages_in_write_order() -> None:
    stages: list[str] = []
    applier = BatchApplier(MemoryStore(), SHARD, LATENESS_MS, stage_hook=stages.append)
    applier.apply([record(0, "1")])
    applier.apply([record(0, "1")])  # nothing new: no stage runs
    assert stages == ["claims", "counts", "progress"]
