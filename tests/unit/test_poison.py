from hypothesis import given
from hypothesis import strategies as st

from daemon.poison import BatchBisector, FailureCounter


def run_bisection(records, poison, max_attempts=2):
    """Drive a bisector with a child that fails on any segment holding a poison record."""
    bisector = BatchBisector(list(records), max_attempts)
    processed, deliveries = [], 0
    while not bisector.done:
        segment = bisector.current()
        deliveries += 1
        if any(record in poison for record in segment):
            bisector.failed()
        else:
            processed.extend(segment)
            bisector.succeeded()
    return processed, bisector.poisoned, deliveries


def test_counter_triggers_after_max_failures_of_the_same_batch():
    counter = FailureCounter(3)
    assert not counter.failed("seq-5")
    assert not counter.failed("seq-5")
    assert counter.failed("seq-5")


def test_counter_restarts_when_a_different_batch_fails():
    counter = FailureCounter(2)
    assert not counter.failed("seq-5")
    assert not counter.failed("seq-9")
    assert counter.failed("seq-9")


def test_counter_resets_after_a_success():
    counter = FailureCounter(2)
    counter.failed("seq-5")
    counter.succeeded()
    assert not counter.failed("seq-5")


def test_single_poison_record_is_isolated_and_the_rest_processed_in_order():
    processed, poisoned, _ = run_bisection(range(10), {6})
    assert poisoned == [6]
    assert processed == [0, 1, 2, 3, 4, 5, 7, 8, 9]


def test_a_lone_record_is_retried_before_it_is_declared_poison():
    bisector = BatchBisector(["only"], max_attempts=3)
    assert bisector.failed().poison is None
    assert bisector.failed().poison is None
    verdict = bisector.failed()
    assert verdict.poison == "only" and verdict.attempts == 3
    assert bisector.done


def test_a_record_that_succeeds_on_retry_is_not_poison():
    bisector = BatchBisector(["flaky", "next"], max_attempts=3)
    bisector.failed()  # split
    assert bisector.current() == ["flaky"]
    bisector.failed()
    bisector.succeeded()
    assert bisector.current() == ["next"]
    bisector.succeeded()
    assert bisector.done and bisector.poisoned == []


@given(st.integers(1, 200), st.sets(st.integers(0, 199), max_size=6))
def test_bisection_finds_exactly_the_poison_and_keeps_order(size, poison):
    poison = {p for p in poison if p < size}
    processed, poisoned, deliveries = run_bisection(range(size), poison)
    assert sorted(poisoned) == sorted(poison)
    assert processed == [r for r in range(size) if r not in poison]
    # Logarithmic per poison record, not one delivery per record.
    assert deliveries <= 1 + len(poison) * (2 * size.bit_length() + 4) + size.bit_length() * 2


def test_dead_letter_policy_without_a_destination_is_a_config_error():
    import pytest

    from daemon.config import config_from_properties
    from daemon.errors import ConfigError

    base = {"executableName": "/bin/true", "applicationName": "app", "streamName": "s"}
    with pytest.raises(ConfigError, match="deadLetterTableName or deadLetterStreamName"):
        config_from_properties({**base, "poisonRecordPolicy": "DEAD_LETTER"}, "app.properties")
    config, _ = config_from_properties(
        {**base, "poisonRecordPolicy": "DEAD_LETTER", "deadLetterStreamName": "dlq"}
    )
    assert config.poison_record_policy == "DEAD_LETTER"
    assert config.poison_record_max_attempts == 3
