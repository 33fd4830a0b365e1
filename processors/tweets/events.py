"""The tweet as it travels through the stream: its JSON form, its id and its event time.

Owns the payload format (a subset of the Twitter v1.1 status object: ``id``/``id_str``,
``created_at``, ``timestamp_ms``, ``text``, ``lang``, ``user``), Snowflake tweet ids, and the
minute of event time a tweet is counted in. Pure: no I/O, no clock.

Event time is ``timestamp_ms`` (what Twitter's streaming API adds to every status); a payload
without it falls back to ``created_at`` (second precision). Minutes are UTC and written
``2024-05-01T13:45Z`` so that they sort as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

__all__ = [
    "TWITTER_EPOCH_MS",
    "Tweet",
    "decode_tweet",
    "encode_tweet",
    "format_created_at",
    "minute_end_ms",
    "minute_of",
    "minute_start_ms",
    "snowflake_id",
]

#: Twitter's Snowflake epoch (2010-11-04T01:42:54.657Z): ids carry milliseconds since then.
TWITTER_EPOCH_MS = 1288834974657
_MINUTE_MS = 60_000
_CREATED_AT = "%a %b %d %H:%M:%S %z %Y"
# Twitter's codes ("en", "und", "zh-cn", "in" ...); anything else is counted as "und".
_LANG = re.compile(r"^[a-z]{2,3}(-[a-z]{2,4})?$")


@dataclass(frozen=True)
class Tweet:
    """What the counter needs from a status; ``tweet_id`` is the decimal id string."""

    tweet_id: str
    created_ms: int
    lang: str
    user: str
    text: str


def snowflake_id(created_ms: int, worker: int, sequence: int) -> int:
    """A Snowflake id: 41 bits of milliseconds since TWITTER_EPOCH_MS, 10 of worker, 12 of
    sequence. Ids of one worker are unique as long as sequence is unique per millisecond."""
    if not 0 <= worker < 1024 or not 0 <= sequence < 4096:
        raise ValueError(f"worker {worker} or sequence {sequence} out of range")
    return ((created_ms - TWITTER_EPOCH_MS) << 22) | (worker << 12) | sequence


def format_created_at(epoch_ms: int) -> str:
    """``created_at`` as Twitter writes it: ``Wed Oct 10 20:19:24 +0000 2018``."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime(_CREATED_AT)


def encode_tweet(tweet: Tweet, user_id: int = 0) -> bytes:
    """The status object for ``tweet`` as JSON bytes (the record's data)."""
    status = {
        "created_at": format_created_at(tweet.created_ms),
        "id": int(tweet.tweet_id),
        "id_str": tweet.tweet_id,
        "text": tweet.text,
        "lang": tweet.lang,
        "user": {"id": user_id, "screen_name": tweet.user},
        "timestamp_ms": str(tweet.created_ms),
    }
    return orjson.dumps(status)


def decode_tweet(data: bytes) -> Tweet | None:
    """The tweet in a record's data, or None when it is not a status we can count.

    Never raises on bad input: a record that is not JSON, or lacks an id or an event time, is
    the caller's to count as invalid (never dropped silently).
    """
    try:
        status = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(status, dict):
        return None
    tweet_id = _tweet_id(status)
    created_ms = _created_ms(status)
    if tweet_id is None or created_ms is None:
        return None
    lang = status.get("lang")
    if not isinstance(lang, str) or not _LANG.match(lang):
        lang = "und"
    user = status.get("user")
    screen_name = user.get("screen_name") if isinstance(user, dict) else None
    text = status.get("text")
    return Tweet(
        tweet_id,
        created_ms,
        lang,
        screen_name if isinstance(screen_name, str) else "",
        text if isinstance(text, str) else "",
    )


def _tweet_id(status: dict[str, Any]) -> str | None:
    # id_str first: JSON readers that turn numbers into doubles corrupt 64-bit ids.
    for value in (status.get("id_str"), status.get("id")):
        if isinstance(value, str) and value.isdigit():
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
    return None


def _created_ms(status: dict[str, Any]) -> int | None:
    stamp = status.get("timestamp_ms")
    if isinstance(stamp, str) and stamp.isdigit():
        return int(stamp)
    if isinstance(stamp, int) and not isinstance(stamp, bool):
        return stamp
    created = status.get("created_at")
    if isinstance(created, str):
        try:
            return int(datetime.strptime(created, _CREATED_AT).timestamp() * 1000)
        except ValueError:
            return None
    return None


def minute_start_ms(epoch_ms: int) -> int:
    return epoch_ms - epoch_ms % _MINUTE_MS


def minute_end_ms(epoch_ms: int) -> int:
    """The first millisecond after the minute that ``epoch_ms`` falls in."""
    return minute_start_ms(epoch_ms) + _MINUTE_MS


def minute_of(epoch_ms: int) -> str:
    """The UTC minute of ``epoch_ms`` as sortable text: ``2024-05-01T13:45Z``."""
    moment = datetime.fromtimestamp(minute_start_ms(epoch_ms) / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%MZ")
