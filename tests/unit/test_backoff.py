"""Back-off schedule: growth, cap, jitter bounds, reset."""

from __future__ import annotations

import random

import pytest

from daemon.backoff import Backoff


class FixedDraw:
    """A random source that always draws the same number."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def delays(backoff: Backoff, count: int) -> list[float]:
    return [backoff.next_delay() for _ in range(count)]


def test_ceiling_grows_by_the_multiplier_up_to_the_cap() -> None:
    backoff = Backoff(0.1, 1.0, multiplier=2, rng=FixedDraw(1.0))
    assert delays(backoff, 6) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_equal_jitter_never_goes_below_half_the_ceiling() -> None:
    backoff = Backoff(0.1, 1.0, rng=FixedDraw(0.0))
    assert delays(backoff, 5) == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5])


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    low = Backoff(0.1, 1.0, rng=FixedDraw(0.0), jitter="full")
    high = Backoff(0.1, 1.0, rng=FixedDraw(0.5), jitter="full")
    assert delays(low, 3) == [0.0, 0.0, 0.0]
    assert delays(high, 3) == pytest.approx([0.05, 0.1, 0.2])


def test_other_multipliers_scale_the_schedule() -> None:
    backoff = Backoff(1.0, 100.0, multiplier=3, rng=FixedDraw(1.0))
    assert delays(backoff, 5) == pytest.approx([1, 3, 9, 27, 81])


def test_reset_starts_the_schedule_over() -> None:
    backoff = Backoff(0.1, 10.0, rng=FixedDraw(1.0))
    delays(backoff, 4)
    assert backoff.attempts == 4
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == pytest.approx(0.1)


def test_thousands_of_failures_stay_at_the_cap_without_overflow() -> None:
    backoff = Backoff(0.5, 30.0, rng=FixedDraw(1.0))
    assert delays(backoff, 5000)[-1] == 30.0
    assert backoff.ceiling(10**6) == 30.0


def test_multiplier_one_keeps_a_constant_ceiling() -> None:
    backoff = Backoff(0.3, 5.0, multiplier=1, rng=FixedDraw(1.0))
    assert delays(backoff, 3) == pytest.approx([0.3, 0.3, 0.3])


def test_random_delays_stay_within_the_jitter_bounds() -> None:
    backoff = Backoff(0.2, 3.0, rng=random.Random(7))
    for attempt in range(40):
        ceiling = backoff.ceiling(attempt)
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling


def test_default_random_source_gives_jittered_delays() -> None:
    backoff = Backoff(1.0, 1.0)
    drawn = {backoff.next_delay() for _ in range(20)}
    assert len(drawn) > 1
    assert all(0.5 <= d <= 1.0 for d in drawn)


@pytest.mark.parametrize(
    ("initial", "maximum", "multiplier", "jitter"),
    [(-1.0, 1.0, 2.0, "equal"), (2.0, 1.0, 2.0, "equal"), (0.1, 1.0, 0.5, "equal"),
     (0.1, 1.0, 2.0, "none")],
)  # fmt: skip
def test_nonsense_settings_are_rejected(
    initial: float, maximum: float, multiplier: float, jitter: str
) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum, multiplier, jitter=jitter)  # type: ignore[arg-type]
