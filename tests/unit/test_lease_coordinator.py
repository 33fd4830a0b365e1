"""The lease coordinator driven with an in-memory lease table and a fake monotonic clock.

The fake table applies the same conditions as the DynamoDB store (counter for renew, take and
checkpoint; owner for evict), so several coordinators sharing one table behave as workers
sharing a real one. Time only moves when a test moves it.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, MutableMapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from daemon.errors import DependencyError, LeaseLostError
from daemon.lease_coordinator import LeaseCoordinator
from daemon.leases.model import Lease
from daemon.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from daemon.shard_sync import leases_for_child_shards, leases_to_clean_up

FAILOVER = 10.0
T = TypeVar("T")


class InlineExecutor(Executor):
    """Runs each call at once, in the event loop's thread: the fake table needs no threads."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTable:
    """The LeaseStore calls the coordinator makes, with DynamoDB's conditions."""

    def __init__(self, keys: list[str] = ()) -> None:  # type: ignore[assignment]
        self.items: dict[str, Lease] = {
            key: Lease(key, checkpoint=ExtendedSequenceNumber(TRIM_HORIZON)) for key in keys
        }
        self.calls: Counter[str] = Counter()
        self.unreachable = False

    def _check(self, op: str) -> None:
        self.calls[op] += 1
        if self.unreachable:
            raise DependencyError(f"{op}: the table cannot be reached")

    def _expect(self, lease: Lease) -> Lease:
        current = self.items.get(lease.lease_key)
        if current is None or current.lease_counter != lease.lease_counter:
            raise LeaseLostError(f"{lease.lease_key}: counter moved")
        return current

    def list_leases(self) -> list[Lease]:
        self._check("list_leases")
        return list(self.items.values())

    def get_lease(self, key: str) -> Lease | None:
        self._check("get_lease")
        return self.items.get(key)

    def renew(self, lease: Lease) -> Lease:
        self._check("renew")
        current = self._expect(lease)
        self.items[lease.lease_key] = replace(current, lease_counter=current.lease_counter + 1)
        return self.items[lease.lease_key]

    def take(self, lease: Lease, worker_id: str) -> Lease:
        self._check("take")
        current = self._expect(lease)
        switches = current.owner_switches_since_checkpoint + (
            current.lease_owner not in (None, worker_id)
        )
        self.items[lease.lease_key] = replace(
            current,
            lease_owner=worker_id,
            lease_counter=current.lease_counter + 1,
            owner_switches_since_checkpoint=switches,
        )
        return self.items[lease.lease_key]

    def evict(self, lease: Lease, worker_id: str) -> None:
        self._check("evict")
        current = self.items.get(lease.lease_key)
        if current is None or current.lease_owner != worker_id:
            raise LeaseLostError(f"{lease.lease_key}: not held by {worker_id}")
        self.items[lease.lease_key] = replace(
            current, lease_owner=None, lease_counter=current.lease_counter + 1
        )

    def checkpoint(self, lease: Lease, position: ExtendedSequenceNumber, worker_id: str) -> Lease:
        self._check("checkpoint")
        current = self._expect(lease)
        if current.lease_owner != worker_id:
            raise LeaseLostError(f"{lease.lease_key}: not held by {worker_id}")
        self.items[lease.lease_key] = replace(
            current,
            checkpoint=position,
            lease_counter=current.lease_counter + 1,
            owner_switches_since_checkpoint=0,
        )
        return self.items[lease.lease_key]

    def set_child_shard_ids(self, lease: Lease, child_ids: list[str]) -> Lease:
        self._check("set_child_shard_ids")
        current = self.items[lease.lease_key]
        self.items[lease.lease_key] = replace(current, child_shard_ids=frozenset(child_ids))
        return self.items[lease.lease_key]

    def owners(self) -> Counter[str | None]:
        return Counter(lease.lease_owner for lease in self.items.values())


class Partition:
    """One worker's path to the table, which a test can cut."""

    def __init__(self, table: FakeTable) -> None:
        self.table = table
        self.cut = False

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.table, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.cut:
                raise DependencyError(f"{name}: network partition")
            return method(*args, **kwargs)

        return call


