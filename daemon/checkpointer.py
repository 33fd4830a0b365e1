"""Validation of a child's checkpoint request: pure, no I/O.

The multilang rules (spec, "Sequencing" 3-7): ``sequenceNumber`` null means
the largest permitted value (the last record delivered, or SHARD_END while the
shard is ending); a missing sub-sequence number means 0; a checkpoint may not
move below the current one nor above the largest record delivered to this
child; sequence numbers compare as integers. During ``shardEnded`` a
checkpoint at (or past) the last delivered sequence number counts as
SHARD_END, which the official daemon got wrong for years.
"""

from __future__ import annotations

from daemon.errors import CheckpointRangeError
from daemon.sequence import (
    SHARD_END_POSITION,
    ExtendedSequenceNumber,
    is_real_sequence_number,
)


def resolve_checkpoint(
    sequence_number: str | None,
    sub_sequence_number: int | None,
    *,
    current: ExtendedSequenceNumber | None,
    largest_delivered: ExtendedSequenceNumber | None,
    shard_ending: bool,
) -> ExtendedSequenceNumber:
    """The position to store for a checkpoint request, or CheckpointRangeError."""
    if sequence_number is None:
        if shard_ending:
            return SHARD_END_POSITION
        if largest_delivered is not None:
            return largest_delivered
        if current is not None:
            return current
        raise CheckpointRangeError(
            "nothing has been delivered yet, so there is nothing to checkpoint"
        )
    if not is_real_sequence_number(sequence_number):
        raise CheckpointRangeError(f"sequence number {sequence_number!r:.80} is not numeric")
    sub = 0 if sub_sequence_number is None else sub_sequence_number
    if sub < 0:
        raise CheckpointRangeError(f"sub-sequence number {sub} is negative")
    position = ExtendedSequenceNumber(sequence_number, sub)
    if current is not None and position < current:
        raise CheckpointRangeError(f"{position} is below the current checkpoint {current}")
    if largest_delivered is None or largest_delivered.is_sentinel:
        raise CheckpointRangeError(f"{position} was never delivered to this processor")
    # At shard end every sub-record of the last delivered sequence number
    # counts as the end: a child that checkpoints "the last record" explicitly
    # means SHARD_END, whatever sub-sequence number it names.
    if shard_ending and sequence_number.lstrip("0") == largest_delivered.sequence_number.lstrip(
        "0"
    ):
        return SHARD_END_POSITION
    if position > largest_delivered:
        raise CheckpointRangeError(
            f"{position} is above the last record delivered {largest_delivered}"
        )
    return position
