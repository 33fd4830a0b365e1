"""How the running daemon is doing: the health summary, its periodic log line, and readiness.

Owns three things, all read from the daemon by polling (nothing in the
scheduler, consumers or coordinator calls in here):

* ``DaemonView`` and friends: the read-only shape of a running daemon that the
  operations modules sample (``Scheduler`` fits it as it is: ``consumers``,
  ``coordinator``, ``store``).
* ``HealthTracker``: turns the consumers' cumulative stats into a summary for
  the time since its previous call (records/s, child restarts) plus the
  current state (leases held, the largest lag). Each user keeps its own
  tracker, so the minute-long log line and the systemd STATUS= line, which
  sample at different rates, do not steal each other's baselines.
* ``Readiness``: when the daemon counts as started (READY=1 for systemd).

Consumers come and go (a lease is lost, a shard ends): a tracker keeps the
consumer objects it saw last time, so the records a consumer processed
between the previous sample and its end still count once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from daemon.consumer import ConsumerStats
from daemon.consumer_states import ConsumerState
from daemon.leases.model import Lease
from daemon.leases.store import CallStats
from daemon.logs import get_logger

DEFAULT_INTERVAL_S = 60.0


class ConsumerView(Protocol):
    """What the operations modules read from (and do to) one shard consumer."""

    @property
    def shard_id(self) -> str: ...
    @property
    def stats(self) -> ConsumerStats: ...
    @property
    def state(self) -> ConsumerState: ...
    @property
    def child_pid(self) -> int | None: ...
    def kill_child(self) -> None: ...


class CoordinatorView(Protocol):
    @property
    def counts(self) -> Mapping[str, int]: ...
    @property
    def last_scan(self) -> Sequence[Lease]: ...
    def held_keys(self) -> list[str]: ...


class StoreView(Protocol):
    def call_stats(self) -> Mapping[str, CallStats]: ...


class DaemonView(Protocol):
    """A running daemon as the operations modules see it (``Scheduler`` is one)."""

    @property
    def consumers(self) -> Mapping[str, ConsumerView]: ...
    @property
    def coordinator(self) -> CoordinatorView: ...
    @property
    def store(self) -> StoreView: ...


# -- the summary ---------------------------------------------------------------


@dataclass(frozen=True)
class HealthSummary:
    """The daemon over one interval (rates, restarts) and at its end (leases, lag)."""

    leases_held: int
    consumers: int
    processing: int
    records: int
    interval_s: float
    max_lag_ms: int | None
    max_lag_shard: str | None
    child_restarts: int

    @property
    def records_per_s(self) -> float:
        return self.records / self.interval_s if self.interval_s > 0 else 0.0

    def log_fields(self) -> dict[str, Any]:
        return {
            "leases_held": self.leases_held,
            "consumers": self.consumers,
            "processing": self.processing,
            "records_per_s": round(self.records_per_s, 1),
            "max_lag_ms": self.max_lag_ms,
            "max_lag_shard": self.max_lag_shard,
            "child_restarts": self.child_restarts,
            "interval_s": round(self.interval_s, 1),
        }

    def status_text(self) -> str:
        """One short line for systemd's STATUS= (shown by ``systemctl status``)."""
        lag = "lag unknown" if self.max_lag_ms is None else f"max lag {_seconds(self.max_lag_ms)}"
        text = f"{self.leases_held} leases, {self.records_per_s:.1f} records/s, {lag}"
        if self.child_restarts:
            text += f", {self.child_restarts} child restarts"
        return text


def _seconds(millis: int) -> str:
    return f"{millis / 1000:.1f} s"


@dataclass(frozen=True)
class ConsumerTotals:
    """The cumulative counters of one consumer object that a summary takes deltas of."""

    records: int
    restarts: int

    @classmethod
    def of(cls, stats: ConsumerStats) -> ConsumerTotals:
        return cls(stats.records, stats.restarts)


def summarize(
    before: Mapping[int, ConsumerTotals],
    after: Mapping[int, ConsumerTotals],
    *,
    leases_held: int,
    lags: Mapping[str, int | None],
    states: Iterable[ConsumerState],
    interval_s: float,
) -> HealthSummary:
    """The summary of an interval, from per-consumer totals at its start and end.

    Keys are consumer identities: one present only in ``after`` started during
    the interval and counts from zero; one present only in ``before`` is
    ignored (its final totals must be in ``after``, see ``HealthTracker``).
    """
    records = restarts = 0
    for key, now in after.items():
        then = before.get(key, ConsumerTotals(0, 0))
        records += max(0, now.records - then.records)
        restarts += max(0, now.restarts - then.restarts)
    known = {shard: lag for shard, lag in lags.items() if lag is not None}
    worst = max(known, key=lambda shard: (known[shard], shard), default=None)
    state_list = list(states)
    return HealthSummary(
        leases_held=leases_held,
        consumers=len(state_list),
        processing=sum(1 for state in state_list if state is ConsumerState.PROCESSING),
        records=records,
        interval_s=interval_s,
        max_lag_ms=known[worst] if worst is not None else None,
        max_lag_shard=worst,
        child_restarts=restarts,
    )