class Worker:
    """One coordinator plus what its callbacks saw."""

    def __init__(
        self,
        table: FakeTable | Partition,
        clock: FakeClock,
        worker_id: str,
        *,
        max_steal: int = 1,
        scan_interval_s: float | None = None,
    ) -> None:
        self.taken: list[str] = []
        self.lost: list[tuple[str, str]] = []
        self.handed_off: list[str] = []
        self.coordinator = LeaseCoordinator(
            table,  # type: ignore[arg-type]
            worker_id,
            failover_s=FAILOVER,
            max_leases_for_worker=None,
            max_leases_to_steal=max_steal,
            executor=InlineExecutor(),
            on_taken=lambda lease: self.taken.append(lease.lease_key),
            on_lost=lambda key, why: self.lost.append((key, why)),
            on_hand_off=self._hand_off,
            clock=clock,
            scan_interval_s=scan_interval_s,
        )
        self.wake = clock()

    async def step(self) -> float:
        return await self.coordinator.tick()

    async def _hand_off(self, key: str) -> None:
        # What a consumer does after its child's final checkpoint.
        self.handed_off.append(key)
        await self.coordinator.release(key)

    def held(self) -> int:
        return len(self.coordinator.held_keys())


class RenewOnlyPeer:
    """A worker that renews what it owns and never hands off (as the Java KCL)."""

    def __init__(self, table: FakeTable, clock: FakeClock, worker_id: str) -> None:
        self.table = table
        self.clock = clock
        self.worker_id = worker_id
        self.wake = clock()

    async def step(self) -> float:
        for lease in list(self.table.items.values()):
            if lease.lease_owner == self.worker_id:
                self.table.renew(lease)
        return self.clock() + FAILOVER / 3

    def held(self) -> int:
        return self.table.owners()[self.worker_id]


