"""Lease-taking policy: expiry by the local monotonic clock, take / steal / release choices.

Pure logic, no I/O: the lease coordinator scans the table, feeds the leases in
here with a monotonic ``now`` and acts on the answer through the lease store.

Expiry (as the KCL judges it): a lease is expired when its ``leaseCounter``
has not changed for ``failover_time_s`` since this worker first saw that
value. An unowned lease is always available. Balance: the number of workers
is the distinct owners of live (non-expired) leases plus this worker; the
target is ``ceil(leases / workers)`` capped by ``maxLeasesForWorker``.
Finished leases (checkpoint SHARD_END) are neither counted nor taken: they
only wait for cleanup, and counting them would skew the balance toward
whoever finished a parent shard.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace

from daemon.leases.model import Lease

VERY_OLD_MULTIPLIER = 3.0
_NEVER = float("-inf")


@dataclass
class _Seen:
    counter: int
    since: float


class ExpiryTracker:
    """Remembers, per lease key, the counter value seen and when it was first seen.

    Not thread-safe: owned by the one task that scans the table. ``now`` is a
    monotonic time in seconds; when a method is not given one it reads
    ``clock`` (default ``time.monotonic``), injected so tests drive time.
    """

    def __init__(
        self,
        failover_time_s: float,
        very_old_multiplier: float = VERY_OLD_MULTIPLIER,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        if failover_time_s <= 0:
            raise ValueError(f"failover time must be positive, got {failover_time_s}")
        self.failover_time_s = failover_time_s
        self.very_old_after_s = failover_time_s * very_old_multiplier
        self._clock = clock
        self._seen: dict[str, _Seen] = {}

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def observe(self, leases: Iterable[Lease], now: float | None = None) -> None:
        """Record one full table scan; keys absent from it are forgotten."""
        now = self._now(now)
        fresh: dict[str, _Seen] = {}
        for lease in leases:
            fresh[lease.lease_key] = self._next(lease, now)
        self._seen = fresh

    def record(self, lease: Lease, now: float | None = None) -> None:
        """Record one lease read or written outside a full scan (after a take or renew)."""
        now = self._now(now)
        self._seen[lease.lease_key] = self._next(lease, now)

    def forget(self, lease_key: str) -> None:
        self._seen.pop(lease_key, None)

    def _next(self, lease: Lease, now: float) -> _Seen:
        old = self._seen.get(lease.lease_key)
        if old is not None and old.counter == lease.lease_counter:
            return old
        if old is None and lease.lease_owner is None:
            # A lease first seen unowned has never been renewed in our sight:
            # treat it as long expired, so it is taken ahead of recent ones.
            return _Seen(lease.lease_counter, _NEVER)
        # A new value (or a new owned lease) counts as renewed at this scan.
        return _Seen(lease.lease_counter, now)

    def _unchanged_for(self, lease: Lease, now: float) -> float:
        seen = self._seen.get(lease.lease_key)
        if seen is None or seen.counter != lease.lease_counter:
            return 0.0 if lease.lease_owner is not None else math.inf
        return now - seen.since

    def is_expired(self, lease: Lease, now: float | None = None) -> bool:
        """True when nobody renews ``lease``: unowned, or counter unchanged for failover time."""
        if lease.lease_owner is None:
            return True
        return self._unchanged_for(lease, self._now(now)) > self.failover_time_s

    def is_very_old(self, lease: Lease, now: float | None = None) -> bool:
        """Expired for longer than 3 x failover (or never seen owned): taken first."""
        return self._unchanged_for(lease, self._now(now)) > self.very_old_after_s

    def expired_keys(self, leases: Iterable[Lease], now: float | None = None) -> set[str]:
        now = self._now(now)
        return {lease.lease_key for lease in leases if self.is_expired(lease, now)}

    def very_old_keys(self, leases: Iterable[Lease], now: float | None = None) -> set[str]:
        now = self._now(now)
        return {lease.lease_key for lease in leases if self.is_very_old(lease, now)}


@dataclass(frozen=True)
class TakeDecision:
    """What to take (available leases) and what to steal (live leases of a loaded peer).

    The counts are for the TakeLeases metrics (TotalLeases, NumWorkers,
    LeaseSpillover ...).
    """

    take: list[Lease] = field(default_factory=list)
    steal: list[Lease] = field(default_factory=list)
    target: int = 0
    num_workers: int = 1
    total_leases: int = 0
    available_leases: int = 0
    my_leases: int = 0
    spillover: int = 0


@dataclass(frozen=True)
class _Balance:
    active: list[Lease]
    available: list[Lease]
    live_counts: Counter[str]
    target: int
    spillover: int


def _balance(
    leases: Iterable[Lease],
    my_worker_id: str,
    expired_keys: Collection[str],
    max_leases_for_worker: int | None,
) -> _Balance:
    active = [lease for lease in leases if not lease.is_finished]
    available = [
        lease for lease in active if lease.lease_owner is None or lease.lease_key in expired_keys
    ]
    live_counts: Counter[str] = Counter(
        lease.lease_owner
        for lease in active
        if lease.lease_owner is not None and lease.lease_key not in expired_keys
    )
    live_counts[my_worker_id] += 0  # I am a worker even while holding nothing
    target = math.ceil(len(active) / len(live_counts)) if active else 0
    spillover = 0
    if max_leases_for_worker is not None and target > max_leases_for_worker:
        spillover = target - max_leases_for_worker
        target = max_leases_for_worker
    return _Balance(active, available, live_counts, target, spillover)


def _ordered(leases: list[Lease], rng: random.Random | None) -> list[Lease]:
    ordered = sorted(leases, key=lambda lease: lease.lease_key)
    if rng is not None:
        rng.shuffle(ordered)
    return ordered


def choose_leases_to_take(
    leases: Iterable[Lease],
    my_worker_id: str,
    expired_keys: Collection[str],
    max_leases_for_worker: int | None,
    max_leases_to_steal: int,
    *,
    very_old_keys: Collection[str] = frozenset(),
    rng: random.Random | None = None,
) -> TakeDecision:
    """Decide which leases this worker should take now, following the KCL's taker.

    Available leases (unowned, or in ``expired_keys``) are taken first, up to
    the target. Among them unowned leases come first (nobody is working on
    them, so taking them duplicates nothing), then ``very_old_keys``, then
    other expired leases. Only when nothing is available does the worker
    steal, from the most loaded peer, at most ``max_leases_to_steal``, and
    only leases that peer holds above the target. ``max_leases_for_worker``
    None means unlimited. Without ``rng`` the choice is deterministic (key
    order, ties between peers broken by worker id); with one, each group is
    shuffled so that workers starting together do not all race for the same
    leases.
    """
    balance = _balance(leases, my_worker_id, expired_keys, max_leases_for_worker)
    mine = balance.live_counts[my_worker_id]
    decision = TakeDecision(
        target=balance.target,
        num_workers=len(balance.live_counts),
        total_leases=len(balance.active),
        available_leases=len(balance.available),
        my_leases=mine,
        spillover=balance.spillover,
    )
    needed = balance.target - mine
    if needed <= 0:
        return decision

    if balance.available:
        groups: tuple[list[Lease], list[Lease], list[Lease]] = ([], [], [])
        for lease in balance.available:
            if lease.lease_owner is None:
                groups[0].append(lease)
            elif lease.lease_key in very_old_keys:
                groups[1].append(lease)
            else:
                groups[2].append(lease)
        ordered = [lease for group in groups for lease in _ordered(group, rng)]
        return replace(decision, take=ordered[:needed])

    peers = [
        (count, worker) for worker, count in balance.live_counts.items() if worker != my_worker_id
    ]
    if not peers:
        return decision
    # Most loaded first; among equals the smallest worker id, so the choice is stable.
    victim_count, victim = min(peers, key=lambda peer: (-peer[0], peer[1]))
    to_steal = min(needed, victim_count - balance.target, max_leases_to_steal)
    if to_steal <= 0:
        return decision
    victim_leases = [
        lease
        for lease in balance.active
        if lease.lease_owner == victim and lease.lease_key not in expired_keys
    ]
    steal = _ordered(victim_leases, rng)[:to_steal]
    return replace(decision, steal=steal)


def leases_to_reclaim(
    leases: Iterable[Lease], my_worker_id: str, held_keys: Collection[str]
) -> list[Lease]:
    """Unfinished leases that still name this worker but that it does not hold.

    A worker restarted with the same workerId takes these back at once
    instead of waiting a failover time for its own leases to expire.
    """
    return sorted(
        (
            lease
            for lease in leases
            if lease.lease_owner == my_worker_id
            and not lease.is_finished
            and lease.lease_key not in held_keys
        ),
        key=lambda lease: lease.lease_key,
    )


def leases_to_release_for_balance(
    leases: Iterable[Lease],
    my_worker_id: str,
    expired_keys: Collection[str],
    max_leases_for_worker: int | None,
    *,
    max_to_release: int = 1,
    min_deficit: int = 2,
) -> list[Lease]:
    """Which of my leases to hand off gracefully (checkpoint, then evict).

    Releasing beats being stolen from: the new owner starts at a fresh
    checkpoint instead of re-processing everything since the last one. I
    release only when I hold more than the target, nothing is available to
    take, and a visible peer holds at least ``min_deficit`` fewer than the
    target (default 2, i.e. fewer than target - 1: a peer one short is the
    normal rounding of ``ceil`` and left to the ordinary steal). A peer that
    holds no lease at all is invisible in the table, so it gets its leases
    by stealing. At most ``max_to_release`` per call, highest keys first.
    """
    balance = _balance(leases, my_worker_id, expired_keys, max_leases_for_worker)
    mine = [
        lease
        for lease in balance.active
        if lease.lease_owner == my_worker_id and lease.lease_key not in expired_keys
    ]
    surplus = len(mine) - balance.target
    if surplus <= 0 or balance.available:
        return []
    deficit = sum(
        balance.target - count
        for worker, count in balance.live_counts.items()
        if worker != my_worker_id and balance.target - count >= min_deficit
    )
    if deficit <= 0:
        return []
    count = min(surplus, deficit, max_to_release)
    return sorted(mine, key=lambda lease: lease.lease_key, reverse=True)[:count]
