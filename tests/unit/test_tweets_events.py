"""The tweet payload: encoding, tolerant decoding, Snowflake ids and minutes of event time."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.tweets.events import (
    TWITTER_EPOCH_MS,
    Tweet,
    decode_tweet,
    encode_tweet,
    format_created_at,
    minute_end_ms,
    minute_of,
    snowflake_id,
)

# 2024-05-01T13:45:30.250Z
MOMENT = 1714571130250


def test_encoded_tweet_decodes_to_the_same_tweet() -> None:
    tweet = Tweet("1785000000000000001", MOMENT, "ja", "mushketyk", "今日はいい天気ですね")
    assert decode_tweet(encode_tweet(tweet, user_id=7)) == tweet


def test_payload_looks_like_a_twitter_status() -> None:
    status = orjson.loads(encode_tweet(Tweet("42", MOMENT, "en", "anonymous", "Stop!")))
    assert status["created_at"] == "Wed May 01 13:45:30 +0000 2024"
    assert status["timestamp_ms"] == str(MOMENT)
    assert status["id_str"] == "42" and status["id"] == 42
    assert status["user"]["screen_name"] == "anonymous"


def test_id_str_wins_over_an_id_a_json_reader_turned_into_a_float() -> None:
    data = b'{"id": 1.7850000000000001e18, "id_str": "1785000000000000001", "timestamp_ms": "1"}'
    tweet = decode_tweet(data)
    assert tweet is not None and tweet.tweet_id == "1785000000000000001"


def test_event_time_falls_back_to_created_at_when_timestamp_ms_is_missing() -> None:
    data = orjson.dumps({"id": 5, "created_at": format_created_at(MOMENT), "lang": "en"})
    tweet = decode_tweet(data)
    assert tweet is not None and tweet.created_ms == MOMENT - 250  # created_at has seconds only


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1, 2]",
        b'{"timestamp_ms": "1714571130250"}',
        b'{"id": 5}',
        b'{"id": -5, "timestamp_ms": "1"}',
        b'{"id": 5, "created_at": "yesterday"}',
        b'{"id": true, "timestamp_ms": "1"}',
    ],
)
def test_records_that_are_not_countable_tweets_decode_to_none(data: bytes) -> None:
    assert decode_tweet(data) is None


@pytest.mark.parametrize("lang", [None, 7, "English", "EN", "x" * 40, ""])
def test_a_missing_or_strange_language_counts_as_und(lang: object) -> None:
    tweet = decode_tweet(orjson.dumps({"id": 1, "timestamp_ms": "1", "lang": lang}))
    assert tweet is not None and tweet.lang == "und"


def test_regional_language_codes_are_kept() -> None:
    tweet = decode_tweet(orjson.dumps({"id": 1, "timestamp_ms": "1", "lang": "zh-cn"}))
    assert tweet is not None and tweet.lang == "zh-cn"


def test_minute_of_is_the_utc_minute_as_sortable_text() -> None:
    assert minute_of(MOMENT) == "2024-05-01T13:45Z"
    assert minute_end_ms(MOMENT) == 1714571160000
    assert minute_of(minute_end_ms(MOMENT)) == "2024-05-01T13:46Z"
    assert minute_of(minute_end_ms(MOMENT) - 1) == "2024-05-01T13:45Z"


@given(st.integers(0, 4_000_000_000_000), st.integers(0, 4_000_000_000_000))
def test_minute_text_sorts_like_time(a: int, b: int) -> None:
    if a // 60_000 < b // 60_000:
        assert minute_of(a) < minute_of(b)


def test_snowflake_ids_grow_with_time_and_carry_worker_and_sequence() -> None:
    first = snowflake_id(MOMENT, worker=3, sequence=0)
    assert snowflake_id(MOMENT, 3, 1) == first + 1
    assert snowflake_id(MOMENT + 1, 0, 0) > snowflake_id(MOMENT, 1023, 4095)
    assert (first >> 22) + TWITTER_EPOCH_MS == MOMENT
    assert (first >> 12) & 1023 == 3


@pytest.mark.parametrize("worker, sequence", [(1024, 0), (-1, 0), (0, 4096)])
def test_snowflake_rejects_out_of_range_parts(worker: int, sequence: int) -> None:
    with pytest.raises(ValueError):
        snowflake_id(MOMENT, worker, sequence)
