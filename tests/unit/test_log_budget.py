import pytest

from daemon.log_budget import LogBudget


def test_the_first_lines_of_a_window_are_logged_and_the_rest_held_back() -> None:
    budget = LogBudget(per_window=3, window_s=60.0)
    decisions = [budget.take(now=float(n)) for n in range(5)]
    assert [log for log, _ in decisions] == [True, True, True, False, False]
    assert budget.held_back == 2


def test_the_first_line_of_the_next_window_reports_what_was_held_back() -> None:
    budget = LogBudget(per_window=2, window_s=10.0)
    for n in range(6):
        budget.take(now=n * 0.1)
    assert budget.take(now=10.0) == (True, 4)
    assert budget.take(now=10.1) == (True, 0)
    assert budget.held_back == 0


def test_a_quiet_source_is_never_held_back() -> None:
    budget = LogBudget(per_window=1, window_s=1.0)
    assert all(budget.take(now=n * 1.5) == (True, 0) for n in range(10))


@pytest.mark.parametrize("kwargs", [{"per_window": 0}, {"window_s": 0.0}, {"window_s": -1.0}])
def test_nonsense_budgets_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LogBudget(**kwargs)  # type: ignore[arg-type]
