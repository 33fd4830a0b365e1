"""The real kcl-daemon process, real child processes, a real moto server."""

from __future__ import annotations

import base64
import os
import signal
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support.daemon_runner import (
    DaemonRun,
    aws_client,
    create_stream,
    lease_items,
    put_records,
    python_processor,
)

pytestmark = pytest.mark.integration

PROCESSORS = Path(__file__).parent / "processors"
RECORD_LOGGER = python_processor("processors.samples.record_logger")


@pytest.fixture
def names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"stream-{suffix}", f"app-{suffix}"


def _stream_with_records(endpoint: str, stream: str, shards: int, count: int, tag: str = "r"):
    kinesis = aws_client("kinesis", endpoint)
    create_stream(kinesis, stream, shards)
    records = [(f"key-{i % 37}", f"{tag}-{i}".encode()) for i in range(count)]
    return put_records(kinesis, stream, records)


def _daemon(tmp_path: Path, endpoint: str, names, executable=RECORD_LOGGER, **kwargs) -> DaemonRun:
    stream, application = names
    return DaemonRun(tmp_path, endpoint, stream, application, executable, **kwargs)


def _delivered_per_shard(run: DaemonRun) -> dict[str, list[str]]:
    per_shard: dict[str, list[str]] = defaultdict(list)
    for record in run.processed():
        per_shard[record.shard_id].append(record.data)
    return per_shard


def test_every_record_is_delivered_in_order_per_shard(moto_server, tmp_path, names):
    written = _stream_with_records(moto_server.endpoint, names[0], shards=4, count=400)
    run = _daemon(tmp_path, moto_server.endpoint, names).start()
    try:
        run.wait_for_records(400)
    finally:
        assert run.stop() == 0
    assert _delivered_per_shard(run) == written
    assert len(written) == 4


def test_sigterm_writes_final_checkpoints_in_kcl_schema_and_releases_leases(
    moto_server, tmp_path, names
):
    written = _stream_with_records(moto_server.endpoint, names[0], shards=2, count=100)
    run = _daemon(tmp_path, moto_server.endpoint, names).start()
    run.wait_for_records(100)
    # The grace time is 3 s; stop() fails the test if the daemon takes over 10 s.
    assert run.stop(timeout=10) == 0
    items = lease_items(aws_client("dynamodb", moto_server.endpoint), names[1])
    assert sorted(items) == sorted(written)
    last_sequence = {r.shard_id: r.sequence_number for r in run.processed()}
    for shard_id, item in items.items():
        assert "leaseOwner" not in item, "leases are released on a graceful stop"
        assert item["checkpoint"] == {"S": last_sequence[shard_id]}
        assert item["checkpointSubSequenceNumber"] == {"N": "0"}
        assert item["ownerSwitchesSinceCheckpoint"] == {"N": "0"}
        assert int(item["leaseCounter"]["N"]) > 0


def test_restart_resumes_after_the_checkpoint(moto_server, tmp_path, names):
    endpoint = moto_server.endpoint
    _stream_with_records(endpoint, names[0], shards=2, count=60, tag="first")
    first = _daemon(tmp_path, endpoint, names).start()
    first.wait_for_records(60)
    assert first.stop() == 0
    put_records(
        aws_client("kinesis", endpoint),
        names[0],
        [(f"key-{i}", f"second-{i}".encode()) for i in range(40)],
    )
    second = _daemon(tmp_path, endpoint, names).start()
    try:
        second.wait_for_records(100)
    finally:
        assert second.stop() == 0
    data = [r.data for r in second.processed()]
    assert len(data) == 100, "nothing at or below a checkpoint is delivered again"
    assert sorted(data) == sorted(
        [f"first-{i}" for i in range(60)] + [f"second-{i}" for i in range(40)]
    )


