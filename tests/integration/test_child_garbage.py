"""A child that writes garbage to stdout never crashes the daemon nor disturbs another shard.

One daemon, several shards, one child per shard from tests/faults/children/garbage.py: the
children of some shards write random bytes, huge lines or JSON with wrong types between their
protocol messages (the daemon skips or refuses each), or break the protocol once (the daemon
replaces that child only); the child of the last shard behaves. Every record of every shard is
delivered, the well-behaved shard exactly once, and the daemon exits 0 on SIGTERM.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support.daemon_runner import (
    DaemonRun,
    aws_client,
    create_stream,
    put_records,
    python_processor,
)

pytestmark = pytest.mark.integration

GARBAGE_CHILD = python_processor("tests.faults.children.garbage")


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _run(
    moto_server, tmp_path: Path, modes: list[str]
) -> tuple[DaemonRun, dict[str, list[str]], dict[str, str]]:
    """Runs the daemon over len(modes) + 1 shards; the last shard's child behaves."""
    suffix = uuid.uuid4().hex[:8]
    stream, application = f"stream-{suffix}", f"app-{suffix}"
    kinesis = aws_client("kinesis", moto_server.endpoint)
    shards = create_stream(kinesis, stream, len(modes) + 1)
    plan = dict(zip(shards, modes, strict=False))
    records = [(f"key-{i}", f"r-{i}".encode()) for i in range(60 * len(shards))]
    written = put_records(kinesis, stream, records)
    assert sorted(written) == shards, "every shard got records"
    run = DaemonRun(
        tmp_path,
        moto_server.endpoint,
        stream,
        application,
        GARBAGE_CHILD,
        extra={"metricsLevel": "NONE", "childRestartBudget": 5},
        env={
            "KCL_GARBAGE_PLAN": ",".join(f"{shard}={mode}" for shard, mode in plan.items()),
            "KCL_CHILD_EVENTS": str(tmp_path / "events.tsv"),
            "KCL_FAULT_MARKER": str(tmp_path / "fault.marker"),
        },
    ).start()
    try:
        run.wait_for_records(len(records), timeout=90)
    finally:
        assert run.stop() == 0, "the daemon survives its children"
    return run, written, plan


def _delivered(run: DaemonRun) -> dict[str, list[str]]:
    per_shard: dict[str, list[str]] = defaultdict(list)
    for record in run.processed():
        per_shard[record.shard_id].append(record.data)
    return per_shard


def _garbage_counts(tmp_path: Path) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for line in (tmp_path / "events.tsv").read_text().splitlines():
        kind, shard, count = line.split("\t")
        if kind == "garbage":
            counts[shard] += int(count)
    return counts


def test_random_bytes_huge_lines_and_wrong_types_are_skipped_and_other_shards_never_notice(
    moto_server, tmp_path
):
    run, written, plan = _run(moto_server, tmp_path, ["random_bytes", "huge_lines", "wrong_types"])
    delivered = _delivered(run)
    # Nothing the garbage children wrote broke an exchange: no restart, so no repeat anywhere.
    assert delivered == written
    assert not run.find_events("child failed")
    assert not run.find_events("restarting child")
    counts = _garbage_counts(tmp_path)
    for shard in plan:
        assert counts[shard] > 0, f"the child of {shard} wrote no garbage"
    skipped = {e["shard_id"] for e in run.find_events("skipped a line from the child")}
    assert skipped == set(plan), "garbage came only from the shards whose child wrote it"
    refused = run.find_events("malformed checkpoint request") + run.find_events(
        "checkpoint refused", error="IllegalArgumentException"
    )
    assert {e["shard_id"] for e in refused} == {s for s, m in plan.items() if m == "wrong_types"}


def test_a_child_that_breaks_the_protocol_is_replaced_and_other_shards_never_notice(
    moto_server, tmp_path
):
    run, written, plan = _run(moto_server, tmp_path, ["bad_status_once", "oversized_once"])
    delivered = _delivered(run)
    for shard, data in written.items():
        assert _dedupe(delivered[shard]) == data, f"{shard}: records lost or out of order"
    failures = run.find_events("child failed")
    assert sorted(e["shard_id"] for e in failures) == sorted(plan), "one failure per bad child"
    reasons = {e["shard_id"]: e["reason"] for e in failures}
    bad_status, oversized = sorted(plan)
    assert "malformed status" in reasons[bad_status]
    assert "bytes on stdout" in reasons[oversized]
    (good,) = set(written) - set(plan)
    assert delivered[good] == written[good], "the well-behaved shard saw no repeat"


def test_a_flood_of_garbage_is_logged_in_part_and_counted_in_full(moto_server, tmp_path):
    run, written, plan = _run(moto_server, tmp_path, ["flood"])
    assert _delivered(run) == written
    assert not run.find_events("child failed")
    (flooded,) = plan
    written_lines = _garbage_counts(tmp_path)[flooded]
    logged = run.find_events("skipped a line from the child", shard_id=flooded)
    summaries = run.find_events(
        "skipped lines from the child that were not logged one by one", shard_id=flooded
    )
    assert written_lines >= 300, "the child flooded"
    assert len(logged) <= written_lines // 5, "only a part is logged"
    counted = (
        len(logged)
        + sum(event.get("not_logged_before", 0) for event in logged)
        + sum(event["count"] for event in summaries)
    )
    assert counted == written_lines, "every skipped line is logged or counted"
