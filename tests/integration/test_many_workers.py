"""Several real kcl-daemon processes sharing one stream's shards through the lease table (moto)."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.daemon_runner import (
    DaemonRun,
    aws_client,
    checkpoints_moving_backwards,
    create_stream,
    lease_items,
    put_records,
    python_processor,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

RECORD_LOGGER = python_processor("processors.samples.record_logger")


class Fleet:
    """Workers of one application; they share the output file in ``folder``."""

    def __init__(self, folder: Path, endpoint: str, shards: int, **settings: Any) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.folder = folder
        self.endpoint = endpoint
        self.stream = f"stream-{suffix}"
        self.application = f"app-{suffix}"
        self.settings = settings
        self.kinesis = aws_client("kinesis", endpoint)
        self.dynamodb = aws_client("dynamodb", endpoint)
        self.shards = create_stream(self.kinesis, self.stream, shards)
        self.workers: dict[str, DaemonRun] = {}
        self.written: dict[str, list[str]] = defaultdict(list)
        self._count = 0

    def start(self, name: str) -> DaemonRun:
        run = DaemonRun(
            self.folder,
            self.endpoint,
            self.stream,
            self.application,
            RECORD_LOGGER,
            name=name,
            extra=dict(self.settings),
            log_level="debug",
        ).start()
        self.workers[name] = run
        return run

    def write(self, count: int) -> None:
        records = [
            (f"key-{n % 53}", f"r-{n}".encode()) for n in range(self._count, self._count + count)
        ]
        self._count += count
        for shard, data in put_records(self.kinesis, self.stream, records).items():
            self.written[shard].extend(data)

    def delivered(self) -> dict[str, list[str]]:
        per_shard: dict[str, list[str]] = defaultdict(list)
        for record in next(iter(self.workers.values())).processed():
            per_shard[record.shard_id].append(record.data)
        return per_shard

    def wait_for_everything(self, timeout: float = 60) -> None:
        expected = sum(len(data) for data in self.written.values())

        def done() -> bool:
            return sum(len(set(data)) for data in self.delivered().values()) >= expected

        wait_until(done, timeout, interval=0.2, message=self._describe(f"{expected} records"))

    def owners(self) -> Counter[str | None]:
        items = lease_items(self.dynamodb, self.application)
        return Counter(item.get("leaseOwner", {}).get("S") for item in items.values())

    def wait_for_spread(self, workers: list[str], timeout: float = 60) -> None:
        def even() -> bool:
            owners = self.owners()
            counts = [owners[name] for name in workers]
            return sum(counts) == len(self.shards) and max(counts) - min(counts) <= 1

        wait_until(
            even,
            timeout,
            interval=0.2,
            message=self._describe(f"even spread on {workers}"),
            ignore=(ClientError,),  # the first worker may not have created the table yet
        )

    def _describe(self, what: str) -> Any:
        def message() -> str:
            tails = "\n".join(f"--- {n} ---\n{w.log_tail(25)}" for n, w in self.workers.items())
            return f"{what}; owners {dict(self.owners())}\n{tails}"

        return message

    def stop_all(self) -> None:
        for run in self.workers.values():
            if run.is_running():
                assert run.stop() == 0

    def taken(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return self.workers[name].find_events("lease taken", **fields)


@pytest.fixture
def fleet_factory(tmp_path: Path, moto_server: Any) -> Any:
    fleets: list[Fleet] = []

    def make(shards: int, **settings: Any) -> Fleet:
        fleet = Fleet(tmp_path, moto_server.endpoint, shards, **settings)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        for run in fleet.workers.values():
            run.kill()


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]  # type: ignore[func-returns-value]


def test_three_workers_starting_together_spread_six_shards_evenly(fleet_factory: Any) -> None:
    fleet = fleet_factory(6)
    fleet.write(600)
    for name in ("w1", "w2", "w3"):
        fleet.start(name)
    try:
        fleet.wait_for_spread(["w1", "w2", "w3"])
        fleet.wait_for_everything()
    finally:
        fleet.stop_all()
    delivered = fleet.delivered()
    for shard, data in fleet.written.items():
        assert _dedupe(delivered[shard]) == data, "at least once and in order per shard"
    checkpoints = [c for run in fleet.workers.values() for c in run.checkpoints()]
    assert checkpoints and not checkpoints_moving_backwards(checkpoints)


def test_joining_worker_gets_its_share_by_graceful_hand_off_without_redelivery(
    fleet_factory: Any,
) -> None:
    fleet = fleet_factory(4)
    fleet.write(200)
    first = fleet.start("w1")
    try:
        fleet.wait_for_everything()
        fleet.start("w2")
        fleet.wait_for_spread(["w1", "w2"])
        # The worker a lease was stolen from learns it at its next renewal (up to
        # F/3 later); records written before that reach both. Only hand-offs are
        # meant to redeliver nothing, so the new records wait until it knows.
        wait_until(
            lambda: any(
                first.find_events("lease lost", shard_id=event["shard_id"])
                for event in fleet.taken("w2", stolen=True)
            ),
            30,
            message="w1 to notice the stolen lease",
        )
        fleet.write(200)
        fleet.wait_for_everything()
    finally:
        fleet.stop_all()
    # A worker holding nothing is invisible to its peers and steals its first
    # lease; the rest comes by hand-off: shutdownRequested, checkpoint, release.
    (stolen,) = fleet.taken("w2", stolen=True)
    assert first.find_events("lease lost", shard_id=stolen["shard_id"])
    assert first.find_events("consumer state", shard_id=stolen["shard_id"], new="lease_lost")
    assert len(fleet.taken("w2", stolen=False, previous_owner=None)) >= 1
    handed_off = first.find_events("lease released", handed_off=True)
    assert {e["shard_id"] for e in handed_off} <= {e["shard_id"] for e in fleet.taken("w2")}
    assert handed_off
    records = [r.data for r in first.processed()]
    assert len(records) == len(set(records)) == 400, "nothing delivered twice"


def test_worker_stopping_gracefully_releases_leases_that_peers_take_without_waiting_for_expiry(
    fleet_factory: Any,
) -> None:
    fleet = fleet_factory(4)
    fleet.write(200)
    leaving = fleet.start("w1")
    staying = fleet.start("w2")
    try:
        fleet.wait_for_spread(["w1", "w2"])
        fleet.wait_for_everything()
        its_shards = {shard for shard, item in _owned_by(fleet, "w1")}
        # (A steal while the two started may have replayed a little; counted from here.)
        before_leaving = len(leaving.processed())
        assert leaving.stop() == 0
        staying.wait_for(lambda: fleet.owners()["w2"] == 4, 30, "the survivor to hold every lease")
        fleet.write(200)
        fleet.wait_for_everything()
    finally:
        fleet.stop_all()
    takeovers = [e for e in fleet.taken("w2") if e["shard_id"] in its_shards]
    assert takeovers and all(e["previous_owner"] is None for e in takeovers[-len(its_shards) :])
    later = [r.data for r in leaving.processed()[before_leaving:]]
    assert len(later) == len(set(later)) == 200, "final checkpoints: nothing delivered again"


def test_kill_9_of_a_worker_moves_its_shards_to_the_survivor(fleet_factory: Any) -> None:
    fleet = fleet_factory(4)
    fleet.write(200)
    victim = fleet.start("w1")
    survivor = fleet.start("w2")
    try:
        fleet.wait_for_spread(["w1", "w2"])
        fleet.wait_for_everything()
        victim.kill()
        fleet.write(200)
        survivor.wait_for(lambda: fleet.owners()["w2"] == 4, 30, "the survivor to take over")
        fleet.wait_for_everything()
    finally:
        fleet.stop_all()
    assert fleet.taken("w2", previous_owner="w1", stolen=False), "taken as expired, not stolen"
    delivered = fleet.delivered()
    for shard, data in fleet.written.items():
        assert _dedupe(delivered[shard]) == data
    checkpoints = victim.checkpoints() + survivor.checkpoints()
    assert not checkpoints_moving_backwards(checkpoints)


def _owned_by(fleet: Fleet, worker: str) -> list[tuple[str, dict[str, Any]]]:
    items = lease_items(fleet.dynamodb, fleet.application)
    return [
        (shard, item)
        for shard, item in items.items()
        if item.get("leaseOwner", {}).get("S") == worker
    ]
