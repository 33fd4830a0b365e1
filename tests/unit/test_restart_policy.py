import pytest

from daemon.restart_policy import RestartPolicy


class FixedRandom:
    """A random source that always draws the same value in [0, 1)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def policy(draw: float = 0.999999, **kwargs: float) -> RestartPolicy:
    return RestartPolicy(rng=FixedRandom(draw), **kwargs)  # type: ignore[arg-type]


SHORT = 0.1
HEALTHY = 60.0


@pytest.mark.parametrize("draw", [0.0, 0.999999])
def test_a_restart_after_a_healthy_run_waits_at_most_a_tenth_of_the_first_back_off(
    draw: float,
) -> None:
    decision = policy(draw=draw).record_exit(HEALTHY)
    assert not decision.give_up
    assert 0.0 <= decision.delay_s <= 0.05
    assert decision.consecutive_failures == 0


def test_the_first_short_lived_run_backs_off_half_a_second() -> None:
    decision = policy(draw=0.0).record_exit(SHORT)
    assert not decision.give_up
    assert 0.25 <= decision.delay_s <= 0.5
    assert decision.consecutive_failures == 1


def test_delays_double_with_each_short_run_in_a_row() -> None:
    restarts = policy(draw=0.999999)
    ceilings = [restarts.record_exit(SHORT).delay_s for _ in range(5)]
    assert ceilings == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0], rel=1e-5)


def test_delays_are_capped_at_max_backoff() -> None:
    restarts = policy(draw=0.999999, budget=50)
    delays = [restarts.record_exit(SHORT).delay_s for _ in range(40)]
    assert max(delays) <= 30.0
    assert delays[-1] == pytest.approx(30.0, rel=1e-5)


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999999])
def test_equal_jitter_keeps_each_delay_between_half_the_ceiling_and_the_ceiling(
    draw: float,
) -> None:
    restarts = policy(draw=draw)
    for ceiling in (0.5, 1.0, 2.0, 4.0):
        delay = restarts.record_exit(SHORT).delay_s
        assert ceiling / 2 <= delay <= ceiling


def test_full_jitter_can_draw_down_to_zero() -> None:
    restarts = RestartPolicy(jitter="full", rng=FixedRandom(0.0))
    assert restarts.record_exit(SHORT).delay_s == 0.0


def test_default_random_source_jitters_within_bounds() -> None:
    delays = [RestartPolicy().record_exit(SHORT).delay_s for _ in range(200)]
    assert all(0.25 <= delay <= 0.5 for delay in delays)
    assert len(set(delays)) > 1
    healthy = [RestartPolicy().record_exit(HEALTHY).delay_s for _ in range(200)]
    assert all(0.0 <= delay <= 0.05 for delay in healthy)
    assert len(set(healthy)) > 1


def test_a_healthy_run_resets_the_failure_count_and_the_back_off() -> None:
    restarts = policy(draw=0.999999)
    for _ in range(4):
        restarts.record_exit(SHORT)
    assert restarts.consecutive_failures == 4
    decision = restarts.record_exit(HEALTHY)
    assert decision.consecutive_failures == 0
    assert decision.delay_s == pytest.approx(0.05, rel=1e-5)
    assert restarts.record_exit(SHORT).delay_s == pytest.approx(0.5, rel=1e-5)


def test_run_of_exactly_min_uptime_counts_as_healthy() -> None:
    restarts = policy(min_uptime_s=10.0)
    restarts.record_exit(SHORT)
    assert restarts.record_exit(10.0).consecutive_failures == 0


def test_gives_up_after_more_than_budget_short_runs_in_a_row() -> None:
    restarts = policy(budget=3)
    decisions = [restarts.record_exit(SHORT) for _ in range(4)]
    assert [d.give_up for d in decisions] == [False, False, False, True]
    assert decisions[-1].consecutive_failures == 4
    assert "more than 3" in decisions[-1].reason


def test_once_given_up_even_a_long_run_does_not_restart_until_reset() -> None:
    restarts = policy(budget=1)
    assert not restarts.record_exit(SHORT).give_up
    assert restarts.record_exit(SHORT).give_up
    assert restarts.record_exit(HEALTHY).give_up
    restarts.reset()
    assert not restarts.record_exit(SHORT).give_up


def test_budget_zero_gives_up_on_the_first_short_run_but_not_a_healthy_one() -> None:
    assert not policy(budget=0).record_exit(HEALTHY).give_up
    assert policy(budget=0).record_exit(SHORT).give_up


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_backoff_s": -1.0},
        {"initial_backoff_s": 5.0, "max_backoff_s": 1.0},
        {"min_uptime_s": -1.0},
        {"budget": -1},
    ],
)
def test_nonsense_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]
