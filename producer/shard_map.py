"""Which open shard a hash key goes to, and when to ask Kinesis again.

Owns :class:`ShardMap` (the open shards of one stream, sorted by ending hash key, looked up by
binary search), :class:`RefreshSchedule` (pure: whether a refresh is due, with exponential
back-off after failures and a minimum spacing between successes, so a burst of "wrong shard"
answers costs one ListShards) and :func:`fetch_shard_map` (the ListShards I/O).

A shard's hash-key range never changes in Kinesis (resharding creates new shards), so a map that
names the shard a record landed on also knows the exact range that shard serves.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["RefreshSchedule", "Shard", "ShardMap", "fetch_shard_map"]


@dataclass(frozen=True, slots=True)
class Shard:
    shard_id: str
    starting_hash_key: int
    ending_hash_key: int

    def contains(self, hash_key: int) -> bool:
        return self.starting_hash_key <= hash_key <= self.ending_hash_key


class ShardMap:
    """The open shards of a stream. Lookup is O(log n); the object is immutable."""

    __slots__ = ("_by_id", "_ends", "_ids", "_shards", "_starts", "version")

    def __init__(self, shards: Iterable[Shard], version: int = 0):
        ordered = sorted(shards, key=lambda shard: shard.ending_hash_key)
        self._shards = tuple(ordered)
        self._ends = [shard.ending_hash_key for shard in ordered]
        self._starts = [shard.starting_hash_key for shard in ordered]
        self._ids = [shard.shard_id for shard in ordered]
        self._by_id = {shard.shard_id: shard for shard in ordered}
        self.version = version

    @property
    def shards(self) -> tuple[Shard, ...]:
        return self._shards

    def __len__(self) -> int:
        return len(self._shards)

    def shard_for(self, hash_key: int) -> str | None:
        """The id of the open shard whose range holds ``hash_key``; None if no shard does
        (a gap while the map is mid-reshard)."""
        index = bisect.bisect_left(self._ends, hash_key)
        if index == len(self._ends):
            return None
        shard = self._shards[index]
        return shard.shard_id if shard.starting_hash_key <= hash_key else None

    def lookup_tables(self) -> tuple[list[int], list[int], list[str]]:
        """(ending keys, starting keys, shard ids), sorted by ending key, for callers that
        inline :meth:`shard_for` on a hot path (``bisect_left`` on the ending keys, then check
        the starting key)."""
        return self._ends, self._starts, self._ids

    def get(self, shard_id: str) -> Shard | None:
        return self._by_id.get(shard_id)


@dataclass
class RefreshSchedule:
    """When one stream's shard map may be fetched again (times in seconds, monotonic).

    ``min_interval``: least time between two fetches when they succeed; failures back off
    exponentially from ``backoff_min`` up to ``backoff_max``.
    """

    min_interval: float = 1.0
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    wanted: bool = True
    in_progress: bool = False
    not_before: float = 0.0
    failures: int = 0

    def request(self) -> None:
        """Something (a wrong-shard answer, an error) says the map may be stale."""
        self.wanted = True

    def due(self, now: float) -> bool:
        return self.wanted and not self.in_progress and now >= self.not_before

    def start(self) -> None:
        self.wanted = False
        self.in_progress = True

    def succeeded(self, now: float) -> None:
        self.in_progress = False
        self.failures = 0
        self.not_before = now + self.min_interval

    def failed(self, now: float) -> float:
        """Records a failed fetch; returns the back-off before the next one."""
        self.in_progress = False
        self.wanted = True
        delay = min(self.backoff_max, self.backoff_min * (2**self.failures))
        self.failures += 1
        self.not_before = now + delay
        return delay


def fetch_shard_map(client: Any, stream: str, version: int = 0) -> ShardMap:
    """The open shards of ``stream`` via ListShards (all pages). Raises what boto3 raises."""
    shards: list[Shard] = []
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        response = client.list_shards(**kwargs)
        shards.extend(_open_shards(response.get("Shards", ())))
        token = response.get("NextToken")
        if not token:
            break
        kwargs = {"NextToken": token}
    return ShardMap(shards, version)


def _open_shards(raw: Iterable[dict[str, Any]]) -> Iterable[Shard]:
    for shard in raw:
        # A closed shard has an ending sequence number and takes no more writes.
        if shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber"):
            continue
        hash_range = shard["HashKeyRange"]
        yield Shard(
            shard["ShardId"],
            int(hash_range["StartingHashKey"]),
            int(hash_range["EndingHashKey"]),
        )
