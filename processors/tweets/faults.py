"""Crash injection for the exactness tests: the processor kills itself with SIGKILL at a chosen
point of a chosen batch, once per shard.

Owns the fault plan format and firing. Off unless the environment sets both::

    KCL_TWEETS_FAULTS="claims:2,counts:3"   # stage:batch, batches counted from 1 per child
    KCL_TWEETS_FAULT_DIR=/tmp/markers        # one marker file per (shard, fault) fired

Stages, in the order a batch passes them: ``prepared`` (checkpoint prepared, nothing written),
``claims`` (tweet ids claimed), ``counts`` (counts and late rows written), ``progress`` (progress
item written, checkpoint not yet committed). The marker makes each fault fire once per shard, so
the restarted child gets past it; the kill is a real ``kill -9`` of the child, mid-batch.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from daemon.errors import ConfigError

__all__ = ["FAULTS_VARIABLE", "FAULT_DIR_VARIABLE", "STAGES", "FaultPlan", "parse_faults"]

FAULTS_VARIABLE = "KCL_TWEETS_FAULTS"
FAULT_DIR_VARIABLE = "KCL_TWEETS_FAULT_DIR"
STAGES = ("prepared", "claims", "counts", "progress")


def parse_faults(text: str) -> frozenset[tuple[str, int]]:
    """``"claims:2,counts:3"`` -> {("claims", 2), ("counts", 3)}; ConfigError if malformed."""
    faults = set()
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        stage, _, number = part.partition(":")
        if stage not in STAGES or not number.isdigit() or int(number) < 1:
            raise ConfigError(
                f"{FAULTS_VARIABLE}: {part!r} is not stage:batch with stage one of "
                f"{', '.join(STAGES)} and batch >= 1"
            )
        faults.add((stage, int(number)))
    return frozenset(faults)


class FaultPlan:
    """The faults of one child; ``at(stage, batch)`` kills the process if one is due."""

    def __init__(self, faults: frozenset[tuple[str, int]], marker_dir: Path | None) -> None:
        self.faults = faults
        self.marker_dir = marker_dir
        self.shard_id = "unknown"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> FaultPlan:
        text = environ.get(FAULTS_VARIABLE, "")
        faults = parse_faults(text)
        folder = environ.get(FAULT_DIR_VARIABLE)
        if faults and not folder:
            raise ConfigError(f"{FAULTS_VARIABLE} needs {FAULT_DIR_VARIABLE} (a folder)")
        return cls(faults, Path(folder) if folder else None)

    def at(self, stage: str, batch: int) -> None:
        if (stage, batch) not in self.faults or self.marker_dir is None:
            return
        marker = self.marker_dir / f"{self.shard_id}.{stage}.{batch}"
        try:
            # O_EXCL: exactly one child per shard fires this fault, even across restarts.
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        os.close(fd)
        sys.stderr.write(f"tweets [{self.shard_id}]: fault injected: SIGKILL after {stage}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
