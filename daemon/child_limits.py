"""Children's memory and CPU, and the optional per-child memory limit.

Owns sampling the resident memory (RSS) and CPU use of each shard's child
process, with psutil, and restarting a child whose RSS is above
``childMaxRssMegabytes``: the child is killed (its whole process group, the
same kill as a hung child gets) and its consumer restarts it from the last
checkpoint with back-off, exactly as after a crash; the event is logged and
counted per shard (``ChildWatcher.kills``, published as a metric).

A child's usage includes its descendants: a processor started through a
shell or a launcher script does its real work in a grandchild. They are
found with one scan of /proc per sample for all children (a few ms for a few
hundred processes; psutil's ``children()`` would scan once per child), in a
worker thread so the event loop never waits on it. RSS summed over a process
tree counts shared pages more than once; for a limit that is the cautious side.

The limit is checked every ``interval_s`` (5 s): a child that balloons
faster than that is the kernel OOM killer's to catch. Limit 0 means off; the
sampling still runs when metrics want the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import psutil

from daemon.logs import get_logger

DEFAULT_INTERVAL_S = 5.0
MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class ProcessSample:
    """One child's usage at one moment, its descendants included."""

    pid: int
    rss_bytes: int
    cpu_percent: float  # of one core; 200.0 = two cores busy
    processes: int


def limit_bytes(megabytes: float) -> int:
    """The limit in bytes for a ``childMaxRssMegabytes`` value (0 or less: no limit)."""
    return int(megabytes * MEGABYTE) if megabytes > 0 else 0


def over_limit(sample: ProcessSample, limit: int) -> bool:
    """Whether ``sample`` breaks a limit of ``limit`` bytes (0 means no limit)."""
    return limit > 0 and sample.rss_bytes > limit


def descendants(root: int, ppids: Mapping[int, int]) -> list[int]:
    """Every process below ``root`` in a pid -> parent pid map, nearest first."""
    children: dict[int, list[int]] = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    queue = [root]
    seen = {root}
    while queue:
        for child in sorted(children.get(queue.pop(0), ())):
            if child not in seen:  # pid reuse during the scan could make a loop
                seen.add(child)
                found.append(child)
                queue.append(child)
    return found


def read_ppid_map(proc: str = "/proc") -> dict[int, int]:
    """pid -> parent pid of every process, from /proc (Linux); empty if unreadable."""
    ppids: dict[int, int] = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return ppids
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as stat:
                data = stat.read()
        except OSError:
            continue  # it exited while we looked
        # The command name is in parentheses and may contain spaces or ')'.
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            ppids[int(name)] = int(fields[1])
    return ppids


class ProcessSampler:
    """Samples process trees with psutil; keeps psutil objects between calls for CPU %.

    ``cpu_percent`` is measured between two calls on the same process, so a
    process seen for the first time counts 0 % in that sample.
    """

    def __init__(
        self,
        *,
        include_descendants: bool = True,
        ppid_map: Callable[[], Mapping[int, int]] = read_ppid_map,
    ) -> None:
        self.include_descendants = include_descendants
        self._ppid_map = ppid_map
        self._processes: dict[int, psutil.Process] = {}

    def sample_many(self, pids: Iterable[int]) -> dict[int, ProcessSample]:
        """Usage of each live pid in ``pids`` (absent: the process is gone)."""
        roots = list(pids)
        ppids = self._ppid_map() if self.include_descendants and roots else {}
        samples: dict[int, ProcessSample] = {}
        alive: dict[int, psutil.Process] = {}
        for root in roots:
            tree = [root, *descendants(root, ppids)] if ppids else [root]
            rss = 0
            cpu = 0.0
            counted = 0
            for pid in tree:
                measured = self._measure(pid, alive)
                if measured is None:
                    if pid == root:
                        break
                    continue
                rss += measured[0]
                cpu += measured[1]
                counted += 1
            if counted:
                samples[root] = ProcessSample(root, rss, cpu, counted)
        # Forget processes that were not seen: a reused pid starts afresh.
        self._processes = alive
        return samples

    def sample(self, pid: int) -> ProcessSample | None:
        return self.sample_many([pid]).get(pid)

    def _measure(self, pid: int, alive: dict[int, psutil.Process]) -> tuple[int, float] | None:
        process = self._processes.get(pid) or alive.get(pid)
        try:
            if process is None or not process.is_running():
                process = psutil.Process(pid)
            with process.oneshot():
                rss = process.memory_info().rss
                cpu = process.cpu_percent(None)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return None
        alive[pid] = process
        return int(rss), float(cpu)


class ChildConsumer(Protocol):
    @property
    def child_pid(self) -> int | None: ...
    def kill_child(self) -> None: ...


class ConsumerSource(Protocol):
    @property
    def consumers(self) -> Mapping[str, ChildConsumer]: ...


class ChildWatcher:
    """Samples every shard's child periodically and restarts those over the memory limit.

    ``latest`` holds the last sample per shard (for metrics), ``kills`` the
    number of memory-limit restarts per shard since the daemon started.
    """

    def __init__(
        self,
        source: ConsumerSource,
        *,
        limit_megabytes: float = 0,
        executor: Executor | None = None,
        sampler: ProcessSampler | None = None,
        log: Any = None,
    ) -> None:
        self._source = source
        self.limit = limit_bytes(limit_megabytes)
        self._executor = executor
        self._sampler = sampler or ProcessSampler()
        self._log = log or get_logger()
        self.latest: dict[str, ProcessSample] = {}
        self.kills: dict[str, int] = {}
        self._killed_pids: set[int] = set()

    async def poll(self) -> list[str]:
        """Sample all children once and enforce the limit; the shards whose child was killed."""
        pids = {
            shard: consumer.child_pid
            for shard, consumer in self._source.consumers.items()
            if consumer.child_pid is not None
        }
        loop = asyncio.get_running_loop()
        by_pid = await loop.run_in_executor(
            self._executor, self._sampler.sample_many, list(pids.values())
        )
        self.latest = {shard: by_pid[pid] for shard, pid in pids.items() if pid in by_pid}
        return self.enforce()

    def enforce(self) -> list[str]:
        """Kill each child whose latest sample is over the limit (once per process)."""
        killed = []
        consumers = self._source.consumers
        live_pids = {sample.pid for sample in self.latest.values()}
        self._killed_pids &= live_pids  # a pid not seen any more is done with
        for shard, sample in sorted(self.latest.items()):
            if not over_limit(sample, self.limit) or sample.pid in self._killed_pids:
                continue
            consumer = consumers.get(shard)
            # The child may have been replaced since the sample: never kill its successor.
            if consumer is None or consumer.child_pid != sample.pid:
                continue
            self._log.error(
                "child over its memory limit; restarting it",
                shard_id=shard,
                pid=sample.pid,
                rss_mb=round(sample.rss_bytes / MEGABYTE, 1),
                limit_mb=round(self.limit / MEGABYTE, 1),
                processes=sample.processes,
            )
            consumer.kill_child()
            self._killed_pids.add(sample.pid)
            self.kills[shard] = self.kills.get(shard, 0) + 1
            killed.append(shard)
        return killed

    async def run(self, stop: asyncio.Event, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        while not stop.is_set():
            try:
                await self.poll()
            except (OSError, psutil.Error) as error:
                # /proc unreadable or psutil confused: try again next time.
                self._log.warning("sampling children failed", error=str(error))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
