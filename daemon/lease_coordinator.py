"""This worker's side of the lease table: renew, take, checkpoint, release.

Owns the set of leases this worker holds and every write to them. Writes to
one lease are serialised with a per-lease lock because each bumps the
lease counter that the next conditional write depends on (a checkpoint is also
a renewal). The decisions (what is expired, what to take or steal) are pure
functions in ``daemon.leases.policy``; this module is the asyncio shell that
runs them on a monotonic clock and calls the blocking ``LeaseStore`` in a
thread pool.

A lease is dropped locally, and its consumer told, when a conditional write
fails (another worker has it) or when no renewal has succeeded for a whole
failover time: by then a peer may legitimately have taken it, so we must stop
processing even if DynamoDB is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from daemon.errors import DependencyError, LeaseLostError
from daemon.leases.model import Lease
from daemon.leases.policy import ExpiryTracker, choose_leases_to_take
from daemon.leases.store import LeaseStore
from daemon.logs import get_logger
from daemon.sequence import ExtendedSequenceNumber

T = TypeVar("T")
LeaseCallback = Callable[[Lease], Awaitable[None] | None]
LostCallback = Callable[[str, str], Awaitable[None] | None]


@dataclass
class _Held:
    lease: Lease
    renewed_at: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LeaseCoordinator:
    def __init__(
        self,
        store: LeaseStore,
        worker_id: str,
        *,
        failover_s: float,
        max_leases_for_worker: int | None,
        max_leases_to_steal: int,
        executor: Executor,
        on_taken: LeaseCallback,
        on_lost: LostCallback,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.worker_id = worker_id
        self._failover_s = failover_s
        self._max_leases = max_leases_for_worker
        self._max_steal = max_leases_to_steal
        self._executor = executor
        self._on_taken = on_taken
        self._on_lost = on_lost
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._expiry = ExpiryTracker(failover_s, clock=clock)
        self._log = get_logger(worker_id=worker_id)
        self.last_scan: list[Lease] = []
        self.counts = {"taken": 0, "lost": 0, "stolen": 0, "released": 0, "renewed": 0}

    @property
    def renew_interval_s(self) -> float:
        return self._failover_s / 3

    @property
    def take_interval_s(self) -> float:
        # The official client scans every 2 x failover; scanning at failover/2
        # finds a dead worker's leases sooner for one cheap Scan per interval.
        return self._failover_s / 2

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # -- queries -------------------------------------------------------------

    def held_keys(self) -> list[str]:
        return sorted(self._held)

    def lease(self, key: str) -> Lease | None:
        held = self._held.get(key)
        return held.lease if held else None

    def holds(self, key: str) -> bool:
        held = self._held.get(key)
        return held is not None and not self._locally_expired(held)

    def _locally_expired(self, held: _Held) -> bool:
        return self._clock() - held.renewed_at >= self._failover_s

    async def get_lease(self, key: str) -> Lease | None:
        """A fresh read from the table (for parent checks)."""
        return await self._call(self._store.get_lease, key)

    # -- writes through the held lease ---------------------------------------

    async def _write(self, key: str, op: Callable[[Lease], Lease]) -> Lease:
        held = self._held.get(key)
        if held is None:
            raise LeaseLostError(f"lease {key} is not held by {self.worker_id}")
        async with held.lock:
            if self._held.get(key) is not held:
                raise LeaseLostError(f"lease {key} was lost")
            if self._locally_expired(held):
                await self._drop(key, "not renewed within the failover time")
                raise LeaseLostError(f"lease {key} expired locally")
            try:
                updated = await self._call(op, held.lease)
            except LeaseLostError:
                await self._drop(key, "conditional write failed")
                raise
            held.lease = updated
            held.renewed_at = self._clock()
            return updated

    async def checkpoint(
        self, key: str, position: ExtendedSequenceNumber, *, clear_pending: bool = True
    ) -> Lease:
        del clear_pending  # a commit always clears the prepared checkpoint
        return await self._write(
            key, lambda lease: self._store.checkpoint(lease, position, self.worker_id)
        )

    async def prepare_checkpoint(self, key: str, position: ExtendedSequenceNumber) -> Lease:
        return await self._write(
            key, lambda lease: self._store.prepare_checkpoint(lease, position, self.worker_id)
        )

    async def set_child_shard_ids(self, key: str, child_ids: list[str]) -> Lease:
        return await self._write(
            key, lambda lease: self._store.set_child_shard_ids(lease, child_ids)
        )

    async def release(self, key: str) -> None:
        """Give the lease up gracefully so a peer takes it at its next scan."""
        held = self._held.get(key)
        if held is None:
            return
        async with held.lock:
            self._held.pop(key, None)
            try:
                await self._call(self._store.evict, held.lease, self.worker_id)
                self.counts["released"] += 1
                self._log.info("lease released", shard_id=key)
            except (LeaseLostError, DependencyError) as error:
                # Either a peer already has it or it will expire: both are fine.
                self._log.warning("lease release failed", shard_id=key, error=str(error))

    async def forget(self, key: str) -> None:
        """Stop renewing a lease without a write (a finished shard)."""
        self._held.pop(key, None)

    async def _drop(self, key: str, why: str) -> None:
        if self._held.pop(key, None) is None:
            return
        self.counts["lost"] += 1
        self._log.warning("lease lost", shard_id=key, reason=why)
        result = self._on_lost(key, why)
        if result is not None:
            await result

    # -- the periodic work -----------------------------------------------------

    async def renew_all(self) -> None:
        for key in list(self._held):
            held = self._held.get(key)
            if held is None:
                continue
            if self._locally_expired(held):
                await self._drop(key, "not renewed within the failover time")
                continue
            try:
                await self._write(key, self._store.renew)
                self.counts["renewed"] += 1
            except LeaseLostError:
                continue
            except DependencyError as error:
                self._log.warning("lease renewal failed", shard_id=key, error=str(error))

    async def scan_and_take(self) -> None:
        leases = await self._call(self._store.list_leases)
        self.last_scan = leases
        now = self._clock()
        self._expiry.observe(leases, now)
        # Leases still naming us (a restart with the same workerId) come back
        # at once: waiting out the failover time for our own leases helps nobody.
        mine = [
            lease
            for lease in leases
            if lease.lease_owner == self.worker_id
            and lease.lease_key not in self._held
            and not _finished(lease)
        ]
        for lease in mine:
            await self._take(lease, stolen=False)
        decision = choose_leases_to_take(
            leases,
            self.worker_id,
            self._expiry.expired_keys(leases, now),
            self._max_leases,
            self._max_steal,
            very_old_keys=self._expiry.very_old_keys(leases, now),
        )
        for lease in decision.take:
            await self._take(lease, stolen=False)
        for lease in decision.steal:
            await self._take(lease, stolen=True)

    async def _take(self, lease: Lease, *, stolen: bool) -> None:
        if lease.lease_key in self._held:
            return
        try:
            taken = await self._call(self._store.take, lease, self.worker_id)
        except LeaseLostError:
            return  # a peer was quicker
        except DependencyError as error:
            self._log.warning("lease take failed", shard_id=lease.lease_key, error=str(error))
            return
        self._held[taken.lease_key] = _Held(taken, self._clock())
        self.counts["stolen" if stolen else "taken"] += 1
        self._log.info(
            "lease taken",
            shard_id=taken.lease_key,
            previous_owner=lease.lease_owner,
            stolen=stolen,
        )
        result = self._on_taken(taken)
        if result is not None:
            await result

    async def run(self, stop: asyncio.Event) -> None:
        """Renew and take until ``stop`` is set. Errors back off, never escape."""
        next_renew = self._clock() + self.renew_interval_s
        next_take = self._clock()
        while not stop.is_set():
            now = self._clock()
            if now >= next_take:
                try:
                    await self.scan_and_take()
                except DependencyError as error:
                    self._log.warning("lease scan failed", error=str(error))
                next_take = self._clock() + self.take_interval_s
            if now >= next_renew:
                await self.renew_all()
                next_renew = self._clock() + self.renew_interval_s
            wait = max(0.0, min(next_renew, next_take) - self._clock())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)


def _finished(lease: Lease) -> bool:
    return lease.checkpoint is not None and lease.checkpoint.is_shard_end
