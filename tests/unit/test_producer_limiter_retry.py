"""Per-shard token buckets and the retry policy."""

from __future__ import annotations

import pytest

from producer.limiter import ShardLimiter, TokenBucket
from producer.retry import Backoff, is_retriable, is_throttle


def test_bucket_starts_full_and_refills_at_its_rate():
    bucket = TokenBucket(100, now=0.0)
    assert bucket.can_take(100, 0.0)
    bucket.take(100)
    assert not bucket.can_take(1, 0.0)
    assert bucket.can_take(50, 0.5) and not bucket.can_take(51, 0.5)
    assert bucket.available(10.0) == 100  # never more than one second's worth


def test_oversized_request_goes_when_the_bucket_is_full():
    bucket = TokenBucket(10, now=0.0)
    assert bucket.can_take(1000, 0.0)
    bucket.take(1000)
    assert bucket.wait_time(1, 0.0) == pytest.approx(99.1)


def test_wait_time_is_zero_when_tokens_are_there():
    bucket = TokenBucket(10, now=0.0)
    assert bucket.wait_time(5, 0.0) == 0.0


def test_shard_limiter_applies_both_records_and_bytes():
    limiter = ShardLimiter(100, now=0.0)  # 1000 records/s, 1 MiB/s
    assert limiter.try_take(1, 1024 * 1024, 0.0)
    assert not limiter.try_take(1, 10, 0.0)  # bytes exhausted
    assert limiter.wait_time(1, 1024, 0.0) == pytest.approx(1024 / (1024 * 1024))
    limiter = ShardLimiter(100, now=0.0)
    for _ in range(1000):
        assert limiter.try_take(1, 1, 0.0)
    assert not limiter.try_take(1, 1, 0.0)  # records exhausted


def test_rate_limit_is_a_percentage_of_the_shard_limits():
    limiter = ShardLimiter(150, now=0.0)
    assert limiter.records.rate == 1500 and limiter.bytes.rate == 1.5 * 1024 * 1024


def test_backoff_doubles_with_jitter_in_the_upper_half_and_is_capped():
    low = Backoff(100, 1000, lambda a, b: a)
    high = Backoff(100, 1000, lambda a, b: b)
    assert [high.delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert [low.delay(n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.4, 0.5]
    assert high.delay(10**6) == 1.0


def test_backoff_draws_are_spread():
    backoff = Backoff(100, 1000)
    draws = {backoff.delay(3) for _ in range(50)}
    assert len(draws) > 1 and all(0.2 <= d <= 0.4 for d in draws)


@pytest.mark.parametrize(
    ("code", "retriable", "throttle"),
    [
        ("ProvisionedThroughputExceededException", True, True),
        ("InternalFailure", True, False),
        ("ReadTimeoutError", True, False),
        ("KMSThrottlingException", True, True),
        ("ValidationException", False, False),
        ("ResourceNotFoundException", False, False),
        ("AccessDeniedException", False, False),
    ],
)
def test_error_codes_are_classified(code, retriable, throttle):
    assert is_retriable(code) is retriable
    assert is_throttle(code) is throttle
