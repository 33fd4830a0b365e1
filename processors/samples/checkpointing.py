"""Checkpointing with retries, the way the KCL documentation recommends.

ThrottlingException and KinesisClientLibDependencyException are transient
(the lease table is busy or briefly unreachable): retry with back-off.
Every other error name is final: ShutdownException means another worker now
owns the shard, so checkpointing again cannot succeed.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from processors.kclpy.kcl import CheckpointError

RETRIABLE = frozenset(("ThrottlingException", "KinesisClientLibDependencyException"))


def checkpoint_with_retries(
    checkpointer: Any,
    sequence_number: str | None = None,
    sub_sequence_number: int | None = None,
    *,
    attempts: int = 5,
    first_backoff_seconds: float = 0.2,
) -> None:
    """Checkpoint, retrying transient failures; raises CheckpointError otherwise."""
    backoff = first_backoff_seconds
    for attempt in range(1, attempts + 1):
        try:
            checkpointer.checkpoint(sequence_number, sub_sequence_number)
            return
        except CheckpointError as error:
            if error.value not in RETRIABLE or attempt == attempts:
                raise
            print(
                f"checkpoint at {sequence_number} failed with {error.value}; "
                f"retry {attempt}/{attempts - 1} in {backoff:.1f}s",
                file=sys.stderr,
            )
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