class Cluster:
    """Workers sharing one table; ``run_until`` advances the clock from wake-up to wake-up."""

    def __init__(self, keys: int, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.table = FakeTable([f"shard-{n:02d}" for n in range(keys)])
        self.workers: dict[str, Any] = {}

    def add(self, worker_id: str, table: Partition | None = None, **kwargs: Any) -> Worker:
        worker = Worker(table or self.table, self.clock, worker_id, **kwargs)
        self.workers[worker_id] = worker
        return worker

    def add_renew_only(self, worker_id: str) -> RenewOnlyPeer:
        peer = RenewOnlyPeer(self.table, self.clock, worker_id)
        self.workers[worker_id] = peer
        return peer

    def remove(self, worker_id: str) -> Worker:
        """The worker stops (killed: no more writes from it)."""
        worker: Worker = self.workers.pop(worker_id)
        return worker

    async def run_until(self, moment: float, stop: Callable[[], bool] = lambda: False) -> None:
        while not stop():
            due = min(worker.wake for worker in self.workers.values())
            if due > moment:
                self.clock.now = moment
                return
            self.clock.now = max(self.clock.now, due)
            for worker in list(self.workers.values()):
                if worker.wake <= self.clock.now:
                    worker.wake = await worker.step()

    def spread(self) -> dict[str, int]:
        """Leases each worker believes it holds."""
        return {name: worker.held() for name, worker in self.workers.items()}

    def owners(self) -> dict[str, int]:
        """Leases the table names each worker as owner of."""
        owners = self.table.owners()
        return {name: owners[name] for name in self.workers}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def even(spread: dict[str, int]) -> bool:
    return max(spread.values()) - min(spread.values()) <= 1


# -- renewal and local expiry ------------------------------------------------------------


def test_lone_worker_takes_every_lease_and_reports_each_taken_lease() -> None:
    async def scenario() -> None:
        cluster = Cluster(4)
        worker = cluster.add("w1")
        await cluster.run_until(cluster.clock.now)
        assert sorted(worker.taken) == [f"shard-0{n}" for n in range(4)]
        assert cluster.table.owners() == {"w1": 4}

    run(scenario())


def test_held_leases_are_renewed_every_third_of_the_failover_time() -> None:
    async def scenario() -> None:
        cluster = Cluster(2)
        cluster.add("w1")
        start = cluster.clock.now
        await cluster.run_until(start + FAILOVER + 0.1)
        # Taken at `start` (counter 1), then renewed at F/3, 2F/3 and F.
        assert {lease.lease_counter for lease in cluster.table.items.values()} == {4}

    run(scenario())


def test_a_recent_checkpoint_stands_in_for_the_renewal() -> None:
    async def scenario() -> None:
        cluster = Cluster(2)
        worker = cluster.add("w1")
        start = cluster.clock.now
        await cluster.run_until(start + FAILOVER / 3 - 0.5)
        await worker.coordinator.checkpoint("shard-00", ExtendedSequenceNumber("42"))
        renewals = cluster.table.calls["renew"]
        await cluster.run_until(start + FAILOVER / 3 + 0.1)
        assert cluster.table.calls["renew"] == renewals + 1, "only the other lease is renewed"

    run(scenario())


def test_lease_not_renewed_for_the_failover_time_is_dropped_at_that_moment() -> None:
    async def scenario() -> None:
        cluster = Cluster(1)
        worker = cluster.add("w1")
        start = cluster.clock.now
        await cluster.run_until(start)
        cluster.table.unreachable = True
        await cluster.run_until(start + FAILOVER - 0.01)
        assert worker.lost == [] and worker.coordinator.holds("shard-00")
        await cluster.run_until(start + FAILOVER + 0.001)
        assert worker.lost == [("shard-00", "not renewed within the failover time")]
        assert not worker.coordinator.holds("shard-00")

    run(scenario())


def test_a_lease_expired_locally_is_never_renewed() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        table = FakeTable(["shard-00"])
        worker = Worker(table, clock, "w1")
        await worker.coordinator.tick()
        clock.now += FAILOVER + 1  # the loop was stalled past the failover time
        renewals = table.calls["renew"]
        await worker.coordinator.renew_step()
        assert table.calls["renew"] == renewals
        assert [key for key, _ in worker.lost] == ["shard-00"]

    run(scenario())


def test_failed_conditional_write_drops_the_lease_and_tells_the_consumer() -> None:
    async def scenario() -> None:
        cluster = Cluster(1)
        worker = cluster.add("w1")
        await cluster.run_until(cluster.clock.now)
        cluster.table.take(cluster.table.items["shard-00"], "thief")
        await cluster.run_until(cluster.clock.now + FAILOVER / 3)
        assert worker.lost == [("shard-00", "conditional write failed")]

    run(scenario())


def test_checkpoint_after_the_lease_is_lost_is_refused_without_a_write() -> None:
    async def scenario() -> None:
        cluster = Cluster(1)
        worker = cluster.add("w1")
        await cluster.run_until(cluster.clock.now)
        cluster.table.unreachable = True
        await cluster.run_until(cluster.clock.now + FAILOVER + 1)
        cluster.table.unreachable = False
        writes = cluster.table.calls["checkpoint"]
        with pytest.raises(LeaseLostError):
            await worker.coordinator.checkpoint("shard-00", ExtendedSequenceNumber("7"))
        assert cluster.table.calls["checkpoint"] == writes

    run(scenario())


def test_checkpoint_is_logged_at_debug_with_the_new_lease_counter() -> None:
    async def scenario() -> list[MutableMapping[str, Any]]:
        cluster = Cluster(1)
        worker = cluster.add("w1")
        await cluster.run_until(cluster.clock.now)
        with capture_logs() as logs:
            await worker.coordinator.checkpoint("shard-00", ExtendedSequenceNumber("7", 2))
        return logs

    (entry,) = [log for log in run(scenario()) if log["event"] == "checkpoint written"]
    assert entry["log_level"] == "debug"
    assert entry["sequence_number"] == "7" and entry["sub_sequence_number"] == 2
    assert entry["lease_counter"] == 2


def test_recording_child_shards_is_not_a_renewal() -> None:
    async def scenario() -> None:
        cluster = Cluster(1)
        worker = cluster.add("w1")
        start = cluster.clock.now
        await cluster.run_until(start)
        cluster.table.unreachable = True
        await cluster.run_until(start + FAILOVER - 1)
        cluster.table.unreachable = False
        await worker.coordinator.set_child_shard_ids("shard-00", ["shard-07"])
        cluster.table.unreachable = True
        await cluster.run_until(start + FAILOVER + 0.001)
        assert [key for key, _ in worker.lost] == ["shard-00"]

    run(scenario())


# -- expiry, failover and scans -------------------------------------------------------------


def test_peer_lease_is_taken_only_after_its_counter_stays_unchanged_for_the_failover_time() -> None:
    async def scenario() -> None:
        cluster = Cluster(2)
        cluster.add("dead")
        await cluster.run_until(cluster.clock.now)
        cluster.remove("dead")
        survivor = cluster.add("w2", max_steal=0)
        first_seen = cluster.clock.now
        await cluster.run_until(first_seen + FAILOVER)
        assert survivor.taken == []
        await cluster.run_until(first_seen + FAILOVER + 0.1)
        assert sorted(survivor.taken) == ["shard-00", "shard-01"]

    run(scenario())


def test_a_scan_is_aimed_just_after_a_peer_lease_would_expire() -> None:
    async def scenario() -> None:
        cluster = Cluster(1)
        cluster.add("dead")
        await cluster.run_until(cluster.clock.now)
        cluster.remove("dead")
        # Regular scans at 0, 3, 6, 9, 12 s after the first sight: the lease
        # expires at 10 s, and is taken then, not at 12 s.
        survivor = cluster.add("w2", max_steal=0, scan_interval_s=3.0)
        first_seen = cluster.clock.now
        await cluster.run_until(first_seen + FAILOVER + 0.1)
        assert survivor.taken == ["shard-00"]

    run(scenario())


@pytest.mark.parametrize("seed", range(8))
def test_dead_workers_leases_are_taken_within_a_quarter_failover_after_they_expire(
    seed: int,
) -> None:
    async def scenario() -> None:
        rng = random.Random(seed)
        cluster = Cluster(4)
        cluster.add("victim")
        await cluster.run_until(cluster.clock.now)
        cluster.add("survivor")
        await cluster.run_until(cluster.clock.now + rng.uniform(2 * FAILOVER, 3 * FAILOVER))
        victim = cluster.remove("victim")
        killed = cluster.clock.now
        last_write = max(held.written_at for held in victim.coordinator._held.values())
        survivor = cluster.workers["survivor"]
        await cluster.run_until(killed + 3 * FAILOVER, stop=lambda: survivor.held() == 4)
        taken_after = cluster.clock.now - last_write
        assert survivor.held() == 4
        assert FAILOVER < taken_after <= FAILOVER + FAILOVER / 4 + 0.1

    run(scenario())


# -- balance: steal, hand off, release ---------------------------------------------------------


def test_worker_holding_nothing_steals_one_lease_at_once() -> None:
    async def scenario() -> None:
        cluster = Cluster(4)
        cluster.add("w1")
        await cluster.run_until(cluster.clock.now)
        joiner = cluster.add("w2")
        await cluster.run_until(cluster.clock.now + 0.01)
        assert joiner.held() == 1
        assert joiner.coordinator.counts["stolen"] == 1

    run(scenario())


def test_worker_holding_leases_waits_a_failover_time_before_stealing_again() -> None:
    async def scenario() -> None:
        cluster = Cluster(6)
        for key in list(cluster.table.items):
            cluster.table.take(cluster.table.items[key], "java")
        cluster.add_renew_only("java")
        joiner = cluster.add("w2")
        joined = cluster.clock.now
        await cluster.run_until(joined + FAILOVER - 0.5)
        assert joiner.coordinator.counts["stolen"] == 1
        await cluster.run_until(joined + 2 * FAILOVER + 1)
        assert joiner.coordinator.counts["stolen"] == 2

    run(scenario())


def test_overloaded_worker_hands_off_its_share_instead_of_waiting_to_be_stolen_from() -> None:
    async def scenario() -> None:
        cluster = Cluster(12)
        first = cluster.add("w1")
        await cluster.run_until(cluster.clock.now)
        joiner = cluster.add("w2")
        joined = cluster.clock.now
        await cluster.run_until(joined + FAILOVER, stop=lambda: cluster.owners()["w2"] == 6)
        assert cluster.owners() == {"w1": 6, "w2": 6}
        assert cluster.clock.now - joined < FAILOVER / 2
        await cluster.run_until(cluster.clock.now + FAILOVER)
        assert cluster.spread() == {"w1": 6, "w2": 6}
        assert joiner.coordinator.counts["stolen"] == 1, "only the first lease is stolen"
        assert len(first.handed_off) == 5
        assert first.lost == [("shard-00", "conditional write failed")]

    run(scenario())


def test_released_lease_is_not_taken_back_by_the_worker_that_released_it() -> None:
    async def scenario() -> None:
        cluster = Cluster(3)
        worker = cluster.add("w1")
        await cluster.run_until(cluster.clock.now)
        await worker.coordinator.release("shard-01")
        await cluster.run_until(cluster.clock.now + FAILOVER)
        assert "shard-01" not in worker.coordinator.held_keys()
        await cluster.run_until(cluster.clock.now + 1.5 * FAILOVER)
        assert "shard-01" in worker.coordinator.held_keys(), "nobody else took it: back it comes"

    run(scenario())


def test_restarted_worker_reclaims_its_own_leases_at_its_first_scan() -> None:
    async def scenario() -> None:
        cluster = Cluster(3)
        cluster.add("w1")
        await cluster.run_until(cluster.clock.now)
        cluster.remove("w1")
        again = cluster.add("w1")
        await cluster.run_until(cluster.clock.now + 0.01)
        assert sorted(again.taken) == ["shard-00", "shard-01", "shard-02"]

    run(scenario())


def test_draining_worker_takes_nothing_more() -> None:
    async def scenario() -> None:
        cluster = Cluster(2)
        worker = cluster.add("w1")
        worker.coordinator.stop_taking()
        await cluster.run_until(cluster.clock.now + FAILOVER)
        assert worker.taken == []

    run(scenario())


def test_finished_leases_are_neither_taken_nor_reclaimed() -> None:
    async def scenario() -> None:
        cluster = Cluster(2)
        done = cluster.table.items["shard-00"]
        cluster.table.items["shard-00"] = replace(
            done, lease_owner="w1", checkpoint=ExtendedSequenceNumber(SHARD_END)
        )
        worker = cluster.add("w1")
        await cluster.run_until(cluster.clock.now + FAILOVER)
        assert worker.taken == ["shard-01"]

    run(scenario())


@pytest.mark.parametrize("seed", range(5))
def test_three_workers_starting_together_converge_to_an_even_spread(seed: int) -> None:
    async def scenario() -> None:
        cluster = Cluster(12)
        for n in range(3):
            worker = cluster.add(f"w{n}")
            worker.coordinator._rng = random.Random(seed * 10 + n)
        await cluster.run_until(cluster.clock.now + 3 * FAILOVER)
        assert cluster.spread() == {"w0": 4, "w1": 4, "w2": 4}
        assert sum(w.coordinator.counts["stolen"] for w in cluster.workers.values()) <= 2

    run(scenario())


def test_joining_workers_get_their_share_and_a_leaving_worker_frees_its_leases_at_once() -> None:
    async def scenario() -> None:
        cluster = Cluster(12)
        cluster.add("w0")
        await cluster.run_until(cluster.clock.now)
        cluster.add("w1")
        await cluster.run_until(cluster.clock.now + FAILOVER)
        cluster.add("w2")
        await cluster.run_until(cluster.clock.now + 2 * FAILOVER)
        assert cluster.spread() == {"w0": 4, "w1": 4, "w2": 4}
        leaving = cluster.remove("w2")
        leaving.coordinator.stop_taking()
        for key in leaving.coordinator.held_keys():
            await leaving.coordinator.release(key)
        left = cluster.clock.now
        await cluster.run_until(left + FAILOVER, stop=lambda: sum(cluster.spread().values()) == 12)
        assert cluster.spread() == {"w0": 6, "w1": 6}
        assert cluster.clock.now - left <= FAILOVER / 4 + 0.01, "taken at the next scan"

    run(scenario())


def test_uneven_spread_from_rounding_is_evened_out_by_a_hand_off() -> None:
    async def scenario() -> None:
        cluster = Cluster(10)
        cluster.add("a")
        cluster.add("b")
        for n, key in enumerate(sorted(cluster.table.items)):
            owner = "a" if n < 4 else "b" if n < 8 else "c"
            cluster.table.items[key] = replace(cluster.table.items[key], lease_owner=owner)
        cluster.add("c")
        await cluster.run_until(cluster.clock.now + 2 * FAILOVER)
        assert even(cluster.spread())
        assert all(w.coordinator.counts["stolen"] == 0 for w in cluster.workers.values())

    run(scenario())


def test_a_partitioned_worker_and_its_successor_overlap_on_a_lease_for_at_most_the_failover_time() -> (
    None
):
    async def scenario() -> None:
        cluster = Cluster(2)
        path = Partition(cluster.table)
        isolated = cluster.add("w1", table=path)
        await cluster.run_until(cluster.clock.now + 1)
        path.cut = True
        successor = cluster.add("w2")
        both_since: dict[str, float] = {}
        longest = 0.0
        end = cluster.clock.now + 3 * FAILOVER
        while cluster.clock.now < end:
            await cluster.run_until(cluster.clock.now + 0.05)
            for key in cluster.table.items:
                if isolated.coordinator.holds(key) and successor.coordinator.holds(key):
                    both_since.setdefault(key, cluster.clock.now)
                    longest = max(longest, cluster.clock.now - both_since[key])
                else:
                    both_since.pop(key, None)
        assert successor.held() == 2 and isolated.held() == 0
        assert successor.coordinator.counts["stolen"] == 1
        assert 0 < longest <= FAILOVER

    run(scenario())


def test_a_joining_worker_steals_a_child_lease_waiting_on_its_parent_first() -> None:
    async def scenario() -> None:
        cluster = Cluster(3)
        items = cluster.table.items
        items["shard-99"] = Lease("shard-99", parent_shard_ids=frozenset({"shard-00"}))
        for key in list(items):
            cluster.table.take(items[key], "w1")
        cluster.add_renew_only("w1")
        joiner = cluster.add("w2")
        await cluster.run_until(cluster.clock.now + 0.01)
        assert joiner.taken == ["shard-99"], "nothing runs for it yet: moving it replays nothing"

    run(scenario())


class HangingTable(FakeTable):
    """Writes block until ``release`` is set, as a DynamoDB that stops answering."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(keys)
        self.hang = threading.Event()
        self.release = threading.Event()

    def _check(self, op: str) -> None:
        super()._check(op)
        if self.hang.is_set() and op != "list_leases":
            self.release.wait(10)


def test_a_hanging_table_does_not_keep_a_lease_past_its_local_expiry() -> None:
    async def scenario() -> None:
        table = HangingTable(["shard-00"])
        lost: list[str] = []
        coordinator = LeaseCoordinator(
            table,  # type: ignore[arg-type]
            "w1",
            failover_s=0.6,
            max_leases_for_worker=None,
            max_leases_to_steal=1,
            executor=ThreadPoolExecutor(4),
            on_taken=lambda lease: None,
            on_lost=lambda key, why: lost.append(key),
        )
        await coordinator.scan_and_take()
        table.hang.set()
        stop = asyncio.Event()
        loops = asyncio.create_task(coordinator.run(stop))
        with pytest.raises(LeaseLostError):
            await coordinator.checkpoint("shard-00", ExtendedSequenceNumber("5"))
        assert lost == ["shard-00"]
        assert not table.release.is_set(), "the write is still hanging"
        table.release.set()
        stop.set()
        await loops

    run(scenario())


class RacyTable(FakeTable):
    """A peer takes ``contested`` just before this worker's take of it lands."""

    def __init__(self, keys: list[str], contested: str) -> None:
        super().__init__(keys)
        self.contested = contested

    def take(self, lease: Lease, worker_id: str) -> Lease:
        if lease.lease_key == self.contested and worker_id != "peer":
            super().take(self.items[lease.lease_key], "peer")
        return super().take(lease, worker_id)


def test_a_lost_race_for_an_available_lease_is_made_up_with_the_next_one() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        table = RacyTable([f"shard-{n:02d}" for n in range(6)], contested="shard-02")
        for key in ("shard-00", "shard-01"):
            table.take(table.items[key], "peer")
        worker = Worker(table, clock, "w1")
        await worker.coordinator.scan_and_take()
        assert sorted(worker.taken) == ["shard-03", "shard-04", "shard-05"]
        assert table.owners() == {"peer": 3, "w1": 3}

    run(scenario())


# -- the lease-table rules that scans drive (shard_sync: child leases, cleanup) ---------------


def finished(
    key: str, children: frozenset[str] = frozenset(), parents: frozenset[str] = frozenset()
) -> Lease:
    return Lease(
        key,
        checkpoint=ExtendedSequenceNumber(SHARD_END),
        child_shard_ids=frozenset(children),
        parent_shard_ids=frozenset(parents),
    )


def child(key: str, checkpoint: str, parents: set[str]) -> Lease:
    return Lease(
        key, checkpoint=ExtendedSequenceNumber(checkpoint), parent_shard_ids=frozenset(parents)
    )


def test_finished_parent_is_cleaned_up_once_every_child_has_a_real_checkpoint() -> None:
    leases = [
        finished("p", frozenset({"c1", "c2"})),
        child("c1", "100", {"p"}),
        child("c2", SHARD_END, {"p"}),
    ]
    assert [lease.lease_key for lease in leases_to_clean_up(leases)] == ["p"]


def test_finished_parent_stays_while_a_child_has_not_started() -> None:
    leases = [
        finished("p", frozenset({"c1", "c2"})),
        child("c1", "100", {"p"}),
        child("c2", TRIM_HORIZON, {"p"}),
    ]
    assert leases_to_clean_up(leases) == []


def test_finished_parent_stays_while_a_child_has_no_lease() -> None:
    assert leases_to_clean_up([finished("p", frozenset({"c1"}))]) == []


def test_lineage_is_cleaned_up_oldest_first() -> None:
    leases = [
        finished("grandparent", frozenset({"parent"})),
        finished("parent", frozenset({"child"}), parents=frozenset({"grandparent"})),
        child("child", "7", {"parent"}),
    ]
    assert [lease.lease_key for lease in leases_to_clean_up(leases)] == ["grandparent"]


def test_children_come_from_list_shards_when_the_lease_does_not_name_them() -> None:
    leases = [finished("p"), child("c", "5", {"p"})]
    shards = [{"ShardId": "p"}, {"ShardId": "c", "ParentShardId": "p"}]
    assert leases_to_clean_up(leases) == []
    assert [lease.lease_key for lease in leases_to_clean_up(leases, shards)] == ["p"]


def test_child_shards_named_at_shard_end_get_leases_with_lineage_and_hash_range() -> None:
    parent = Lease("p", checkpoint=ExtendedSequenceNumber("9"))
    child_shards: list[dict[str, Any]] = [
        {
            "ShardId": "c1",
            "ParentShards": ["p"],
            "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "99"},
        },
        {"ShardId": "known", "ParentShards": ["p"]},
    ]
    existing = {"p": parent, "known": child("known", TRIM_HORIZON, {"p"})}
    (planned,) = leases_for_child_shards(child_shards, existing)
    assert planned.lease_key == "c1" and planned.lease_owner is None
    assert planned.parent_shard_ids == {"p"}
    assert planned.checkpoint == ExtendedSequenceNumber(TRIM_HORIZON)
    assert (planned.starting_hash_key, planned.ending_hash_key) == (0, 99)
