"""What a batch adds where: positions, the late rule, outcomes, contributions, the applied filter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.tweets.counting import (
    Fact,
    Outcome,
    Target,
    claimant_of,
    contributions,
    is_late,
    outcome_of,
    pending,
    position_of,
)
from processors.tweets.events import Tweet

MINUTE = 1714571100000  # 2024-05-01T13:45:00Z
LATENESS_MS = 60_000
SHARD = "shardId-000000000001"


def tweet(tweet_id: str, created_ms: int = MINUTE + 1000, lang: str = "en") -> Tweet:
    return Tweet(tweet_id, created_ms, lang, "user", "text")


def fact(position: str, t: Tweet | None, arrival_ms: int = MINUTE + 2000, holder: str = "") -> Fact:
    return Fact(position, t, arrival_ms, holder or claimant_of(SHARD, position))


sequences = st.integers(0, 10**56 - 1)
subs = st.integers(0, 2**32 - 1)


@given(sequences, subs, sequences, subs)
def test_position_text_order_is_stream_order(
    seq_a: int, sub_a: int, seq_b: int, sub_b: int
) -> None:
    a = position_of(str(seq_a), sub_a)
    b = position_of(str(seq_b), sub_b)
    assert (a < b) == ((seq_a, sub_a) < (seq_b, sub_b))


def test_short_emulator_sequence_numbers_compare_as_integers() -> None:
    assert position_of("10", 0) > position_of("9", 0)
    assert position_of("9", 3) > position_of("9", None)


@pytest.mark.parametrize("sequence, sub", [("12a", 0), ("", 0), ("1" * 61, 0), ("5", -1)])
def test_position_rejects_what_is_not_a_record_position(sequence: str, sub: int) -> None:
    with pytest.raises(ValueError):
        position_of(sequence, sub)


def test_a_tweet_is_late_from_the_end_of_its_minute_plus_the_allowed_lateness() -> None:
    created = MINUTE + 59_000
    deadline = MINUTE + 60_000 + LATENESS_MS
    assert not is_late(created, deadline - 1, LATENESS_MS)
    assert is_late(created, deadline, LATENESS_MS)
    # The allowance runs from the end of the minute, not from the tweet's own time.
    assert not is_late(MINUTE, MINUTE + 60_000 + LATENESS_MS - 1, LATENESS_MS)


def test_outcomes_invalid_duplicate_late_counted() -> None:
    position = position_of("100", 0)
    mine = claimant_of(SHARD, position)
    late_arrival = MINUTE + 60_000 + LATENESS_MS
    assert outcome_of(fact(position, None), mine, LATENESS_MS) is Outcome.INVALID
    assert outcome_of(fact(position, tweet("1"), holder="other"), mine, LATENESS_MS) is (
        Outcome.DUPLICATE
    )
    assert outcome_of(fact(position, tweet("1"), late_arrival), mine, LATENESS_MS) is Outcome.LATE
    assert outcome_of(fact(position, tweet("1")), mine, LATENESS_MS) is Outcome.COUNTED


def test_a_duplicate_that_is_also_late_is_only_a_duplicate() -> None:
    position = position_of("100", 0)
    late = fact(position, tweet("1"), MINUTE + 10 * 60_000, holder="elsewhere")
    assert outcome_of(late, claimant_of(SHARD, position), LATENESS_MS) is Outcome.DUPLICATE


def test_contributions_go_to_the_minute_row_of_the_right_table_and_to_progress() -> None:
    p1, p2, p3, p4, p5 = (position_of(str(n), 0) for n in range(1, 6))
    facts = [
        fact(p1, tweet("1", lang="en")),
        fact(p2, tweet("2", created_ms=MINUTE + 61_000, lang="ja")),
        fact(p3, tweet("3", lang="en"), arrival_ms=MINUTE + 200_000),
        fact(p4, tweet("1"), holder=claimant_of(SHARD, p1)),
        fact(p5, None),
    ]
    plan = contributions(SHARD, facts, LATENESS_MS)
    assert plan[Target("counts", SHARD, "2024-05-01T13:45Z")] == [(p1, {"n_en": 1})]
    assert plan[Target("counts", SHARD, "2024-05-01T13:46Z")] == [(p2, {"n_ja": 1})]
    assert plan[Target("late", SHARD, "2024-05-01T13:45Z")] == [(p3, {"n_en": 1})]
    progress = plan[Target("progress", SHARD)]
    assert [increments for _, increments in progress] == [
        {"records": 1, "counted": 1},
        {"records": 1, "counted": 1},
        {"records": 1, "late": 1},
        {"records": 1, "duplicates": 1},
        {"records": 1, "invalid": 1},
    ]
    assert len(plan) == 4


def test_pending_keeps_only_what_is_past_the_applied_position() -> None:
    items = [(position_of(str(n), 0), {"n_en": 1, "n_ja": n % 2}) for n in range(1, 6)]
    everything = pending(items, None)
    assert everything is not None
    assert (everything.first, everything.last, everything.records) == (
        items[0][0],
        items[-1][0],
        5,
    )
    assert everything.sums == {"n_en": 5, "n_ja": 3}
    rest = pending(items, items[2][0])
    assert rest is not None and rest.first == items[3][0] and rest.sums == {"n_en": 2, "n_ja": 1}
    assert pending(items, items[-1][0]) is None
    assert pending([], None) is None
