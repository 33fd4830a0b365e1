"""Applies one batch of records to the results tables exactly once, however often it is replayed.

Owns the order of the writes of one batch and the retry-after-refusal loop:

1. drop the records at or below the shard's applied-through position (known from the
   progress item, read at initialize, and from our own writes);
2. claim every tweet id (one conditional put per distinct id, in parallel): a record whose id
   is held by another record is a duplicate;
3. for each (minute, shard) item of the counts and late tables the batch touches, one
   conditional add (see ``ResultsStore.add_after``); if it is refused, the item is already
   applied past the batch's first record: read how far, keep only the records after that, and
   add again;
4. the same for the shard's progress item, last, so that "progress applied through P" implies
   every other write of the records up to P is done.

A crash between any two writes leaves items that are each either applied through a record or
not; a replay (any batching, any worker) redoes only what is missing. The store is anything
with ``claim``, ``add_after`` and ``applied_through`` (``results.ResultsStore``, or an
in-memory one in the unit tests).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

from daemon.errors import DependencyError
from processors.tweets.counting import (
    Contribution,
    Fact,
    Pending,
    Target,
    claimant_of,
    contributions,
    outcome_of,
    pending,
)
from processors.tweets.events import Tweet, decode_tweet

__all__ = ["BatchApplier", "BatchResult", "InRecord", "Store"]

# Known applied-through positions kept per item; a cache only (a stale or missing entry costs a
# refused write and a read, never a wrong count), so it is simply cleared when full.
_KNOWN_LIMIT = 4096


class Store(Protocol):
    def claim(self, tweet_id: str, claimant: str, expires_s: int) -> str: ...

    def add_after(
        self, target: Target, todo: Pending, also_set: dict[str, int] | None = None
    ) -> bool: ...

    def applied_through(self, target: Target) -> str | None: ...


@dataclass(frozen=True)
class InRecord:
    """A record as delivered: its position (``counting.position_of``), data and arrival time."""

    position: str
    data: bytes
    arrival_ms: int


@dataclass
class BatchResult:
    """What one call to ``apply`` did."""

    delivered: int = 0
    already_applied: int = 0  # dropped at step 1
    outcomes: Counter[str] = field(default_factory=Counter)
    refused_writes: int = 0  # step 3/4 refusals: the batch overlapped work already done
    last_position: str | None = None


class BatchApplier:
    """Applies batches of one shard. ``stage_hook(stage)`` runs after "claims", "counts" and
    "progress" (the fault-injection seam of the tests)."""

    def __init__(
        self,
        store: Store,
        shard_id: str,
        allowed_lateness_ms: int,
        dedupe_window_s: int = 7 * 24 * 3600,
        pool: Executor | None = None,
        stage_hook: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.shard_id = shard_id
        self.allowed_lateness_ms = allowed_lateness_ms
        self.dedupe_window_s = dedupe_window_s
        self.pool = pool
        self.stage_hook = stage_hook or (lambda _stage: None)
        self.clock = clock
        #: The shard's applied-through position as last known (a lower bound of the truth).
        self.applied_through: str | None = None
        self._known: dict[Target, str] = {}

    def apply(self, records: Sequence[InRecord]) -> BatchResult:
        result = BatchResult(delivered=len(records))
        known = self.applied_through
        fresh = [r for r in records if known is None or r.position > known]
        result.already_applied = len(records) - len(fresh)
        if not fresh:
            return result
        tweets = [decode_tweet(record.data) for record in fresh]
        holders = self._claim_all(fresh, tweets)
        self.stage_hook("claims")
        facts = [
            Fact(record.position, tweet, record.arrival_ms, holders.get(record.position))
            for record, tweet in zip(fresh, tweets, strict=True)
        ]
        for fact in facts:
            claimant = claimant_of(self.shard_id, fact.position)
            result.outcomes[outcome_of(fact, claimant, self.allowed_lateness_ms).value] += 1
        plan = contributions(self.shard_id, facts, self.allowed_lateness_ms)
        progress = Target("progress", self.shard_id)
        for target in sorted(t for t in plan if t != progress):
            result.refused_writes += self._apply_target(target, plan[target])
        self.stage_hook("counts")
        stamp = {"updatedMs": int(self.clock() * 1000)}
        result.refused_writes += self._apply_target(progress, plan[progress], stamp)
        self.stage_hook("progress")
        last = max(record.position for record in fresh)
        self.applied_through = last
        result.last_position = last
        return result

    def _claim_all(
        self, records: Sequence[InRecord], tweets: Sequence[Tweet | None]
    ) -> dict[str, str]:
        """position -> holder of its tweet id's claim, for every record that holds a tweet."""
        first_claimant: dict[str, str] = {}
        for record, tweet in zip(records, tweets, strict=True):
            if tweet is not None and tweet.tweet_id not in first_claimant:
                first_claimant[tweet.tweet_id] = claimant_of(self.shard_id, record.position)
        expires = int(self.clock()) + self.dedupe_window_s
        ids = list(first_claimant)

        def claim(tweet_id: str) -> str:
            return self.store.claim(tweet_id, first_claimant[tweet_id], expires)

        if self.pool is not None and len(ids) > 1:
            holder_list = list(self.pool.map(claim, ids))
        else:
            holder_list = [claim(tweet_id) for tweet_id in ids]
        holder_of = dict(zip(ids, holder_list, strict=True))
        return {
            record.position: holder_of[tweet.tweet_id]
            for record, tweet in zip(records, tweets, strict=True)
            if tweet is not None
        }

    def _apply_target(
        self, target: Target, items: list[Contribution], also_set: dict[str, int] | None = None
    ) -> int:
        """Add what is not yet applied to one item; returns how many adds were refused."""
        refused = 0
        through = self._known.get(target)
        while True:
            todo = pending(items, through)
            if todo is None:
                return refused
            if self.store.add_after(target, todo, also_set):
                self._remember(target, todo.last)
                return refused
            refused += 1
            through = self.store.applied_through(target)
            if through is None:
                # Refused means the item was applied through at least todo.first; an item that
                # then reads as missing was deleted under us (a table reset while running).
                raise DependencyError(f"{target} refused an update but reads as missing")
            self._remember(target, through)

    def _remember(self, target: Target, through: str) -> None:
        if len(self._known) >= _KNOWN_LIMIT:
            self._known.clear()
        self._known[target] = through
