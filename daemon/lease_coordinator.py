"""This worker's side of the lease table: renew, take, steal, hand off, checkpoint, release.

Owns the set of leases this worker holds and every write to them. Writes to
one lease are serialised with a per-lease lock because each bumps the lease
counter that the next conditional write depends on (a checkpoint is also a
renewal). The decisions (what is expired, what to take, steal or hand off)
are pure functions in ``daemon.leases.policy``; this module is the asyncio
shell that runs them on an injected monotonic clock and calls the blocking
``LeaseStore`` in a thread pool.

Timing, with F = failoverTimeMillis:

- Renewal: a round every F/3 writes each held lease that no write has
  touched for F/6, so a shard that checkpoints costs no renewals. A lease
  counts as renewed when its successful write was *sent*: a peer cannot
  have seen that counter earlier, so it cannot judge the lease expired
  before that moment + F.
- Local expiry: a lease with no successful write for F is dropped at that
  moment (a timer in its own loop, not the next round) and its consumer
  told: a peer may take it from then on, even if DynamoDB is unreachable or
  hangs for us (a write still in flight then is abandoned). A failed
  conditional write (a peer took it) drops it at once.
- Scans: every F/4, and also just after the moment a peer's lease would
  expire if its counter stays put (``ExpiryTracker.next_expiry``). A dead
  worker's leases are then taken about F + F/4 at most after its last
  renewal (the official client, scanning every 2F, needs up to about 3F).
- Balance: leases still naming this worker are reclaimed at once; available
  leases are taken up to the target; a steal (from the most loaded peer) is
  held back by ``StealGate`` while this worker holds leases, so that peers
  running kcl-daemon get time to hand off instead; and this worker hands off
  its own share (``leases_to_hand_off``) through ``on_hand_off``: the
  consumer sends shutdownRequested, the child checkpoints, then
  :meth:`release` evicts the lease, so the new owner replays nothing. A
  lease released here is not taken back for 2F, so a peer gets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from daemon.errors import DependencyError, KclDaemonError, LeaseLostError
from daemon.leases.model import Lease
from daemon.leases.policy import (
    ExpiryTracker,
    StealGate,
    TakeDecision,
    choose_leases_to_take,
    leases_to_hand_off,
    leases_to_reclaim,
)
from daemon.leases.store import LeaseStore
from daemon.logs import get_logger
from daemon.sequence import ExtendedSequenceNumber

T = TypeVar("T")
LeaseCallback = Callable[[Lease], Awaitable[None] | None]
LostCallback = Callable[[str, str], Awaitable[None] | None]
KeyCallback = Callable[[str], Awaitable[None] | None]
ScanCallback = Callable[[list[Lease]], None]

# A scan aimed at a peer lease's expiry moment runs this much later, so that
# the strict "unchanged for longer than F" test already holds when it lands.
_EXPIRY_MARGIN_S = 0.025


@dataclass
class _Held:
    lease: Lease
    written_at: float  # when the last successful write on it was sent
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


class LeaseCoordinator:
    """This worker's leases (see the module doc), driven by :meth:`run`.

    Callbacks: ``on_taken(lease)`` after a take (start a consumer);
    ``on_lost(key, why)`` once a lease is dropped (the consumer sends
    leaseLost); ``on_hand_off(key)`` when balance asks to give a lease up (the
    consumer's graceful stop ends in :meth:`release`; without the callback the
    lease is released at once); ``on_scan(leases)`` after each scan.
    """

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
        on_hand_off: KeyCallback | None = None,
        on_scan: ScanCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        scan_interval_s: float | None = None,
    ) -> None:
        self._store = store
        self.worker_id = worker_id
        self._failover_s = failover_s
        self._max_leases = max_leases_for_worker
        self._max_steal = max_leases_to_steal
        self._executor = executor
        self._on_taken = on_taken
        self._on_lost = on_lost
        self._on_hand_off = on_hand_off
        self._on_scan = on_scan
        self._clock = clock
        self._rng = rng
        # TODO(leaseScanIntervalMillis): a key to trade failover speed for Scan
        # cost on very large lease tables; F/4 keeps failover within 1.25 F.
        self._scan_interval_s = scan_interval_s if scan_interval_s is not None else failover_s / 4
        self._held: dict[str, _Held] = {}
        self._handing_off: set[str] = set()
        self._released_until: dict[str, float] = {}
        self._expiry = ExpiryTracker(failover_s, clock=clock)
        self._steal_gate = StealGate(failover_s)
        self._log = get_logger(worker_id=worker_id)
        self._next_scan = clock()
        self._next_renewal = clock() + self.renew_interval_s
        self.draining = False
        self.last_scan: list[Lease] = []
        self.last_decision: TakeDecision | None = None
        self.counts = {
            "taken": 0,
            "lost": 0,
            "stolen": 0,
            "released": 0,
            "renewed": 0,
            "handed_off": 0,
            "scans": 0,
        }

    @property
    def renew_interval_s(self) -> float:
        return self._failover_s / 3

    @property
    def scan_interval_s(self) -> float:
        return self._scan_interval_s

    @property
    def next_scan_at(self) -> float:
        """Monotonic time of the next scan (for tests and status)."""
        return self._next_scan

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args))

    # -- queries -------------------------------------------------------------

    def held_keys(self) -> list[str]:
        return sorted(self._held)

    def handing_off_keys(self) -> list[str]:
        return sorted(self._handing_off)

    def lease(self, key: str) -> Lease | None:
        held = self._held.get(key)
        return held.lease if held else None

    def holds(self, key: str) -> bool:
        held = self._held.get(key)
        return held is not None and not self._expired_locally(held, self._clock())

    def _expired_locally(self, held: _Held, now: float) -> bool:
        return now - held.written_at >= self._failover_s

    async def get_lease(self, key: str) -> Lease | None:
        """A fresh read from the table (for parent checks)."""
        return await self._call(self._store.get_lease, key)

    # -- writes through the held lease ---------------------------------------

    async def _write(
        self,
        key: str,
        op: Callable[[Lease], Lease],
        *,
        unless_written_since: float | None = None,
        renews: bool = True,
    ) -> Lease:
        held = self._held.get(key)
        if held is None:
            raise LeaseLostError(f"lease {key} is not held by {self.worker_id}")
        async with held.lock:
            if self._held.get(key) is not held:
                raise LeaseLostError(f"lease {key} was lost")
            sent = self._clock()
            if self._expired_locally(held, sent):
                await self._drop(key, "not renewed within the failover time")
                raise LeaseLostError(f"lease {key} expired locally")
            if unless_written_since is not None and held.written_at >= unless_written_since:
                return held.lease  # a checkpoint renewed it while we waited for the lock
            # A hanging table must not hold the lease past its local expiry: the
            # call is abandoned then (its thread finishes on its own) and the
            # lease dropped, so the consumer hears leaseLost in time.
            time_left = held.written_at + self._failover_s - sent
            try:
                updated = await asyncio.wait_for(self._call(op, held.lease), timeout=time_left)
            except LeaseLostError:
                await self._drop(key, "conditional write failed")
                raise
            except asyncio.TimeoutError:
                await self._drop(key, "not renewed within the failover time")
                raise LeaseLostError(f"lease {key} expired locally during the write") from None
            if self._held.get(key) is not held:
                # Dropped by the expiry timer while the write was in flight: the
                # consumer was told already. The next scan reclaims the lease
                # if the table still names us.
                raise LeaseLostError(f"lease {key} expired locally during the write")
            held.lease = updated
            if renews:
                held.written_at = sent
            return updated

    async def checkpoint(
        self, key: str, position: ExtendedSequenceNumber, *, clear_pending: bool = True
    ) -> Lease:
        del clear_pending  # a commit always clears the prepared checkpoint
        updated = await self._write(
            key, lambda lease: self._store.checkpoint(lease, position, self.worker_id)
        )
        # One line per checkpoint (debug): the counter orders them across workers,
        # which is how tests prove that no checkpoint ever moves backwards.
        self._log.debug(
            "checkpoint written",
            shard_id=key,
            sequence_number=position.sequence_number,
            sub_sequence_number=position.sub_sequence_number,
            lease_counter=updated.lease_counter,
        )
        return updated

    async def prepare_checkpoint(self, key: str, position: ExtendedSequenceNumber) -> Lease:
        return await self._write(
            key, lambda lease: self._store.prepare_checkpoint(lease, position, self.worker_id)
        )

    async def set_child_shard_ids(self, key: str, child_ids: list[str]) -> Lease:
        # Leaves the counter alone (see the store), so it is no renewal.
        return await self._write(
            key, lambda lease: self._store.set_child_shard_ids(lease, child_ids), renews=False
        )

    async def release(self, key: str) -> None:
        """Give the lease up (evict) so a peer takes it at its next scan; not retaken for 2F."""
        held = self._held.get(key)
        if held is None:
            return
        handed_off = key in self._handing_off
        async with held.lock:
            if self._held.get(key) is not held:
                return
            self._held.pop(key, None)
            self._handing_off.discard(key)
            self._released_until[key] = self._clock() + 2 * self._failover_s
            try:
                await self._call(self._store.evict, held.lease, self.worker_id)
                self.counts["released"] += 1
                self._log.info("lease released", shard_id=key, handed_off=handed_off)
            except (LeaseLostError, DependencyError) as error:
                # Either a peer already has it or it will expire: both are fine.
                self._log.warning("lease release failed", shard_id=key, error=str(error))

    async def forget(self, key: str) -> None:
        """Stop renewing a lease without a write (a finished shard)."""
        self._held.pop(key, None)
        self._handing_off.discard(key)

    async def _drop(self, key: str, why: str) -> None:
        if self._held.pop(key, None) is None:
            return
        self._handing_off.discard(key)
        self.counts["lost"] += 1
        self._log.warning("lease lost", shard_id=key, reason=why)
        await _maybe_await(self._on_lost(key, why))

    def stop_taking(self) -> None:
        """Shutting down: keep renewing what is held, take and hand off nothing more."""
        self.draining = True

    # -- renewal -----------------------------------------------------------------

    async def expire_step(self) -> float:
        """Drop every lease expired locally; the moment the next one would expire.

        Runs in its own loop, so a renewal stuck on a slow table never delays it.
        """
        now = self._clock()
        for key, held in list(self._held.items()):
            if self._expired_locally(held, now):
                await self._drop(key, "not renewed within the failover time")
        expiries = [held.written_at + self._failover_s for held in self._held.values()]
        # A lease taken meanwhile expires a whole failover time later: waking
        # at least every renewal interval catches it in good time.
        return min([now + self.renew_interval_s, *expiries])

    async def renew_step(self) -> float:
        """Renew if a round is due; the time of the next round."""
        if self._clock() >= self._next_renewal:
            await self.renew_all()
            self._next_renewal = self._clock() + self.renew_interval_s
        return self._next_renewal

    async def renew_all(self) -> None:
        """Renew, concurrently, every held lease not written for half a renewal interval."""
        fresh_since = self._clock() - self.renew_interval_s / 2
        due = [key for key, held in self._held.items() if held.written_at < fresh_since]
        await asyncio.gather(*(self._renew(key, fresh_since) for key in due))

    async def _renew(self, key: str, fresh_since: float) -> None:
        try:
            await self._write(key, self._store.renew, unless_written_since=fresh_since)
            self.counts["renewed"] += 1
        except LeaseLostError:
            pass  # _write dropped it and told the consumer
        except DependencyError as error:
            self._log.warning("lease renewal failed", shard_id=key, error=str(error))

    # -- scanning, taking, handing off ---------------------------------------------

    async def scan_step(self) -> float:
        """One scan (unless draining); the monotonic time of the next one."""
        if self.draining:
            self._next_scan = self._clock() + self._scan_interval_s
            return self._next_scan
        try:
            await self.scan_and_take()
        except DependencyError as error:
            self._log.warning("lease scan failed", error=str(error))
            self._next_scan = self._clock() + self._scan_interval_s
        return self._next_scan

    async def scan_and_take(self) -> None:
        leases = await self._call(self._store.list_leases)
        now = self._clock()
        self.counts["scans"] += 1
        self.last_scan = leases
        self._expiry.observe(leases, now)
        # A released lease a peer has taken needs no more shielding from us.
        taken_by_peers = {
            lease.lease_key
            for lease in leases
            if lease.lease_owner is not None and lease.lease_owner != self.worker_id
        }
        self._released_until = {
            key: until
            for key, until in self._released_until.items()
            if until > now and key not in taken_by_peers
        }
        blocked = set(self._released_until) | self._handing_off
        # Leases still naming us (a restart with the same workerId) come back
        # at once: waiting out the failover time for our own leases helps nobody.
        for lease in leases_to_reclaim(leases, self.worker_id, self._held.keys()):
            if lease.lease_key not in blocked:
                await self._take(lease, stolen=False)
        # Leases being handed off are as good as released: they must not make
        # this worker look busier than it is, nor be handed off twice.
        view = [
            replace(lease, lease_owner=None) if lease.lease_key in self._handing_off else lease
            for lease in leases
        ]
        expired = self._expiry.expired_keys(view, now)
        decision = choose_leases_to_take(
            view,
            self.worker_id,
            expired,
            self._max_leases,
            self._max_steal,
            very_old_keys=self._expiry.very_old_keys(view, now),
            rng=self._rng,
        )
        self.last_decision = decision
        wanted = [lease for lease in decision.take if lease.lease_key not in blocked]
        spare = [lease for lease in decision.spare if lease.lease_key not in blocked]
        while wanted:
            if not await self._take(wanted.pop(0), stolen=False) and spare:
                wanted.append(spare.pop(0))  # a peer was quicker: try the next one
        holding = len(self._held) - len(self._handing_off)
        if self._steal_gate.allow(bool(decision.steal), holding, now):
            for lease in decision.steal:
                if lease.lease_key not in blocked:
                    await self._take(lease, stolen=True)
        if not self.draining:
            for lease in leases_to_hand_off(view, self.worker_id, expired):
                await self._hand_off(lease.lease_key)
        self._next_scan = self._plan_next_scan(leases, now)
        if self._on_scan is not None:
            self._on_scan(leases)

    def _plan_next_scan(self, leases: list[Lease], now: float) -> float:
        regular = now + self._scan_interval_s
        expiry = self._expiry.next_expiry(leases, self.worker_id, now)
        # A regular scan landing a hair before the moment finds the lease not
        # yet expired; next_expiry still returns that moment, so the scan after
        # it is aimed there instead of a whole interval later.
        if expiry is not None and expiry + _EXPIRY_MARGIN_S < regular:
            return expiry + _EXPIRY_MARGIN_S
        return regular

    async def _take(self, lease: Lease, *, stolen: bool) -> bool:
        """Take (or steal) ``lease``; False when a peer was quicker or the table failed."""
        key = lease.lease_key
        if key in self._held:
            return True
        sent = self._clock()
        try:
            taken = await self._call(self._store.take, lease, self.worker_id)
        except LeaseLostError:
            return False
        except DependencyError as error:
            self._log.warning("lease take failed", shard_id=key, error=str(error))
            return False
        self._held[key] = _Held(taken, sent)
        self._released_until.pop(key, None)
        self._steal_gate.got_lease(self._clock())
        self.counts["stolen" if stolen else "taken"] += 1
        self._log.info(
            "lease taken",
            shard_id=key,
            previous_owner=lease.lease_owner,
            stolen=stolen,
            checkpoint=str(taken.checkpoint) if taken.checkpoint else None,
        )
        await _maybe_await(self._on_taken(taken))
        return True

    async def _hand_off(self, key: str) -> None:
        if key not in self._held or key in self._handing_off:
            return
        self._handing_off.add(key)
        self.counts["handed_off"] += 1
        self._log.info("handing lease off for balance", shard_id=key)
        if self._on_hand_off is None:
            await self.release(key)
        else:
            await _maybe_await(self._on_hand_off(key))

    # -- the periodic work -----------------------------------------------------

    async def tick(self) -> float:
        """Run whatever is due now (a scan, a renewal round, a local expiry); the next due time.

        For tests driving a fake clock; :meth:`run` runs expiry, renewals and
        scans in three loops so that a slow call in one never delays another.
        """
        if self._clock() >= self._next_scan:
            await self.scan_step()
        await self.expire_step()
        renewal = await self.renew_step()
        return min(await self.expire_step(), renewal, self._next_scan)

    async def run(self, stop: asyncio.Event) -> None:
        """Expire, renew and scan until ``stop`` is set. Errors are logged, never escape."""
        await asyncio.gather(
            self._loop(stop, self.expire_step, "expiry"),
            self._loop(stop, self.renew_step, "renewal"),
            self._loop(stop, self.scan_step, "scan"),
        )

    async def _loop(
        self, stop: asyncio.Event, step: Callable[[], Awaitable[float]], name: str
    ) -> None:
        while not stop.is_set():
            try:
                wake = await step()
            except KclDaemonError as error:
                self._log.warning(f"lease {name} failed", error=str(error))
                wake = self._clock() + self._scan_interval_s
            except Exception:
                # A bug here must not stop renewals for good: log it, go on.
                self._log.exception(f"lease {name} failed unexpectedly")
                wake = self._clock() + self._scan_interval_s
            wait = max(0.0, wake - self._clock())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
