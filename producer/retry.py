"""Retry policy: which failures are retried, and how long to wait before the next try.

Owns the classification of Kinesis error codes and the back-off: exponential from
``retry_backoff_min`` to ``retry_backoff_max`` with "equal jitter" (a uniform draw in the upper
half), so retries of many records spread out instead of arriving together, and every retry
waits at least half its nominal delay. The official KPL retries with no back-off at all.

Records are retried until their ``record_ttl`` passes; then they fail with code ``Expired``.
That deadline, not an attempt count, bounds every record's life.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff", "is_retriable", "is_throttle"]

THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "LimitExceededException",
        "KMSThrottlingException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)

# Failures that no retry can fix: the request itself is wrong, or the stream or our rights to it
# are missing. These fail the record at once, naming the code.
PERMANENT_CODES = frozenset(
    {
        "ValidationException",
        "InvalidArgumentException",
        "SerializationException",
        "ResourceNotFoundException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "InvalidClientTokenId",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "KMSOptInRequired",
    }
)


def is_throttle(code: str | None) -> bool:
    return code in THROTTLE_CODES


def is_retriable(code: str | None) -> bool:
    """Everything is retried (until the record expires) except the permanent codes."""
    return code not in PERMANENT_CODES


class Backoff:
    """Delays in seconds for the n-th retry (n >= 1)."""

    __slots__ = ("_high", "_low", "_uniform")

    def __init__(
        self, min_ms: int, max_ms: int, uniform: Callable[[float, float], float] | None = None
    ):
        if min_ms <= 0 or max_ms < min_ms:
            raise ValueError(f"need 0 < min <= max, got {min_ms}, {max_ms}")
        self._low = min_ms / 1000.0
        self._high = max_ms / 1000.0
        self._uniform = uniform or random.uniform

    def delay(self, retry: int) -> float:
        nominal = min(self._high, self._low * (2 ** min(max(retry, 1) - 1, 62)))
        return self._uniform(nominal / 2, nominal)
