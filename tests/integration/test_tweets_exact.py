"""The tweet counter is exact under failures: real kcl-daemon workers, the processor under the
SDK, tweets written by the KPL-compatible producer, results in DynamoDB.

Each test compares the results tables with the ground truth computed from what the generator
sent (``tests.support.tweets.expected_tables``), duplicates and late tweets included:
a child killed with SIGKILL at every stage of a batch; a worker killed with SIGKILL while a second
worker takes over; a shard split while tweets flow (kinesis-local + dynalite, which reshard like
AWS); and a clean run read back through the report's console script.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from processors.tweets.generator import GeneratorSettings, SentTweet
from tests import servers
from tests.support.daemon_runner import lease_items
from tests.support.tweets import TweetRig
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

LATENESS_S = 60.0


def tweets(rate: float, duration_s: float, **shares: float) -> GeneratorSettings:
    return GeneratorSettings(
        rate=rate,
        duration_s=duration_s,
        allowed_lateness_s=LATENESS_S,
        seed=int(rate * duration_s),
        **shares,  # type: ignore[arg-type]
    )


@pytest.fixture
def moto_rig(
    moto_server: servers.LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TweetRig]:
    for key, value in servers.aws_env(moto_server.endpoint).items():
        monkeypatch.setenv(key, value)
    rig = TweetRig(tmp_path, moto_server.endpoint, moto_server.endpoint, LATENESS_S)
    yield rig
    rig.kill()


@pytest.fixture
def resharding_rig(
    kinesis_local: servers.LocalServer,
    dynalite: servers.LocalServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TweetRig]:
    env = servers.aws_env(kinesis=kinesis_local.endpoint, dynamodb=dynalite.endpoint)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rig = TweetRig(tmp_path, kinesis_local.endpoint, dynalite.endpoint, LATENESS_S)
    yield rig
    rig.kill()


def sigkilled_children(rig: TweetRig) -> list[dict[str, Any]]:
    return [
        event
        for run in rig.workers
        for event in run.find_events("child exited")
        if event.get("signal") == "SIGKILL" and not event.get("requested")
    ]


def test_children_killed_at_every_stage_of_a_batch_leave_exact_counts(moto_rig: TweetRig) -> None:
    moto_rig.create(2)
    sent = moto_rig.produce(tweets(300, 2.5, duplicate_share=0.05, late_share=0.04))
    # Small reads make many batches per shard; every child dies once at each stage: after the
    # prepare, after the claims, after the counts, after the progress item (before the commit).
    worker = moto_rig.start("w1", faults="prepared:1,claims:2,counts:3,progress:4", maxRecords=2)
    moto_rig.wait_counted(sent)
    assert worker.stop() == 0
    moto_rig.assert_exact(sent)
    fired = Counter(marker.name.split(".")[1] for marker in moto_rig.fault_dir.iterdir())
    assert set(fired) == {"prepared", "claims", "counts", "progress"}, fired
    assert len(sigkilled_children(moto_rig)) == sum(fired.values())
    lines = [event.get("line", "") for event in worker.find_events("child stderr")]
    assert any("did not commit it" in line for line in lines), "a prepared checkpoint was seen"
    assert any(line.startswith("tweets [") and "replay:" in line for line in lines)


def test_a_worker_killed_mid_run_is_taken_over_with_exact_counts(moto_rig: TweetRig) -> None:
    moto_rig.create(4)
    sent = moto_rig.produce(tweets(300, 2.5, duplicate_share=0.04))
    first = moto_rig.start("w1", maxRecords=2)
    wait_until(
        lambda: moto_rig.applied() >= len(sent) // 4,
        60,
        interval=0.1,
        message=lambda: f"w1 applying records:\n{first.log_tail()}",
    )
    second = moto_rig.start("w2", maxRecords=50)
    first.kill()  # kill -9: no shutdown, its children see their input close mid-batch
    moto_rig.wait_counted(sent)
    moto_rig.assert_exact(sent)
    owners = {
        item.get("leaseOwner", {}).get("S")
        for item in lease_items(moto_rig.dynamodb, moto_rig.application).values()
    }
    assert owners == {"w2"}
    assert second.find_events("lease taken", previous_owner="w1")
    assert second.stop() == 0


def test_a_shard_split_while_tweets_flow_keeps_parent_and_children_apart_and_exact(
    resharding_rig: TweetRig,
) -> None:
    rig = resharding_rig
    parent, _other = rig.create(2)
    worker = rig.start(
        "w1",
        shardSyncIntervalMillis=1000,
        parentShardPollIntervalMillis=500,
        cleanupLeasesUponShardCompletion="false",
    )
    settings = tweets(100, 8.0, duplicate_share=0.05)
    sent: list[SentTweet] = []
    progress = [0]
    failure: list[BaseException] = []

    def send() -> None:
        try:
            sent.extend(rig.produce(settings, lambda count: progress.__setitem__(0, count)))
        except BaseException as error:  # reported below
            failure.append(error)

    worker.wait_for(
        lambda: len(worker.find_events("consumer state", new="processing")) >= 2,
        60,
        "both shards processing",
    )
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    # Split while the sender is a third of the way through, the worker reading both shards.
    wait_until(lambda: progress[0] >= 250, 60, interval=0.05, message="250 tweets sent")
    shard = next(
        s
        for s in rig.kinesis.list_shards(StreamName=rig.stream)["Shards"]
        if s["ShardId"] == parent
    )
    hash_range = shard["HashKeyRange"]
    middle = (int(hash_range["StartingHashKey"]) + int(hash_range["EndingHashKey"])) // 2
    rig.kinesis.split_shard(
        StreamName=rig.stream, ShardToSplit=parent, NewStartingHashKey=str(middle)
    )
    at_split = progress[0]
    sender.join(60)
    assert not failure, failure
    assert at_split < len(sent) * 0.7, f"split after {at_split} of {len(sent)} tweets were sent"
    # A retrying producer's copies of tweets that went to the parent now land on its children.
    before_split = [e for e in sent if e.shard_id == parent and not e.planned.duplicate]
    resent = rig.resend(before_split[:20])
    split_children = {
        s["ShardId"]
        for s in rig.kinesis.list_shards(StreamName=rig.stream)["Shards"]
        if s.get("ParentShardId") == parent
    }
    assert len(split_children) == 2
    assert {entry.shard_id for entry in resent} <= split_children
    everything = sent + resent
    rig.wait_counted(everything)
    rig.assert_exact(everything)
    counted_shards = {shard_id for (_lang, _minute, shard_id) in rig.counts()}
    assert parent in counted_shards and split_children <= counted_shards
    per_shard = rig.progress()
    assert sum(per_shard[child]["duplicates"] for child in split_children) >= len(resent)
    leases = lease_items(rig.dynamodb, rig.application)
    assert leases[parent]["checkpoint"]["S"] == "SHARD_END"
    rig.stop()


def test_duplicates_late_tweets_and_garbage_are_counted_exactly_and_reported(
    moto_rig: TweetRig,
) -> None:
    moto_rig.create(2)
    moto_rig.start("w1")
    sent = moto_rig.produce(
        tweets(200, 3.0, duplicate_share=0.10, late_share=0.06, too_late_share=0.04)
    )
    moto_rig.kinesis.put_record(StreamName=moto_rig.stream, PartitionKey="x", Data=b"not a tweet")
    moto_rig.wait_counted(sent, invalid=1)
    expected = moto_rig.assert_exact(sent, invalid=1)
    assert expected.records - expected.distinct >= 20 and sum(expected.late.values()) >= 10
    moto_rig.stop()
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "processors.tweets.report",
            "--tables",
            moto_rig.prefix,
            "--dynamodb-endpoint",
            moto_rig.dynamodb_endpoint,
            "--region",
            "us-east-1",
            "--late",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = report.stdout.splitlines()
    assert lines[0].split() == ["language", "|", "time", "|", "count"]
    rows = [line.split(" | ") for line in lines[1 : 1 + len(expected.counts)]]
    printed = {(lang.strip(), time.strip()): int(count) for lang, time, count in rows}
    assert printed == {(lang, minute[11:16]): n for (lang, minute), n in expected.counts.items()}
    total = sum(expected.counts.values())
    late = sum(expected.late.values())
    assert (
        f"{total} tweets in {len(expected.counts)} (language, minute) rows; {late} arrived"
        in report.stdout
    )
    assert "late table (not in the counts above):" in report.stdout
