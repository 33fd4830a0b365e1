"""When to restart a shard's child processor after it ends, and when to give up.

Pure logic, like supervisor's BACKOFF/FATAL states: a child must stay up
``min_uptime_s`` to count as healthy; short-lived runs in a row are a crash
loop, restarted after a growing delay (the daemon's one schedule,
:class:`daemon.backoff.Backoff`: exponential, equal jitter, capped); more than
``budget`` of them in a row and the policy gives up (the caller then releases
the shard's lease; the daemon itself never stops for a child).

Schedule with the defaults (initial 0.5 s, cap 30 s, equal jitter: a delay is
uniform in [ceiling/2, ceiling])::

    restart since the last healthy run    ceiling      delay
    after a healthy run                   -            0 - 0.05 s
    1st short-lived run                   0.5 s        0.25 - 0.5 s
    2nd                                   1 s          0.5 - 1 s
    n-th                                  0.5 * 2**(n-1), at most 30 s
    7th and later                         30 s         15 - 30 s
    short-lived run number budget + 1     give up

So a child that crashes after running a while (kill -9, OOM) is replaced at
once -- its shard has stalled, and nothing suggests the next child will fail
too -- while one that dies at start-up backs off to the cap within seven
attempts. The up to 50 ms after a healthy run (a tenth of the first delay)
only spreads out the restarts of many children that crash together, as
equal jitter does for the later delays, which also keeps a floor under each
of them (full jitter may draw 0 s).

No clock is held: the caller passes the run's uptime (``ChildProcess.uptime``),
so the only thing to fake in tests is the random source.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from daemon.backoff import Backoff, Jitter, RandomSource

#: After a healthy run the restart waits at most this fraction of the first back-off.
HEALTHY_RESTART_SPREAD = 0.1


@dataclass(frozen=True)
class RestartDecision:
    """``give_up`` False: restart after ``delay_s``. True: stop restarting this shard."""

    give_up: bool
    delay_s: float
    consecutive_failures: int
    reason: str


class RestartPolicy:
    """Crash-loop policy for one shard's child; one per lease held."""

    def __init__(
        self,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        min_uptime_s: float = 10.0,
        budget: int = 10,
        *,
        jitter: Jitter = "equal",
        rng: RandomSource | None = None,
    ) -> None:
        if min_uptime_s < 0:
            raise ValueError(f"min_uptime_s must not be negative, got {min_uptime_s}")
        if budget < 0:
            raise ValueError(f"budget must not be negative, got {budget}")
        self.min_uptime_s = min_uptime_s
        self.budget = budget
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self._backoff = Backoff(initial_backoff_s, max_backoff_s, rng=self._rng, jitter=jitter)
        self._failures = 0

    @property
    def consecutive_failures(self) -> int:
        """Short-lived runs in a row so far."""
        return self._failures

    @property
    def exhausted(self) -> bool:
        """The budget is spent: every later exit gives up too, until :meth:`reset`."""
        return self._failures > self.budget

    def reset(self) -> None:
        """Forget past failures and delays (e.g. a fresh lease on the shard)."""
        self._failures = 0
        self._backoff.reset()

    def record_exit(self, uptime_s: float) -> RestartDecision:
        """Record that a child ended after ``uptime_s`` seconds; decide what comes next."""
        if uptime_s >= self.min_uptime_s and not self.exhausted:
            self._failures = 0
            self._backoff.reset()
            return RestartDecision(
                give_up=False,
                delay_s=self._rng.random() * self._backoff.initial_s * HEALTHY_RESTART_SPREAD,
                consecutive_failures=0,
                reason=f"ran {uptime_s:.1f}s, healthy (>= {self.min_uptime_s:g}s)",
            )
        self._failures += 1
        reason = f"ran {uptime_s:.1f}s (< {self.min_uptime_s:g}s), {self._failures} in a row"
        if self.exhausted:
            return RestartDecision(
                give_up=True,
                delay_s=0.0,
                consecutive_failures=self._failures,
                reason=f"{reason}: more than {self.budget} short-lived runs in a row",
            )
        return RestartDecision(
            give_up=False,
            delay_s=self._backoff.next_delay(),
            consecutive_failures=self._failures,
            reason=reason,
        )
