"""The producer's lighter concurrent.futures.Future: everything a Future user relies on."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from producer.futures import RecordFuture, SlimCondition, new_future
from tests.support.waiting import wait_until


def test_new_future_is_a_running_future_that_cannot_be_cancelled():
    future = new_future()
    assert isinstance(future, concurrent.futures.Future)
    assert isinstance(future, RecordFuture)
    assert future.running() and not future.done()
    assert future.cancel() is False


def test_result_wakes_a_waiting_thread():
    future = new_future()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(future.result(10)))
    waiter.start()
    wait_until(lambda: future._condition._sleepers, 10, message="nobody waited")
    future.set_result("done")
    waiter.join(10)
    assert got == ["done"]


def test_result_times_out_when_nothing_comes():
    with pytest.raises(concurrent.futures.TimeoutError):
        new_future().result(timeout=0.01)


def test_exception_is_raised_by_result_and_returned_by_exception():
    future = new_future()
    future.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        future.result(0)
    assert isinstance(future.exception(0), KeyError)


def test_setting_twice_raises_invalid_state_instead_of_deadlocking():
    future = new_future()
    future.set_result(1)
    with pytest.raises(concurrent.futures.InvalidStateError):
        future.set_result(2)
    assert "finished" in repr(future)


def test_done_callbacks_run_once_and_at_once_when_already_done():
    future = new_future()
    calls: list[object] = []
    future.add_done_callback(lambda f: calls.append(f.result()))
    future.set_result(7)
    future.add_done_callback(lambda f: calls.append(-f.result()))
    assert calls == [7, -7]


def test_wait_and_as_completed_work_with_these_futures():
    futures = [new_future() for _ in range(3)]
    setter = threading.Thread(target=lambda: [f.set_result(i) for i, f in enumerate(futures)])
    setter.start()
    done, not_done = concurrent.futures.wait(futures, timeout=10)
    setter.join(10)
    assert len(done) == 3 and not not_done
    assert sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=10)) == [
        0,
        1,
        2,
    ]


def test_condition_wait_releases_a_reentrant_hold_and_restores_it():
    condition = SlimCondition()
    woke: list[bool] = []

    def sleeper() -> None:
        with condition, condition:  # held twice
            woke.append(condition.wait(10))

    thread = threading.Thread(target=sleeper)
    thread.start()
    wait_until(lambda: condition._sleepers, 10, message="no sleeper")
    with condition:
        condition.notify_all()
    thread.join(10)
    assert woke == [True]


def test_notify_wakes_only_as_many_as_asked():
    condition = SlimCondition()
    woke: list[bool] = []
    threads = [
        threading.Thread(target=lambda: woke.append(_wait(condition, 0.5))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(condition._sleepers or []) == 2, 10, message="sleepers missing")
    with condition:
        condition.notify(1)
    for thread in threads:
        thread.join(10)
    assert sorted(woke) == [False, True]


def _wait(condition: SlimCondition, timeout: float) -> bool:
    with condition:
        return condition.wait(timeout)
