"""What a user record's future resolves to, and the producer's errors.

Owns :class:`Attempt` and :class:`UserRecordResult` (the KPL's ``Attempt`` and
``UserRecordResult`` under Python names, plus ``sub_sequence_number``, which the KPL does not
give) and the exceptions the public API raises. A failed record's future raises
:class:`UserRecordFailed`, which carries the same result a success would have.
"""

from __future__ import annotations

from typing import NamedTuple

from daemon.errors import KclDaemonError

__all__ = [
    "EXPIRED",
    "WRONG_SHARD",
    "Attempt",
    "BufferFullError",
    "ProducerClosedError",
    "UserRecordFailed",
    "UserRecordResult",
]

# Error codes of our own making, spelled as the KPL spells them.
EXPIRED = "Expired"
WRONG_SHARD = "Wrong Shard"
# A bug inside the producer failed the record rather than leaving its future pending.
PRODUCER_ERROR = "ProducerError"
# close() gave up waiting (its timeout passed) before the record was sent.
CLOSED = "ProducerClosed"


class Attempt(NamedTuple):
    """One try at sending a user record.

    ``delay_ms``: from the end of the previous attempt (or the record's arrival) to the start of
    this one; ``duration_ms``: how long the request took. ``error_code`` is None on success.
    """

    delay_ms: float
    duration_ms: float
    successful: bool
    error_code: str | None = None
    error_message: str | None = None


class UserRecordResult(NamedTuple):
    """How a user record ended.

    ``sub_sequence_number`` is the record's index inside its aggregate (0 for a record sent
    alone), so ``(sequence_number, sub_sequence_number)`` is the position a KCL consumer sees.
    (A named tuple rather than a frozen dataclass: one is built per record, and this is the
    cheapest immutable record Python has.)
    """

    successful: bool
    attempts: tuple[Attempt, ...]
    sequence_number: str | None = None
    sub_sequence_number: int | None = None
    shard_id: str | None = None

    @property
    def error_code(self) -> str | None:
        """The code of the last failed attempt (None when successful)."""
        if self.successful or not self.attempts:
            return None
        return self.attempts[-1].error_code


class UserRecordFailed(KclDaemonError):
    """A user record was not written; ``result`` holds every attempt and the final code."""

    def __init__(self, result: UserRecordResult):
        last = result.attempts[-1] if result.attempts else None
        code = last.error_code if last else "Unknown"
        message = last.error_message if last else ""
        super().__init__(
            f"user record failed after {len(result.attempts)} attempt(s): {code}: {message}"
        )
        self.result = result

    @property
    def error_code(self) -> str | None:
        return self.result.error_code


class BufferFullError(KclDaemonError):
    """The outstanding-records or outstanding-bytes limit is reached and backpressure is "raise"."""

    retriable = True


class ProducerClosedError(KclDaemonError):
    """add_user_record after close(), or the producer stopped because of an internal error."""
