"""The per-key hold that keeps same-key records in add order, and the timers heap."""

from __future__ import annotations

from producer.ordering import KeyOrder
from producer.records import Entry, KinesisRecord
from producer.timers import Timers


def entry(seq: int, key: int = 1) -> Entry:
    return Entry("s", "k", b"x", None, key, 2, None, 0.0, 0.1, 30.0, seq)


def kr(*entries: Entry) -> KinesisRecord:
    return KinesisRecord(list(entries), "k", b"x", None, None, 0)


def test_record_waits_while_an_earlier_same_key_record_is_elsewhere():
    order = KeyOrder()
    first, second = entry(1), entry(2)
    order.link(first)
    order.link(second)
    kr(first)
    later = kr(second)
    assert not order.may_send(later)
    order.finish(first)
    assert order.may_send(later)


def test_same_key_records_in_one_aggregate_may_go_together():
    order = KeyOrder()
    first, second = entry(1), entry(2)
    order.link(first)
    order.link(second)
    assert order.may_send(kr(first, second))


def test_a_finished_record_in_the_middle_does_not_release_the_last_one():
    order = KeyOrder()
    a, b, c = entry(1), entry(2), entry(3)
    for e in (a, b, c):
        order.link(e)
    kr(a)
    kr(b)
    last = kr(c)
    order.finish(b)  # b expired while a is still in flight
    assert not order.may_send(last)
    order.finish(a)
    assert order.may_send(last)


def test_other_keys_do_not_wait():
    order = KeyOrder()
    a, b = entry(1, key=1), entry(2, key=2)
    order.link(a)
    order.link(b)
    kr(a)
    assert order.may_send(kr(b))


def test_disabled_order_never_holds_and_keeps_no_state():
    order = KeyOrder(enabled=False)
    a, b = entry(1), entry(2)
    order.link(a)
    order.link(b)
    kr(a)
    assert order.may_send(kr(b)) and len(order) == 0


def test_finished_keys_are_forgotten():
    order = KeyOrder()
    a = entry(1)
    order.link(a)
    order.finish(a)
    assert len(order) == 0


def test_timers_skip_stale_items_and_pop_in_time_order():
    live = {"a", "c"}
    timers: Timers[str] = Timers(lambda when, item: item in live)
    timers.push(3.0, "c")
    timers.push(1.0, "a")
    timers.push(0.5, "stale")
    assert timers.peek() == 1.0
    assert timers.pop_due(2.0) == ["a"]
    assert timers.pop_due(5.0) == ["c"]
    assert timers.peek() == float("inf")


def test_timers_memory_stays_bounded_by_live_items():
    live: set[int] = set()
    timers: Timers[int] = Timers(lambda when, item: item in live)
    for i in range(100_000):
        timers.push(1e9 + i, i)  # far future, all stale at once
    assert len(timers) <= 4096
