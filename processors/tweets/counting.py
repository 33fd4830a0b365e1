"""What one batch of records adds to the results: pure logic, no I/O.

Owns record positions (a sortable text form of sequence and sub-sequence number), the late
rule, the outcome of each record (counted, late, duplicate, invalid), the contributions a
batch makes to each results item, and the "apply only what is past this item's applied-through
position" filter that makes every write idempotent. See the package docstring for the design.

A contribution is ``(position, increments)``: the record at ``position`` adds ``increments``
(attribute name -> amount) to one item. Every item remembers the position it is applied
through; :func:`pending` keeps the contributions past it, so a replayed record, in whatever
batch it comes back, is never added twice.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from processors.tweets.events import Tweet, minute_end_ms, minute_of

__all__ = [
    "COUNT_PREFIX",
    "Contribution",
    "Fact",
    "Outcome",
    "Pending",
    "Target",
    "claimant_of",
    "contributions",
    "count_attribute",
    "is_late",
    "language_of_attribute",
    "outcome_of",
    "pending",
    "position_of",
]

#: Count attributes are ``n_<lang>`` so that they never collide with the key attributes.
COUNT_PREFIX = "n_"
_SEQUENCE_DIGITS = 60  # Kinesis sequence numbers have up to 56 digits
_SUB_DIGITS = 10  # sub-sequence numbers are 32-bit

Contribution = tuple[str, dict[str, int]]


class Outcome(enum.Enum):
    """What became of one record; the value is its attribute on the progress item."""

    COUNTED = "counted"
    LATE = "late"
    DUPLICATE = "duplicates"
    INVALID = "invalid"


@dataclass(frozen=True, order=True)
class Target:
    """One results item: a (minute, shard) row of the counts or late table, or a shard's
    progress item (``minute`` None)."""

    table: str  # "counts", "late" or "progress"
    shard: str
    minute: str | None = None


@dataclass(frozen=True)
class Fact:
    """One record as the batch sees it: where it is, what it holds, when Kinesis got it, and
    who holds the claim on its tweet id (None when the data is not a tweet)."""

    position: str
    tweet: Tweet | None
    arrival_ms: int
    holder: str | None = None


@dataclass(frozen=True)
class Pending:
    """The part of an item's contributions not yet applied: add ``sums`` and move the item's
    applied-through position from below ``first`` to ``last``."""

    first: str
    last: str
    sums: dict[str, int] = field(default_factory=dict)
    records: int = 0


def position_of(sequence_number: str, sub_sequence_number: int | None) -> str:
    """A record's position as fixed-width text, so that text order is stream order."""
    if not sequence_number.isdigit() or len(sequence_number) > _SEQUENCE_DIGITS:
        raise ValueError(f"not a Kinesis sequence number: {sequence_number!r}")
    sub = sub_sequence_number or 0
    if not 0 <= sub < 10**_SUB_DIGITS:
        raise ValueError(f"sub-sequence number out of range: {sub}")
    return f"{int(sequence_number):0{_SEQUENCE_DIGITS}d}:{sub:0{_SUB_DIGITS}d}"


def claimant_of(shard_id: str, position: str) -> str:
    """The owner written on a tweet id's claim: the record, not the worker, so that every
    replay of that record (by any worker) recognises the claim as its own."""
    return f"{shard_id}/{position}"


def count_attribute(lang: str) -> str:
    return COUNT_PREFIX + lang


def language_of_attribute(name: str) -> str | None:
    return name[len(COUNT_PREFIX) :] if name.startswith(COUNT_PREFIX) else None


def is_late(created_ms: int, arrival_ms: int, allowed_lateness_ms: int) -> bool:
    """Too late for its minute: Kinesis received it ``allowed_lateness_ms`` or more after the
    end of the minute it was created in (the minute's row is final from then on)."""
    return arrival_ms >= minute_end_ms(created_ms) + allowed_lateness_ms


def outcome_of(fact: Fact, claimant: str, allowed_lateness_ms: int) -> Outcome:
    if fact.tweet is None:
        return Outcome.INVALID
    if fact.holder != claimant:
        return Outcome.DUPLICATE
    if is_late(fact.tweet.created_ms, fact.arrival_ms, allowed_lateness_ms):
        return Outcome.LATE
    return Outcome.COUNTED


def contributions(
    shard_id: str, facts: Iterable[Fact], allowed_lateness_ms: int
) -> dict[Target, list[Contribution]]:
    """Every item a batch touches and what each record adds to it.

    A counted tweet adds 1 to its language on the (minute, shard) counts row; a late one to the
    same row of the late table; every record adds 1 to ``records`` and to its outcome on the
    shard's progress item, so that the progress item accounts for every record exactly once.
    """
    out: dict[Target, list[Contribution]] = {}
    progress = Target("progress", shard_id)
    for fact in facts:
        outcome = outcome_of(fact, claimant_of(shard_id, fact.position), allowed_lateness_ms)
        if outcome is Outcome.COUNTED or outcome is Outcome.LATE:
            assert fact.tweet is not None
            table = "counts" if outcome is Outcome.COUNTED else "late"
            target = Target(table, shard_id, minute_of(fact.tweet.created_ms))
            out.setdefault(target, []).append(
                (fact.position, {count_attribute(fact.tweet.lang): 1})
            )
        out.setdefault(progress, []).append((fact.position, {"records": 1, outcome.value: 1}))
    return out


def pending(items: Sequence[Contribution], applied_through: str | None) -> Pending | None:
    """The contributions past ``applied_through`` summed up, or None when all are applied."""
    sums: dict[str, int] = {}
    first: str | None = None
    last: str | None = None
    records = 0
    for position, increments in items:
        if applied_through is not None and position <= applied_through:
            continue
        records += 1
        if first is None or position < first:
            first = position
        if last is None or position > last:
            last = position
        for name, amount in increments.items():
            sums[name] = sums.get(name, 0) + amount
    if first is None or last is None:
        return None
    return Pending(first, last, sums, records)
