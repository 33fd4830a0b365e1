"""Per-shard send limits: two token buckets (records/s and bytes/s) per shard.

Owns the arithmetic only (the caller passes the time), so a hot shard waits here instead of
throttling a whole PutRecords request. Kinesis allows 1000 records/s and 1 MiB/s per shard;
``rate_limit`` is a percentage of that (the KPL's default, 150, lets one producer saturate a
shard). A bucket holds at most one second of tokens. A record bigger than a full bucket still
goes when the bucket is full (it then runs into debt), so nothing waits forever.
"""

from __future__ import annotations

__all__ = ["SHARD_BYTES_PER_SECOND", "SHARD_RECORDS_PER_SECOND", "ShardLimiter", "TokenBucket"]

SHARD_RECORDS_PER_SECOND = 1000
SHARD_BYTES_PER_SECOND = 1024 * 1024


class TokenBucket:
    """``rate`` tokens per second, at most ``rate`` held, starting full."""

    __slots__ = ("_last", "_tokens", "rate")

    def __init__(self, rate: float, now: float):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self._tokens = rate
        self._last = now

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self._tokens

    def can_take(self, amount: float, now: float) -> bool:
        self._refill(now)
        # A full bucket always gives, so an oversized request is late, never stuck.
        return self._tokens >= min(amount, self.rate)

    def take(self, amount: float) -> None:
        self._tokens -= amount

    def wait_time(self, amount: float, now: float) -> float:
        """Seconds until ``can_take(amount)`` becomes true (0 if it is now)."""
        self._refill(now)
        missing = min(amount, self.rate) - self._tokens
        return max(0.0, missing / self.rate)


class ShardLimiter:
    """The two buckets of one shard."""

    __slots__ = ("bytes", "records")

    def __init__(self, rate_limit_percent: int, now: float):
        share = rate_limit_percent / 100.0
        self.records = TokenBucket(SHARD_RECORDS_PER_SECOND * share, now)
        self.bytes = TokenBucket(SHARD_BYTES_PER_SECOND * share, now)

    def try_take(self, records: int, size: int, now: float) -> bool:
        """Takes the tokens for ``records`` Kinesis records of ``size`` bytes in all if both
        buckets have them (an aggregate counts as one record, as Kinesis counts it)."""
        if self.records.can_take(records, now) and self.bytes.can_take(size, now):
            self.records.take(records)
            self.bytes.take(size)
            return True
        return False

    def wait_time(self, records: int, size: int, now: float) -> float:
        return max(self.records.wait_time(records, now), self.bytes.wait_time(size, now))