def test_kill_9_of_a_child_mid_batch_restarts_only_that_shard(moto_server, tmp_path, names):
    endpoint = moto_server.endpoint
    written = _stream_with_records(endpoint, names[0], shards=3, count=300)
    victim_shard = sorted(written)[1]
    victim_record = written[victim_shard][len(written[victim_shard]) // 2]
    marker = tmp_path / "hung.pid"
    run = _daemon(
        tmp_path,
        endpoint,
        names,
        executable=python_processor("tests.integration.processors.faulty_logger"),
        env={"KCL_FAULT": f"hang_on:{victim_record}", "KCL_FAULT_MARKER": str(marker)},
    ).start()
    try:
        run.wait_for(marker.exists, 30, "the child to hang mid-batch")
        other_shards = [s for s in written if s != victim_shard]
        run.wait_for(
            lambda: all(len(_delivered_per_shard(run)[s]) == len(written[s]) for s in other_shards),
            30,
            "the other shards to finish while one child hangs",
        )
        os.kill(int(marker.read_text()), signal.SIGKILL)
        run.wait_for_records(300)
    finally:
        assert run.stop() == 0
    delivered = _delivered_per_shard(run)
    for shard_id in written:
        # At least once, in order: a replay from the checkpoint may repeat a prefix.
        assert sorted(set(delivered[shard_id])) == sorted(written[shard_id])
        assert _dedupe(delivered[shard_id]) == written[shard_id]
    for shard_id in other_shards:
        assert delivered[shard_id] == written[shard_id], "other shards never notice"
    assert run.find_events("child failed", shard_id=victim_shard)
    assert not [e for e in run.find_events("child failed") if e.get("shard_id") != victim_shard]


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def test_hung_child_is_killed_after_timeout_and_restarted(moto_server, tmp_path, names):
    endpoint = moto_server.endpoint
    written = _stream_with_records(endpoint, names[0], shards=1, count=50)
    (shard_id,) = written
    marker = tmp_path / "hung.pid"
    run = _daemon(
        tmp_path,
        endpoint,
        names,
        executable=python_processor("tests.integration.processors.faulty_logger"),
        env={"KCL_FAULT": f"hang_on:{written[shard_id][20]}", "KCL_FAULT_MARKER": str(marker)},
        extra={"timeoutInSeconds": 2},
    ).start()
    try:
        run.wait_for_records(50)
    finally:
        assert run.stop() == 0
    assert marker.exists()
    failures = run.find_events("child failed", shard_id=shard_id)
    assert failures and "within 2" in failures[0]["reason"]
    assert _dedupe([r.data for r in run.processed()]) == written[shard_id]


def test_crash_looping_child_gives_up_its_lease_and_other_shards_flow(moto_server, tmp_path, names):
    endpoint = moto_server.endpoint
    written = _stream_with_records(endpoint, names[0], shards=2, count=80)
    bad_shard, good_shard = sorted(written)
    run = _daemon(
        tmp_path,
        endpoint,
        names,
        executable=python_processor("tests.integration.processors.faulty_logger"),
        env={"KCL_FAULT": f"crash_shard:{bad_shard}"},
        extra={"childRestartBudget": 3, "childRestartMaxBackoffMillis": 200},
    ).start()
    try:
        run.wait_for(
            lambda: len(_delivered_per_shard(run)[good_shard]) == len(written[good_shard]),
            30,
            "the healthy shard to be processed",
        )
        run.wait_for(
            lambda: bool(
                run.find_events(
                    "child keeps failing; releasing the lease so the shard is not stuck here"
                )
            ),
            30,
            "the crash-looping shard to give up its lease",
        )
    finally:
        assert run.stop() == 0
    assert _delivered_per_shard(run)[bad_shard] == []


@pytest.mark.parametrize("raw_mode", ["", "record_columns"], ids=["objects", "record_columns"])
def test_garbage_on_child_stdout_is_skipped(moto_server, tmp_path, names, raw_mode):
    """With ``record_columns`` the child also asks for that form, and exits on any batch
    that does not use it (so every batch did)."""
    endpoint = moto_server.endpoint
    written = _stream_with_records(endpoint, names[0], shards=2, count=100)
    run = _daemon(
        tmp_path,
        endpoint,
        names,
        executable=python_processor("tests.integration.processors.raw_chatty"),
        env={"KCL_RAW_MODE": raw_mode},
    ).start()
    try:
        run.wait_for_records(100)
    finally:
        assert run.stop() == 0
    assert _delivered_per_shard(run) == written
    assert run.find_events("skipped a line from the child")
    assert run.find_events("malformed checkpoint request")
    assert not run.find_events("child failed")


def test_processor_written_for_amazon_kclpy_runs_unchanged(
    moto_server, tmp_path, names, kclpy_path
):
    written = _stream_with_records(moto_server.endpoint, names[0], shards=2, count=100)
    run = _daemon(
        tmp_path,
        moto_server.endpoint,
        names,
        executable=python_processor("tests.integration.processors.kclpy_record_logger"),
        env={"PYTHONPATH": str(kclpy_path)},
    ).start()
    try:
        run.wait_for_records(100)
    finally:
        assert run.stop() == 0
    assert _delivered_per_shard(run) == written


def test_node_processor_written_for_aws_kcl_runs(moto_server, tmp_path, names, node_modules):
    written = _stream_with_records(moto_server.endpoint, names[0], shards=2, count=100)
    script = Path(__file__).parents[2] / "processors" / "samples" / "node" / "record_logger.js"
    run = _daemon(
        tmp_path,
        moto_server.endpoint,
        names,
        executable=f"node {script}",
        env={"NODE_PATH": str(node_modules)},
    ).start()
    try:
        run.wait_for_records(100)
    finally:
        assert run.stop() == 0
    assert _delivered_per_shard(run) == written


def test_leases_of_a_stream_are_created_once_and_picked_up_by_a_restarted_worker(
    moto_server, tmp_path, names
):
    endpoint = moto_server.endpoint
    _stream_with_records(endpoint, names[0], shards=2, count=10)
    # A failover time far longer than the wait below: reclaiming must not wait it out.
    slow_failover = {"failoverTimeMillis": 120000}
    run = _daemon(tmp_path, endpoint, names, extra=slow_failover).start()
    run.wait_for_records(10)
    run.kill()  # no graceful release: the leases still name this worker
    items = lease_items(aws_client("dynamodb", endpoint), names[1])
    assert {item["leaseOwner"]["S"] for item in items.values()} == {"worker"}
    again = _daemon(tmp_path, endpoint, names, extra=slow_failover, name="worker").start()
    try:
        again.wait_for(
            lambda: len(again.find_events("lease taken", previous_owner="worker")) == 2,
            20,
            "the restarted worker to reclaim its own leases",
        )
    finally:
        assert again.stop() == 0


def _raw_child_run(tmp_path, endpoint, names, mode: str) -> tuple[DaemonRun, dict[str, list[str]]]:
    written = _stream_with_records(endpoint, names[0], shards=2, count=60)
    run = _daemon(
        tmp_path,
        endpoint,
        names,
        executable=python_processor("tests.integration.processors.raw_chatty"),
        env={"KCL_RAW_MODE": mode, "KCL_FAULT_MARKER": str(tmp_path / "fault.marker")},
    ).start()
    try:
        run.wait_for_records(60)
    finally:
        assert run.stop() == 0
    return run, written


def test_out_of_range_and_non_numeric_checkpoints_are_refused(moto_server, tmp_path, names):
    run, written = _raw_child_run(tmp_path, moto_server.endpoint, names, "bad_checkpoints")
    assert _delivered_per_shard(run) == written
    refused = run.find_events("checkpoint refused", error="IllegalArgumentException")
    assert len(refused) >= 3 * len(written)
    assert not run.find_events("child failed"), "the child saw every refusal it expected"


def test_wrong_response_for_restarts_only_that_child(moto_server, tmp_path, names):
    run, written = _raw_child_run(tmp_path, moto_server.endpoint, names, "wrong_status_once")
    failures = run.find_events("child failed")
    assert len(failures) == 1
    assert "status for 'initialize' while waiting for 'processRecords'" in failures[0]["reason"]
    delivered = _delivered_per_shard(run)
    for shard_id in written:
        assert _dedupe(delivered[shard_id]) == written[shard_id]


def test_a_20_mb_line_is_a_violation_and_the_child_is_replaced(moto_server, tmp_path, names):
    run, written = _raw_child_run(tmp_path, moto_server.endpoint, names, "huge_line_once")
    failures = run.find_events("child failed")
    assert len(failures) == 1 and "bytes on stdout" in failures[0]["reason"]
    delivered = _delivered_per_shard(run)
    for shard_id in written:
        assert _dedupe(delivered[shard_id]) == written[shard_id]


def test_a_child_that_dies_on_an_idle_shard_is_replaced_without_new_records(
    moto_server, tmp_path, names
):
    _stream_with_records(moto_server.endpoint, names[0], shards=1, count=10)
    run = _daemon(tmp_path, moto_server.endpoint, names).start()
    dynamodb = aws_client("dynamodb", moto_server.endpoint)

    def checkpointed_everything() -> bool:
        last = run.processed()[-1].sequence_number
        item = lease_items(dynamodb, names[1]).get(run.processed()[-1].shard_id, {})
        return item.get("checkpoint", {}).get("S") == last

    def replaced() -> bool:
        pids = run.child_pids()
        return len(pids) == 1 and pids != [victim]

    try:
        run.wait_for_records(10)
        run.wait_for(checkpointed_everything, 10, "the child to checkpoint and go idle")
        run.wait_for(lambda: len(run.child_pids()) == 1, 10, "one child running")
        (victim,) = run.child_pids()
        os.kill(victim, signal.SIGKILL)
        run.wait_for(replaced, 10, "a replacement child while no records arrive")
        run.wait_for(
            lambda: len(run.find_events("child started")) == 2, 10, "the replacement's start"
        )
    finally:
        assert run.stop() == 0
    failures = run.find_events("child failed")
    assert len(failures) == 1 and "between batches" in failures[0]["reason"]
    assert len(run.processed()) == 10, "nothing past the checkpoint is delivered again"


def test_poison_record_is_dead_lettered_and_the_shard_moves_on(moto_server, tmp_path, names):
    endpoint = moto_server.endpoint
    written = _stream_with_records(endpoint, names[0], shards=1, count=40)
    (shard_id,) = written
    poison = written[shard_id][17]
    dead_letters = f"{names[1]}-dlq"
    run = _daemon(
        tmp_path,
        endpoint,
        names,
        executable=python_processor("tests.integration.processors.faulty_logger"),
        env={"KCL_FAULT": f"crash_on:{poison}"},
        extra={
            "poisonRecordPolicy": "DEAD_LETTER",
            "poisonRecordMaxAttempts": 2,
            "deadLetterTableName": dead_letters,
            "childRestartMaxBackoffMillis": 200,
        },
    ).start()
    try:
        run.wait_for_records(39)
        run.wait_for(
            lambda: bool(run.find_events("poison record dead-lettered")), 30, "the dead letter"
        )
    finally:
        assert run.stop() == 0
    expected = [data for data in written[shard_id] if data != poison]
    assert _dedupe([r.data for r in run.processed()]) == expected
    items = aws_client("dynamodb", endpoint).scan(TableName=dead_letters)["Items"]
    assert len(items) == 1
    assert base64.b64decode(items[0]["data"]["S"]).decode() == poison
    assert "exited" in items[0]["failure"]["S"]
    checkpoint = lease_items(aws_client("dynamodb", endpoint), names[1])[shard_id]["checkpoint"]
    assert int(checkpoint["S"]) >= int(items[0]["sequence_number"]["S"])
    assert not run.find_events(
        "child keeps failing; releasing the lease so the shard is not stuck here"
    )
