"""Exponential back-off with jitter, capped: the one retry schedule of the daemon.

Retrieval (throttling, transient Kinesis errors), the lease coordinator and
child restarts all wait with a :class:`Backoff`. It is pure: it computes
delays and never sleeps, and its randomness comes from an injectable source,
so tests check a schedule exactly.

The n-th delay (n = 0, 1, ...) has the ceiling ``min(max_s, initial_s *
multiplier**n)``. Two jitter styles:

* ``"equal"`` (the default): uniform in ``[ceiling/2, ceiling]``. Delays still
  spread out (no thundering herd after an outage), but they really grow: a
  crash-looping child or a throttled shard never gets a near-zero wait, which
  full jitter would hand out now and then.
* ``"full"``: uniform in ``[0, ceiling]`` (the AWS Architecture Blog's "full
  jitter"); least total work for many clients contending for one resource.
"""

from __future__ import annotations

import random
from typing import Literal, Protocol

Jitter = Literal["equal", "full"]


class RandomSource(Protocol):
    """What Backoff needs of ``random.Random``: floats uniform in [0, 1)."""

    def random(self) -> float: ...


class Backoff:
    """Delays that grow by ``multiplier`` from ``initial_s`` up to ``max_s``."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        multiplier: float = 2.0,
        rng: RandomSource | None = None,
        jitter: Jitter = "equal",
    ) -> None:
        if initial_s < 0 or max_s < initial_s:
            raise ValueError(f"need 0 <= initial_s <= max_s, got {initial_s} and {max_s}")
        if multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {multiplier}")
        if jitter not in ("equal", "full"):
            raise ValueError(f"jitter must be 'equal' or 'full', got {jitter!r}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self.jitter: Jitter = jitter
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset (consecutive failures)."""
        return self._attempts

    def ceiling(self, attempt: int) -> float:
        """The largest delay the ``attempt``-th wait (from 0) can get."""
        # Multiply step by step and stop at the cap: multiplier**attempt would
        # overflow a float long before a retry loop gives up.
        ceiling = self.initial_s
        if ceiling == 0 or self.multiplier == 1:
            return ceiling
        for _ in range(attempt):
            ceiling *= self.multiplier
            if ceiling >= self.max_s:
                return self.max_s
        return min(ceiling, self.max_s)

    def next_delay(self) -> float:
        """The next wait in seconds; each call counts as one more failure."""
        ceiling = self.ceiling(self._attempts)
        self._attempts += 1
        draw = self._rng.random()
        if self.jitter == "full":
            return ceiling * draw
        return ceiling / 2 + (ceiling / 2) * draw

    def reset(self) -> None:
        """Start over from ``initial_s`` (after a success)."""
        self._attempts = 0