class HealthTracker:
    """Summaries of a running daemon, each covering the time since the previous one."""

    def __init__(self, view: DaemonView, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._view = view
        self._clock = clock
        self._since = clock()
        # Consumer objects seen at the previous summary, with their totals then.
        self._seen: dict[int, tuple[ConsumerView, ConsumerTotals]] = {}

    def summary(self) -> HealthSummary:
        now = self._clock()
        current = list(self._view.consumers.values())
        before = {key: totals for key, (_, totals) in self._seen.items()}
        # A consumer that ended since the last summary still has its stats
        # object: count its last records, then let it go.
        after = {
            key: ConsumerTotals.of(consumer.stats) for key, (consumer, _) in self._seen.items()
        }
        after.update({id(consumer): ConsumerTotals.of(consumer.stats) for consumer in current})
        result = summarize(
            before,
            after,
            leases_held=len(self._view.coordinator.held_keys()),
            lags={consumer.shard_id: consumer.stats.millis_behind_latest for consumer in current},
            states=[consumer.state for consumer in current],
            interval_s=now - self._since,
        )
        self._seen = {id(consumer): (consumer, after[id(consumer)]) for consumer in current}
        self._since = now
        return result

    def status_text(self) -> str:
        return self.summary().status_text()


class HealthLogger:
    """Logs one ``health`` line every ``interval_s`` (0 or less: never)."""

    def __init__(
        self,
        view: DaemonView,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        log: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._tracker = HealthTracker(view, clock=clock)
        self._log = log or get_logger()
        self.last: HealthSummary | None = None

    def log_once(self) -> HealthSummary:
        summary = self._tracker.summary()
        self.last = summary
        self._log.info("health", **summary.log_fields())
        return summary

    async def run(self, stop: asyncio.Event) -> None:
        if self.interval_s <= 0:
            return
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            if not stop.is_set():
                self.log_once()


# -- readiness ------------------------------------------------------------------

# States in which a consumer is doing what it should: its child is up and
# reading, or it is rightly waiting for a parent shard to finish first.
_SETTLED = frozenset(
    (ConsumerState.PROCESSING, ConsumerState.SHARD_ENDING, ConsumerState.WAITING_ON_PARENTS)
)


class Readiness:
    """Decides when the daemon has started: its first leases are being processed.

    Started means one of:

    * a consumer is PROCESSING (or already at its shard's end);
    * the first lease scan is done and, for ``quiet_s`` without a break, every
      consumer has settled (or there is none: a worker with nothing to take
      because its peers hold every lease) -- the quiet period covers the gap
      between a scan and the takes that follow it;
    * ``max_wait_s`` has passed since the first observation, whatever the
      state: children that keep failing to start must not keep a service
      manager waiting (they are restarted, and logged, on their own).
    """

    def __init__(self, *, quiet_s: float = 2.0, max_wait_s: float = 60.0) -> None:
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self._first: float | None = None
        self._settled_since: float | None = None

    def observe(self, now: float, *, scanned: bool, states: Iterable[ConsumerState]) -> bool:
        if self._first is None:
            self._first = now
        state_list = list(states)
        if any(s in (ConsumerState.PROCESSING, ConsumerState.SHARD_ENDING) for s in state_list):
            return True
        if now - self._first >= self.max_wait_s:
            return True
        if scanned and all(state in _SETTLED for state in state_list):
            if self._settled_since is None:
                self._settled_since = now
            return now - self._settled_since >= self.quiet_s
        self._settled_since = None
        return False

    def observe_daemon(self, view: DaemonView, now: float) -> bool:
        return self.observe(
            now,
            # The shard sync before the coordinator starts creates a lease per
            # shard, so an empty scan result means no scan has finished yet
            # (coordinators that count their scans say so directly).
            scanned=bool(view.coordinator.last_scan) or view.coordinator.counts.get("scans", 0) > 0,
            states=[consumer.state for consumer in view.consumers.values()],
        )


def started_check(
    view: DaemonView,
    *,
    quiet_s: float = 2.0,
    max_wait_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> Callable[[], bool]:
    """A no-argument predicate "has the daemon started?" for ``systemd.notify_ready_when``."""
    readiness = Readiness(quiet_s=quiet_s, max_wait_s=max_wait_s)
    return lambda: readiness.observe_daemon(view, clock())
