"""Extended sequence numbers: a Kinesis sequence number plus a KPL sub-sequence.

Ordering follows the KCL: AT_TIMESTAMP < TRIM_HORIZON < LATEST < any real
sequence number < SHARD_END, ties broken by the sub-sequence number. Real
sequence numbers compare as integers, because emulators issue short ones
("10" > "9") and AWS issues 56-digit ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import total_ordering

AT_TIMESTAMP = "AT_TIMESTAMP"
TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
SHARD_END = "SHARD_END"

_SENTINEL_RANK = {AT_TIMESTAMP: 0, TRIM_HORIZON: 1, LATEST: 2}
_REAL_RANK = 3
_SHARD_END_RANK = 4
SENTINELS = frozenset((AT_TIMESTAMP, TRIM_HORIZON, LATEST, SHARD_END))


def is_real_sequence_number(value: object) -> bool:
    """True for a string of decimal digits (what Kinesis issues)."""
    return isinstance(value, str) and value.isascii() and value.isdigit()


@total_ordering
@dataclass(frozen=True)
class ExtendedSequenceNumber:
    """A checkpoint position: ``sequence_number`` is digits or a sentinel."""

    sequence_number: str
    sub_sequence_number: int = 0

    def __post_init__(self) -> None:
        if self.sequence_number not in SENTINELS and not is_real_sequence_number(
            self.sequence_number
        ):
            raise ValueError(f"not a sequence number or sentinel: {self.sequence_number!r}")
        if self.sub_sequence_number < 0:
            raise ValueError(f"negative sub-sequence number: {self.sub_sequence_number}")

    @property
    def is_sentinel(self) -> bool:
        return self.sequence_number in SENTINELS

    @property
    def is_shard_end(self) -> bool:
        return self.sequence_number == SHARD_END

    def _key(self) -> tuple[int, int, int]:
        seq = self.sequence_number
        if seq == SHARD_END:
            return (_SHARD_END_RANK, 0, self.sub_sequence_number)
        rank = _SENTINEL_RANK.get(seq)
        if rank is not None:
            return (rank, 0, self.sub_sequence_number)
        return (_REAL_RANK, int(seq), self.sub_sequence_number)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ExtendedSequenceNumber):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExtendedSequenceNumber):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        if self.sub_sequence_number:
            return f"{self.sequence_number}/{self.sub_sequence_number}"
        return self.sequence_number


SHARD_END_POSITION = ExtendedSequenceNumber(SHARD_END)
