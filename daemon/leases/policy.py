"""Lease-taking policy: expiry by the local monotonic clock, take / steal / release choices.

Pure logic, no I/O: the lease coordinator scans the table, feeds the leases in
here with a monotonic ``now`` and acts on the answer through the lease store.

Expiry (as the KCL judges it): a lease is expired when its ``leaseCounter``
has not changed for ``failover_time_s`` since this worker first saw that
value. An unowned lease is always available. Balance: the number of workers
is the distinct owners of live (non-expired) leases plus this worker; the
target is ``ceil(leases / workers)`` capped by ``maxLeasesForWorker``.
Workers take available leases up to the target and steal as the KCL does
(``choose_leases_to_take``), but steals wait (``StealGate``) while peers can
hand leases off gracefully instead (``leases_to_hand_off``), which evens the
spread out to most - fewest <= 1.
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

    def next_expiry(
        self, leases: Iterable[Lease], my_worker_id: str, now: float | None = None
    ) -> float | None:
        """The earliest moment, not before ``now``, at which a peer's live lease expires
        unless renewed.

        A scan scheduled just after it sees a dead worker's lease expired as
        early as the rule allows, instead of up to a scan interval later.
        Unowned, finished and already expired leases, and my own, are skipped.
        """
        now = self._now(now)
        earliest: float | None = None
        for lease in leases:
            if lease.lease_owner in (None, my_worker_id) or lease.is_finished:
                continue
            seen = self._seen.get(lease.lease_key)
            if seen is None or seen.counter != lease.lease_counter:
                continue
            moment = seen.since + self.failover_time_s
            if moment >= now and (earliest is None or moment < earliest):
                earliest = moment
        return earliest


@dataclass(frozen=True)
class TakeDecision:
    """What to take (available leases) and what to steal (live leases of a loaded peer).

    ``spare`` holds the other available leases, in the same order of
    preference: when a peer wins the race for one in ``take``, the next
    spare one is taken instead. The counts are for the TakeLeases metrics
    (TotalLeases, NumWorkers, LeaseSpillover ...).
    """

    take: list[Lease] = field(default_factory=list)
    steal: list[Lease] = field(default_factory=list)
    spare: list[Lease] = field(default_factory=list)
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


def waiting_on_parents(leases: Iterable[Lease]) -> set[str]:
    """Keys of leases whose shard cannot be processed yet: a parent's lease is unfinished.

    Moving such a lease to another worker costs nothing (no child runs for it,
    nothing is replayed), so steals and hand-offs pick these first.
    """
    leases = list(leases)
    unfinished = {lease.lease_key for lease in leases if not lease.is_finished}
    return {
        lease.lease_key
        for lease in leases
        if not lease.is_finished and unfinished & lease.parent_shard_ids
    }


def _waiting_first(leases: list[Lease], waiting: Collection[str]) -> list[Lease]:
    # A stable sort: the order within each group is kept.
    return sorted(leases, key=lambda lease: lease.lease_key not in waiting)


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
    only as many as that peer holds above the target (or one when this
    worker is two or more short and that peer is at the target, as the KCL
    does); leases waiting on their parents are stolen first, as moving them
    replays nothing. ``max_leases_for_worker`` None means unlimited. Without
    ``rng`` the choice is deterministic (key order, ties between peers broken
    by worker id); with one, each group is shuffled so that workers starting
    together do not all race for the same leases.
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
        return replace(decision, take=ordered[:needed], spare=ordered[needed:])

    peers = [
        (count, worker) for worker, count in balance.live_counts.items() if worker != my_worker_id
    ]
    if not peers:
        return decision
    # Most loaded first; among equals the smallest worker id, so the choice is stable.
    victim_count, victim = min(peers, key=lambda peer: (-peer[0], peer[1]))
    to_steal = min(needed, victim_count - balance.target, max_leases_to_steal)
    if to_steal <= 0 and needed > 1 and victim_count == balance.target:
        # As the KCL does: two or more short while the busiest peer sits at the
        # (rounded-up) target, one lease still moves, or 4/4/2 would never even out.
        to_steal = min(1, max_leases_to_steal)
    if to_steal <= 0:
        return decision
    victim_leases = [
        lease
        for lease in balance.active
        if lease.lease_owner == victim and lease.lease_key not in expired_keys
    ]
    waiting = waiting_on_parents(balance.active)
    steal = _waiting_first(_ordered(victim_leases, rng), waiting)[:to_steal]
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


def leases_to_hand_off(
    leases: Iterable[Lease],
    my_worker_id: str,
    expired_keys: Collection[str],
) -> list[Lease]:
    """Which of my leases to hand off gracefully so the spread evens out (most - fewest <= 1).

    Leases move, in a simulation on this scan, one at a time from the most
    loaded worker to the least loaded one (ties by worker id) until no two
    workers differ by more than one; I hand off what the simulation moved
    from me. Every worker runs the same simulation on the same scan, so each
    gives up only its own share and no more than the starved peers need.
    Nothing moves while any lease is available (it is taken first; a lease
    being handed off shows as available), and a peer holding no lease is
    invisible here: it steals its first one. Leases waiting on their parents
    go first (nothing to replay), then the highest keys.
    """
    balance = _balance(leases, my_worker_id, expired_keys, None)
    if balance.available:
        return []
    counts = dict(balance.live_counts)
    moved = 0
    for _ in range(len(balance.active)):
        busiest = min(counts, key=lambda worker: (-counts[worker], worker))
        idlest = min(counts, key=lambda worker: (counts[worker], worker))
        if counts[busiest] - counts[idlest] < 2:
            break
        counts[busiest] -= 1
        counts[idlest] += 1
        moved += busiest == my_worker_id
    if not moved:
        return []
    mine = [
        lease
        for lease in balance.active
        if lease.lease_owner == my_worker_id and lease.lease_key not in expired_keys
    ]
    newest_first = sorted(mine, key=lambda lease: lease.lease_key, reverse=True)
    return _waiting_first(newest_first, waiting_on_parents(balance.active))[:moved]


class StealGate:
    """Holds back steals while peers can still hand leases off gracefully.

    A steal makes the new owner replay everything since the victim's last
    checkpoint; a hand-off (``leases_to_hand_off``) replays nothing. A worker
    that holds no lease is invisible to its peers, so it steals at once (as
    the KCL does); one that holds leases steals only after wanting to for
    ``grace_s`` without getting a lease, which is time enough for a
    kcl-daemon peer to hand off and still lets it balance against peers that
    never hand off (the Java KCL). Pure: ``now`` comes from the caller.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._wanting_since: float | None = None

    def allow(self, wants_to_steal: bool, holding: int, now: float) -> bool:
        """Whether a steal the policy asks for may happen now."""
        if not wants_to_steal:
            self._wanting_since = None
            return False
        if holding == 0:
            return True
        if self._wanting_since is None:
            self._wanting_since = now
        return now - self._wanting_since >= self.grace_s

    def got_lease(self, now: float) -> None:
        """A take or steal succeeded: peers are cooperating, wait a full grace again."""
        if self._wanting_since is not None:
            self._wanting_since = now
