"""Expiry tracking and the take / steal / release decisions."""

from __future__ import annotations

import random

import pytest

from daemon.leases.model import Lease
from daemon.leases.policy import (
    ExpiryTracker,
    choose_leases_to_take,
    leases_to_reclaim,
)
from daemon.sequence import SHARD_END, ExtendedSequenceNumber

FAILOVER = 10.0
ME = "me"


def lease(key: str, owner: str | None = None, counter: int = 1, finished: bool = False) -> Lease:
    checkpoint = ExtendedSequenceNumber(SHARD_END if finished else "100")
    return Lease(key, lease_owner=owner, lease_counter=counter, checkpoint=checkpoint)


def owned(owner: str, *numbers: int) -> list[Lease]:
    return [lease(f"shard-{n:02d}", owner) for n in numbers]


def keys(leases: list[Lease]) -> list[str]:
    return [item.lease_key for item in leases]


# -- ExpiryTracker --------------------------------------------------------------


def test_owned_lease_first_seen_is_live() -> None:
    tracker = ExpiryTracker(FAILOVER)
    item = lease("a", "peer")
    tracker.observe([item], now=100.0)
    assert not tracker.is_expired(item, now=100.0)


def test_owned_lease_expires_after_failover_without_counter_change() -> None:
    tracker = ExpiryTracker(FAILOVER)
    item = lease("a", "peer", counter=5)
    tracker.observe([item], now=100.0)
    tracker.observe([item], now=105.0)
    assert not tracker.is_expired(item, now=110.0)
    assert tracker.is_expired(item, now=110.5)


def test_counter_change_restarts_the_expiry_clock() -> None:
    tracker = ExpiryTracker(FAILOVER)
    tracker.observe([lease("a", "peer", counter=5)], now=100.0)
    renewed = lease("a", "peer", counter=6)
    tracker.observe([renewed], now=109.0)
    assert not tracker.is_expired(renewed, now=118.0)
    assert tracker.is_expired(renewed, now=119.5)


def test_dead_workers_lease_is_expired_at_the_second_scan_after_failover() -> None:
    tracker = ExpiryTracker(FAILOVER)
    dead = lease("a", "dead")
    tracker.observe([dead], now=0.0)
    assert tracker.expired_keys([dead], now=0.0) == set()
    tracker.observe([dead], now=20.0)
    assert tracker.expired_keys([dead], now=20.0) == {"a"}


def test_unowned_lease_is_always_available_and_never_seen_owned_is_very_old() -> None:
    tracker = ExpiryTracker(FAILOVER)
    new = lease("a", None, counter=0)
    tracker.observe([new], now=0.0)
    assert tracker.is_expired(new, now=0.0)
    assert tracker.is_very_old(new, now=0.0)


def test_released_lease_is_available_but_not_very_old() -> None:
    tracker = ExpiryTracker(FAILOVER)
    tracker.observe([lease("a", "peer", counter=3)], now=0.0)
    released = lease("a", None, counter=4)
    tracker.observe([released], now=5.0)
    assert tracker.is_expired(released, now=5.0)
    assert not tracker.is_very_old(released, now=5.0)


def test_lease_expired_longer_than_three_failovers_is_very_old() -> None:
    tracker = ExpiryTracker(FAILOVER)
    item = lease("a", "dead")
    tracker.observe([item], now=0.0)
    assert not tracker.is_very_old(item, now=30.0)
    assert tracker.is_very_old(item, now=30.5)
    assert tracker.very_old_keys([item], now=31.0) == {"a"}


def test_lease_missing_from_a_scan_is_forgotten() -> None:
    tracker = ExpiryTracker(FAILOVER)
    item = lease("a", "peer")
    tracker.observe([item], now=0.0)
    tracker.observe([], now=5.0)
    tracker.observe([item], now=15.0)
    assert not tracker.is_expired(item, now=20.0)


def test_lease_with_a_counter_not_yet_scanned_is_live() -> None:
    tracker = ExpiryTracker(FAILOVER)
    tracker.observe([lease("a", "peer", counter=1)], now=0.0)
    assert not tracker.is_expired(lease("a", "peer", counter=2), now=50.0)


def test_record_after_take_keeps_own_lease_live() -> None:
    tracker = ExpiryTracker(FAILOVER)
    tracker.observe([lease("a", "dead", counter=1)], now=0.0)
    taken = lease("a", ME, counter=2)
    tracker.record(taken, now=20.0)
    assert not tracker.is_expired(taken, now=25.0)


def test_failover_time_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ExpiryTracker(0)


# -- choose_leases_to_take ---------------------------------------------------------


def test_empty_table_takes_nothing() -> None:
    decision = choose_leases_to_take([], ME, set(), None, 1)
    assert decision.take == [] and decision.steal == []
    assert decision.total_leases == 0


def test_lone_worker_takes_every_unowned_lease_in_key_order() -> None:
    leases = [lease(f"shard-{n}", None) for n in (3, 1, 2)]
    decision = choose_leases_to_take(leases, ME, set(), None, 1)
    assert keys(decision.take) == ["shard-1", "shard-2", "shard-3"]
    assert decision.target == 3 and decision.num_workers == 1


