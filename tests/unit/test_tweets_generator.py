"""The tweet source: a deterministic, realistic plan whose injected faults are what it says they
are, and the ground truth it derives from what was sent."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from processors.tweets.counting import is_late
from processors.tweets.events import decode_tweet, minute_of
from processors.tweets.generator import (
    LANGUAGES,
    GeneratorSettings,
    Planned,
    SentTweet,
    ground_truth,
    plan_tweets,
)

START_MS = 1714571130000
SETTINGS = GeneratorSettings(rate=400, duration_s=20, seed=5, allowed_lateness_s=60)


@pytest.fixture(scope="module")
def plan() -> list[Planned]:
    return plan_tweets(SETTINGS, START_MS)


def test_the_same_seed_gives_the_same_plan(plan: list[Planned]) -> None:
    again = plan_tweets(SETTINGS, START_MS)
    assert [(p.offset_s, p.data) for p in again] == [(p.offset_s, p.data) for p in plan]
    other = plan_tweets(GeneratorSettings(rate=400, duration_s=1, seed=6), START_MS)
    assert [p.data for p in other[:50]] != [p.data for p in plan[:50]]


def test_sends_come_in_time_order_at_about_the_rate(plan: list[Planned]) -> None:
    offsets = [p.offset_s for p in plan]
    assert offsets == sorted(offsets)
    originals = [p for p in plan if not p.duplicate]
    assert 0.9 * 400 * 20 < len(originals) < 1.1 * 400 * 20


def test_every_payload_decodes_to_its_tweet_and_is_keyed_by_its_user(plan: list[Planned]) -> None:
    for planned in plan[:500]:
        assert decode_tweet(planned.data) == planned.tweet
        assert orjson.loads(planned.data)["user"]["screen_name"] == planned.tweet.user


def test_ids_are_unique_except_for_duplicates_which_are_exact_copies(plan: list[Planned]) -> None:
    originals = {p.tweet.tweet_id: p for p in plan if not p.duplicate}
    assert len(originals) == sum(1 for p in plan if not p.duplicate)
    copies = [p for p in plan if p.duplicate]
    assert copies, "a 2% share of 8000 tweets yields duplicates"
    for copy in copies:
        original = originals[copy.tweet.tweet_id]
        assert copy.data == original.data
        assert 0.05 <= copy.offset_s - original.offset_s <= 3.0


def test_languages_follow_the_distribution(plan: list[Planned]) -> None:
    shares = Counter(p.tweet.lang for p in plan if not p.duplicate)
    total = sum(shares.values())
    assert shares.most_common(2)[0][0] == "en" and shares.most_common(2)[1][0] == "ja"
    assert 0.27 < shares["en"] / total < 0.37
    assert set(shares) <= {lang for lang, _ in LANGUAGES}


def test_a_few_users_write_much_of_the_traffic(plan: list[Planned]) -> None:
    per_user = Counter(p.tweet.user for p in plan if not p.duplicate)
    top_tenth = sum(count for _, count in per_user.most_common(len(per_user) // 10))
    assert top_tenth > 0.3 * sum(per_user.values())


def test_injected_lateness_is_clear_of_the_boundary_for_any_arrival_within_seconds(
    plan: list[Planned],
) -> None:
    allowed_ms = int(SETTINGS.allowed_lateness_s * 1000)
    kinds = Counter(p.kind for p in plan if not p.duplicate)
    assert kinds["late"] > 50 and kinds["too_late"] > 25
    for planned in plan:
        sent = START_MS + int(planned.offset_s * 1000)
        for arrival in (sent, sent + 5000):
            assert is_late(planned.tweet.created_ms, arrival, allowed_ms) == (
                planned.kind == "too_late"
            )


def test_on_time_tweets_arrive_out_of_event_time_order(plan: list[Planned]) -> None:
    created = [p.tweet.created_ms for p in plan if p.kind == "on_time" and not p.duplicate]
    inversions = sum(1 for a, b in zip(created, created[1:], strict=False) if b < a)
    assert inversions > len(created) // 10


def sent(planned: Planned, sent_ms: int, acked_ms: int | None = None) -> SentTweet:
    return SentTweet(planned, sent_ms, acked_ms or sent_ms + 50, "shardId-0", "1", 0)


def test_ground_truth_counts_each_id_once_and_puts_too_late_tweets_in_the_late_table(
    plan: list[Planned],
) -> None:
    entries = [sent(p, START_MS + int(p.offset_s * 1000)) for p in plan]
    truth = ground_truth(entries, SETTINGS.allowed_lateness_s)
    originals = [p for p in plan if not p.duplicate]
    assert truth.records == len(plan) and truth.unique == len(originals)
    assert truth.duplicates == len(plan) - len(originals)
    assert sum(truth.late.values()) == sum(1 for p in originals if p.kind == "too_late")
    assert sum(truth.counts.values()) == sum(1 for p in originals if p.kind != "too_late")
    first = originals[0].tweet
    key = (first.lang, minute_of(first.created_ms))
    assert (truth.late if originals[0].kind == "too_late" else truth.counts)[key] >= 1
    assert truth.ambiguous == 0


def test_ground_truth_flags_a_tweet_whose_arrival_straddles_the_deadline(
    plan: list[Planned],
) -> None:
    tweet = plan[0].tweet
    minute_end = (tweet.created_ms // 60_000 + 1) * 60_000
    deadline = minute_end + int(SETTINGS.allowed_lateness_s * 1000)
    straddling = sent(plan[0], deadline - 100, deadline + 100)
    assert ground_truth([straddling], SETTINGS.allowed_lateness_s).ambiguous == 1


@pytest.mark.parametrize(
    "changes",
    [{"rate": 0}, {"late_share": 0.8, "too_late_share": 0.3}, {"allowed_lateness_s": 10}],
)
def test_settings_refuse_what_cannot_be_generated(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GeneratorSettings(**changes)  # type: ignore[arg-type]
