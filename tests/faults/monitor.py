"""Watches a lease table during a run: every shard's checkpoint over time, and whether it ever
moved backwards.

    monitor = CheckpointMonitor(aws_client("dynamodb", moto.endpoint), table).start()
    ...  # run the daemon under faults
    monitor.stop()
    assert not monitor.backwards(), monitor.describe()

It polls with consistent scans from a thread, straight at the backend (not through a fault
proxy). Positions are compared as the KCL orders them (``daemon.sequence``: sentinels below real
sequence numbers, which compare as integers, SHARD_END above them). A poll that fails (table not
there yet, backend down) is counted and skipped.
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from daemon.sequence import ExtendedSequenceNumber


def item_checkpoint(item: dict[str, Any]) -> ExtendedSequenceNumber | None:
    """The checkpoint of a lease item in attribute-value form (None when it has none)."""
    checkpoint = item.get("checkpoint", {}).get("S")
    if checkpoint is None:
        return None
    sub = int(item.get("checkpointSubSequenceNumber", {}).get("N", "0"))
    return ExtendedSequenceNumber(checkpoint, sub)


class CheckpointMonitor:
    """Records each shard's distinct checkpoints, in the order the polls saw them."""

    def __init__(self, dynamodb: Any, table: str, interval_s: float = 0.1) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.history: dict[str, list[ExtendedSequenceNumber]] = {}
        self.polls = 0
        self.failed_polls = 0

    def start(self) -> CheckpointMonitor:
        self._thread = threading.Thread(target=self._run, name="checkpoint-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, after one last poll so that the final checkpoints are in."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.poll()

    def poll(self) -> None:
        try:
            items = self._scan()
        except (BotoCoreError, ClientError):
            with self._lock:
                self.failed_polls += 1
            return
        with self._lock:
            self.polls += 1
            for item in items:
                position = item_checkpoint(item)
                if position is None:
                    continue
                seen = self.history.setdefault(item["leaseKey"]["S"], [])
                if not seen or seen[-1] != position:
                    seen.append(position)

    def _scan(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        while True:
            page = self._dynamodb.scan(**request)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def latest(self) -> dict[str, ExtendedSequenceNumber]:
        with self._lock:
            return {shard: seen[-1] for shard, seen in self.history.items() if seen}

    def backwards(self) -> list[tuple[str, ExtendedSequenceNumber, ExtendedSequenceNumber]]:
        """``(shard, earlier, later)`` for every step where a checkpoint went down."""
        with self._lock:
            return [
                (shard, earlier, later)
                for shard, seen in self.history.items()
                for earlier, later in zip(seen, seen[1:], strict=False)
                if later < earlier
            ]

    def describe(self) -> str:
        with self._lock:
            lines = [f"{self.polls} polls ({self.failed_polls} failed)"]
            for shard, seen in sorted(self.history.items()):
                shown = " -> ".join(str(position) for position in seen[-12:])
                lines.append(f"  {shard}: {len(seen)} checkpoints: ... {shown}")
            return "\n".join(lines)