def test_max_leases_for_worker_caps_the_target_and_reports_spillover() -> None:
    leases = [lease(f"shard-{n}", None) for n in range(5)]
    decision = choose_leases_to_take(leases, ME, set(), 2, 1)
    assert len(decision.take) == 2
    assert decision.target == 2 and decision.spillover == 3


def test_even_split_takes_nothing() -> None:
    leases = owned("peer", 1, 2) + owned(ME, 3, 4)
    decision = choose_leases_to_take(leases, ME, set(), None, 1)
    assert decision.take == [] and decision.steal == []
    assert decision.target == 2 and decision.num_workers == 2


def test_new_worker_steals_one_from_the_loaded_peer() -> None:
    leases = owned("peer", 1, 2, 3, 4)
    decision = choose_leases_to_take(leases, ME, set(), None, 1)
    assert decision.take == []
    assert keys(decision.steal) == ["shard-01"]
    assert decision.target == 2 and decision.num_workers == 2


def test_steal_cap_allows_several_up_to_the_surplus() -> None:
    leases = owned("peer", 1, 2, 3, 4, 5, 6)
    assert len(choose_leases_to_take(leases, ME, set(), None, 5).steal) == 3


def test_no_steal_from_a_peer_at_target() -> None:
    leases = owned("a", 1, 2) + owned("b", 3, 4) + owned(ME, 5)
    decision = choose_leases_to_take(leases, ME, set(), None, 1)
    assert decision.target == 2
    assert decision.take == [] and decision.steal == []


def test_steal_from_the_most_loaded_peer_ties_broken_by_worker_id() -> None:
    leases = owned("b", 1, 2, 3) + owned("a", 4, 5, 6) + owned("c", 7)
    decision = choose_leases_to_take(leases, ME, set(), None, 1)
    assert decision.target == 2
    assert [item.lease_owner for item in decision.steal] == ["a"]


def test_expired_leases_of_a_dead_worker_are_taken_not_stolen() -> None:
    leases = owned("peer", 1, 2) + owned("dead", 3, 4)
    decision = choose_leases_to_take(leases, ME, {"shard-03", "shard-04"}, None, 1)
    assert decision.num_workers == 2  # the dead worker no longer counts
    assert keys(decision.take) == ["shard-03", "shard-04"]
    assert decision.steal == []


def test_available_leases_preferred_over_stealing() -> None:
    leases = owned("peer", 1, 2, 3, 4) + [lease("shard-05", None)]
    decision = choose_leases_to_take(leases, ME, set(), None, 1)
    assert keys(decision.take) == ["shard-05"]
    assert decision.steal == []


def test_unowned_then_very_old_then_recently_expired() -> None:
    leases = owned("dead", 1, 2) + [lease("shard-09", None)] + owned("peer", 5, 6, 7, 8)
    decision = choose_leases_to_take(
        leases, ME, {"shard-01", "shard-02"}, None, 1, very_old_keys={"shard-02"}
    )
    assert decision.target == 4
    assert keys(decision.take) == ["shard-09", "shard-02", "shard-01"]


def test_finished_leases_are_neither_counted_nor_taken() -> None:
    leases = [lease(f"done-{n}", None, finished=True) for n in range(4)] + [
        lease("open-1", None),
        lease("open-2", "peer"),
    ]
    decision = choose_leases_to_take(leases, ME, set(), None, 1)
    assert decision.total_leases == 2
    assert keys(decision.take) == ["open-1"]


def test_peer_holding_only_finished_leases_is_not_a_worker() -> None:
    leases = [lease("done", "peer", finished=True), lease("open-1", None), lease("open-2", None)]
    decision = choose_leases_to_take(leases, ME, set(), None, 1)
    assert decision.num_workers == 1
    assert keys(decision.take) == ["open-1", "open-2"]


def test_my_own_expired_lease_is_available_to_me() -> None:
    leases = owned(ME, 1) + owned("peer", 2)
    decision = choose_leases_to_take(leases, ME, {"shard-01"}, None, 1)
    assert keys(decision.take) == ["shard-01"]


def test_random_order_takes_the_same_number_and_is_reproducible_by_seed() -> None:
    leases = [lease(f"shard-{n:02d}", None) for n in range(20)] + owned("peer", 90)
    first = choose_leases_to_take(leases, ME, set(), None, 1, rng=random.Random(7))
    again = choose_leases_to_take(leases, ME, set(), None, 1, rng=random.Random(7))
    assert len(first.take) == first.target == 11
    assert first.take == again.take
    assert keys(first.take) != sorted(keys(first.take))


# -- reclaim and release ------------------------------------------------------------


def test_restarted_worker_reclaims_unfinished_leases_naming_it() -> None:
    leases = owned(ME, 1, 2, 3) + owned("peer", 4) + [lease("done", ME, finished=True)]
    assert keys(leases_to_reclaim(leases, ME, held_keys={"shard-02"})) == ["shard-01", "shard-03"]


def test_tracker_reads_its_injected_clock_when_not_given_now() -> None:
    clock = [0.0]
    tracker = ExpiryTracker(FAILOVER, clock=lambda: clock[0])
    item = lease("a", "peer")
    tracker.observe([item])
    clock[0] = 10.5
    assert tracker.expired_keys([item]) == {"a"}
