import pytest

from daemon.checkpointer import resolve_checkpoint
from daemon.errors import CheckpointRangeError
from daemon.sequence import SHARD_END_POSITION, TRIM_HORIZON
from daemon.sequence import ExtendedSequenceNumber as E

BEFORE_EVERYTHING = E(TRIM_HORIZON)
LAST_DELIVERED = E("100")


def resolve(seq, sub=None, current=BEFORE_EVERYTHING, largest=LAST_DELIVERED, ending=False):
    return resolve_checkpoint(
        seq, sub, current=current, largest_delivered=largest, shard_ending=ending
    )


def test_null_sequence_number_means_last_record_delivered():
    assert resolve(None, largest=E("100", 3)) == E("100", 3)


def test_null_sequence_number_during_shard_end_means_shard_end():
    assert resolve(None, ending=True) == SHARD_END_POSITION


def test_missing_sub_sequence_number_means_zero():
    assert resolve("50") == E("50", 0)


def test_sequence_numbers_compare_as_integers_not_strings():
    assert resolve("10", current=E("9"), largest=E("10")) == E("10")


def test_checkpoint_below_current_is_illegal_argument():
    with pytest.raises(CheckpointRangeError, match="below the current"):
        resolve("5", current=E("6"))


def test_checkpoint_below_current_sub_sequence_is_illegal_argument():
    with pytest.raises(CheckpointRangeError):
        resolve("6", 1, current=E("6", 2))


def test_checkpoint_equal_to_current_is_allowed():
    assert resolve("6", 2, current=E("6", 2), largest=E("7")) == E("6", 2)


def test_checkpoint_above_largest_delivered_is_illegal_argument():
    with pytest.raises(CheckpointRangeError, match="above the last record"):
        resolve("101")


def test_sub_sequence_above_largest_delivered_is_illegal_argument():
    with pytest.raises(CheckpointRangeError):
        resolve("100", 4, largest=E("100", 3))


@pytest.mark.parametrize("bad", ["abc", "", "-5", "1e5", "１２"])
def test_non_numeric_sequence_number_is_illegal_argument(bad):
    with pytest.raises(CheckpointRangeError, match="not numeric"):
        resolve(bad)


def test_negative_sub_sequence_number_is_illegal_argument():
    with pytest.raises(CheckpointRangeError, match="negative"):
        resolve("50", -1)


def test_checkpoint_when_nothing_delivered_is_illegal_argument():
    with pytest.raises(CheckpointRangeError):
        resolve("5", largest=None)


def test_null_checkpoint_with_nothing_delivered_keeps_current():
    assert resolve(None, current=E("7"), largest=None) == E("7")


def test_explicit_last_sequence_number_at_shard_end_counts_as_shard_end():
    assert resolve("100", ending=True) == SHARD_END_POSITION


def test_explicit_last_sub_record_at_shard_end_counts_as_shard_end():
    assert resolve("100", 2, largest=E("100", 5), ending=True) == SHARD_END_POSITION


def test_earlier_checkpoint_at_shard_end_is_an_ordinary_checkpoint():
    assert resolve("99", ending=True) == E("99")
