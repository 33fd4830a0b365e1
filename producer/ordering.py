"""Per-key ordering: a Kinesis record may be sent only when no earlier user record with the same
hash key is still unfinished outside it.

Owns the guarantee stated in the README: user records with the same partition key (and the same
explicit hash key, if any) added by one producer are written in the order of their
``add_user_record`` calls, retries included. Within an aggregate the order is the add order;
between Kinesis records it holds because a record whose predecessor (same key) is in flight or
waiting for a retry is held back until that predecessor has succeeded or failed for good. The
cost falls only on a key with records in flight: one Kinesis record per key at a time.

The key is the effective hash key, not the partition key: records with equal hash keys always
map to one shard, so a reshard can only move a key's records forward along the shard lineage,
and the holds can never wait on each other in a cycle. (Every record still expires at its
``record_ttl``, so even a bug here could delay records, never hang them.)

Each entry links to the previous unfinished entry with its key (``Entry.prev``); checking a
Kinesis record walks those links, skipping finished ones and compressing the path, so the cost
is amortised O(1) per user record.
"""

from __future__ import annotations

from producer.records import Entry, KinesisRecord

__all__ = ["KeyOrder", "release"]


class KeyOrder:
    """The newest unfinished entry per hash key, one table per stream. The pipeline links new
    entries through :meth:`table` directly (its hot path); :meth:`link` does the same."""

    __slots__ = ("_tables", "enabled")

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._tables: dict[str, dict[int, Entry]] = {}

    def __len__(self) -> int:
        return sum(len(table) for table in self._tables.values())

    def table(self, stream: str) -> dict[int, Entry] | None:
        """The stream's table (None when ordering is off)."""
        if not self.enabled:
            return None
        return self._tables.setdefault(stream, {})

    def link(self, entry: Entry) -> None:
        """Called once per entry, in add order."""
        table = self.table(entry.stream)
        if table is None:
            return
        previous = table.get(entry.hash_key)
        if previous is not None and not previous.finished:
            entry.prev = previous
        table[entry.hash_key] = entry

    def finish(self, entry: Entry) -> None:
        """The entry succeeded or failed for good."""
        release(entry, self._tables.get(entry.stream) if self.enabled else None)

    def may_send(self, kr: KinesisRecord) -> bool:
        """True unless an entry of ``kr`` waits for an unfinished entry outside ``kr``."""
        if not self.enabled:
            return True
        for entry in kr.entries:
            prev = entry.prev
            if prev is None:
                continue
            while prev is not None and prev.finished:
                prev = prev.prev
            entry.prev = prev
            if prev is not None and prev.kr is not kr:
                return False
        return True


def release(entry: Entry, table: dict[int, Entry] | None) -> None:
    """Marks ``entry`` finished, keeping its link to the nearest unfinished predecessor (a
    successor that skips this entry must still wait for that one; predecessors usually finish
    first, so the walk is short), and forgets it in its stream's ``table`` if it is the newest
    there."""
    prev = entry.prev
    while prev is not None and prev.finished:
        prev = prev.prev
    entry.prev = prev
    entry.finished = True
    if table is not None and table.get(entry.hash_key) is entry:
        del table[entry.hash_key]
