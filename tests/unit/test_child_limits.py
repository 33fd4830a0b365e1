"""Children's usage sampling and the memory limit: restarted like a crash, logged, counted.

The sampler is driven against this test process (psutil, no children started); process trees
come from injected pid -> parent maps or a fake /proc folder.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from structlog.testing import capture_logs

from daemon.child_limits import (
    MEGABYTE,
    ChildWatcher,
    ProcessSample,
    ProcessSampler,
    descendants,
    limit_bytes,
    over_limit,
    read_ppid_map,
)


@dataclass
class FakeConsumer:
    child_pid: int | None
    killed: int = 0

    def kill_child(self) -> None:
        self.killed += 1


@dataclass
class FakeDaemon:
    consumers: dict[str, FakeConsumer] = field(default_factory=dict)


class FixedSampler(ProcessSampler):
    """Returns preset samples instead of reading processes."""

    def __init__(self, samples: dict[int, ProcessSample]) -> None:
        super().__init__()
        self.samples = samples

    def sample_many(self, pids: Iterable[int]) -> dict[int, ProcessSample]:
        wanted = set(pids)
        return {pid: s for pid, s in self.samples.items() if pid in wanted}


def sample(pid: int, megabytes: float) -> ProcessSample:
    return ProcessSample(pid, int(megabytes * MEGABYTE), 1.0, 1)


# -- pure parts ---------------------------------------------------------------------------


def test_zero_megabytes_means_no_limit() -> None:
    assert limit_bytes(0) == 0
    assert not over_limit(sample(1, 10_000), limit_bytes(0))


def test_over_limit_is_strictly_above_it() -> None:
    limit = limit_bytes(100)
    assert limit == 100 * MEGABYTE
    assert not over_limit(sample(1, 100), limit)
    assert over_limit(ProcessSample(1, limit + 1, 0.0, 1), limit)


def test_descendants_walks_the_whole_tree_below_the_root_only() -> None:
    ppids = {10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}
    assert descendants(10, ppids) == [11, 12, 13]
    assert descendants(13, ppids) == []


def test_descendants_survives_a_loop_in_the_map() -> None:
    assert descendants(1, {2: 1, 1: 2}) == [2]


def test_ppid_map_reads_proc_stat_even_with_parentheses_in_the_command(tmp_path: Path) -> None:
    for pid, stat in {
        "7": "7 (python) S 1 7 7 0",
        "8": "8 (odd) name)) R 7 8 8 0",
    }.items():
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "stat").write_text(stat)
    (tmp_path / "self").mkdir()
    (tmp_path / "9").mkdir()  # exited between listdir and open: no stat
    assert read_ppid_map(str(tmp_path)) == {7: 1, 8: 7}


def test_ppid_map_of_this_machine_knows_this_process() -> None:
    assert read_ppid_map()[os.getpid()] == os.getppid()


# -- the sampler ------------------------------------------------------------------------------


def test_sampler_measures_this_process() -> None:
    sampler = ProcessSampler(include_descendants=False)
    measured = sampler.sample(os.getpid())
    assert measured is not None
    assert measured.rss_bytes == pytest.approx(psutil.Process().memory_info().rss, rel=0.5)
    assert measured.processes == 1


def test_sampler_adds_descendants_to_the_root() -> None:
    parent = os.getppid()
    sampler = ProcessSampler(ppid_map=lambda: {os.getpid(): parent})
    alone = ProcessSampler(include_descendants=False).sample(parent)
    measured = sampler.sample(parent)
    assert measured is not None and alone is not None
    assert measured.processes == 2
    assert measured.rss_bytes > alone.rss_bytes


def test_sampler_leaves_out_processes_that_are_gone() -> None:
    gone = 2**22 + 12345  # above the default pid_max
    assert ProcessSampler().sample_many([gone]) == {}


# -- the watcher ----------------------------------------------------------------------------------


def watcher_with(daemon: FakeDaemon, samples: dict[int, ProcessSample], mb: float) -> ChildWatcher:
    return ChildWatcher(daemon, limit_megabytes=mb, sampler=FixedSampler(samples))


def test_child_over_the_limit_is_killed_logged_and_counted() -> None:
    daemon = FakeDaemon({"s0": FakeConsumer(10), "s1": FakeConsumer(11)})
    watcher = watcher_with(daemon, {10: sample(10, 300), 11: sample(11, 50)}, mb=200)
    with capture_logs() as logs:
        killed = asyncio.run(watcher.poll())
    assert killed == ["s0"]
    assert (daemon.consumers["s0"].killed, daemon.consumers["s1"].killed) == (1, 0)
    assert watcher.kills == {"s0": 1}
    [line] = logs
    assert line["log_level"] == "error"
    assert (line["shard_id"], line["pid"], line["rss_mb"], line["limit_mb"]) == (
        "s0",
        10,
        300.0,
        200.0,
    )


def test_a_child_is_killed_once_until_it_is_replaced() -> None:
    daemon = FakeDaemon({"s0": FakeConsumer(10)})
    samples = {10: sample(10, 300)}
    watcher = watcher_with(daemon, samples, mb=200)
    asyncio.run(watcher.poll())
    asyncio.run(watcher.poll())  # the killed child is not reaped yet
    assert daemon.consumers["s0"].killed == 1
    daemon.consumers["s0"].child_pid = 20  # the restarted child, as big again
    samples[20] = sample(20, 300)
    asyncio.run(watcher.poll())
    assert daemon.consumers["s0"].killed == 2
    assert watcher.kills == {"s0": 2}


def test_the_successor_of_a_sampled_child_is_never_killed() -> None:
    daemon = FakeDaemon({"s0": FakeConsumer(10)})
    watcher = watcher_with(daemon, {}, mb=200)
    watcher.latest = {"s0": sample(10, 300)}
    daemon.consumers["s0"].child_pid = 11  # replaced after the sample was taken
    assert watcher.enforce() == []
    assert daemon.consumers["s0"].killed == 0


def test_without_a_limit_children_are_only_sampled() -> None:
    daemon = FakeDaemon({"s0": FakeConsumer(10), "s1": FakeConsumer(None)})
    watcher = watcher_with(daemon, {10: sample(10, 10_000)}, mb=0)
    assert asyncio.run(watcher.poll()) == []
    assert watcher.latest == {"s0": sample(10, 10_000)}
    assert daemon.consumers["s0"].killed == 0


def test_watcher_runs_until_stopped() -> None:
    daemon = FakeDaemon({"s0": FakeConsumer(10)})
    watcher = watcher_with(daemon, {10: sample(10, 300)}, mb=200)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop, interval_s=0.01))
        for _ in range(500):
            if watcher.kills:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert watcher.kills == {"s0": 1}
