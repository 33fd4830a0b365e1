"""The tweet counter's record processor against a fake checkpointer and an in-memory store: the
seed's prepare / write / commit order, lease loss, failed writes, restarts and shutdown."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import pytest

from daemon.errors import DependencyError
from processors.kclpy import messages
from processors.kclpy.kcl import UNSUPPORTED, CheckpointError
from processors.tweets.counting import Pending, Target
from processors.tweets.events import Tweet, encode_tweet
from processors.tweets.processor import EXIT_WRITE_FAILED, TweetCounter
from tests.support.tweets import MemoryStore, summed

SHARD = "shardId-000000000003"
MINUTE = 1714571100000


def kinesis_record(sequence: int, sub: int, tweet_id: str, lang: str = "en") -> messages.Record:
    tweet = Tweet(tweet_id, MINUTE + 1000, lang, "user", "text")
    import base64

    return messages.Record(
        {
            "action": "record",
            "data": base64.b64encode(encode_tweet(tweet)).decode(),
            "partitionKey": "user",
            "sequenceNumber": str(sequence),
            "subSequenceNumber": sub,
            "approximateArrivalTimestamp": MINUTE + 2000,
        }
    )


class FakeCheckpointer:
    """Records what the processor asks, and how many writes the store had seen at that moment."""

    def __init__(self, store: MemoryStore, prepare_error: str | None = None) -> None:
        self.store = store
        self.calls: list[tuple[str, Any, Any, int]] = []
        self.prepare_error = prepare_error
        self.commit_error: str | None = None

    def prepare_checkpoint(self, sequence_number: Any = None, sub: Any = None) -> Any:
        if self.prepare_error is not None:
            raise CheckpointError(self.prepare_error)
        self.calls.append(("prepare", sequence_number, sub, self.store.writes))
        checkpointer = self

        class Prepared:
            def checkpoint(self) -> None:
                checkpointer.checkpoint(sequence_number, sub, kind="commit")

        return Prepared()

    def checkpoint(
        self, sequence_number: Any = None, sub: Any = None, kind: str = "checkpoint"
    ) -> None:
        if self.commit_error is not None:
            raise CheckpointError(self.commit_error)
        self.calls.append((kind, sequence_number, sub, self.store.writes))


def start(
    store: MemoryStore, pending: str | None = None, prepared: bool = True
) -> tuple[TweetCounter, io.StringIO]:
    log = io.StringIO()
    counter = TweetCounter(store, 60.0, 3600, claim_threads=2, create_tables=False, log_file=log)
    messages.InitializeInput(
        {
            "action": "initialize",
            "shardId": SHARD,
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
            "preparedCheckpoints": prepared,
            "pendingCheckpointSequenceNumber": pending,
            "pendingCheckpointSubSequenceNumber": 0 if pending else None,
        }
    ).dispatch(None, counter)
    return counter, log


def deliver(counter: TweetCounter, checkpointer: Any, records: list[messages.Record]) -> None:
    messages.ProcessRecordsInput(
        {"action": "processRecords", "records": records, "millisBehindLatest": 0}
    ).dispatch(checkpointer, counter)


def test_each_batch_is_prepared_then_written_then_committed_at_its_last_record() -> None:
    store = MemoryStore()
    counter, _ = start(store)
    checkpointer = FakeCheckpointer(store)
    deliver(counter, checkpointer, [kinesis_record(7, 0, "1"), kinesis_record(7, 1, "2")])
    (prepare, commit) = checkpointer.calls
    assert prepare[:3] == ("prepare", "7", 1) and prepare[3] == 0  # nothing written yet
    assert commit[:3] == ("commit", "7", 1) and commit[3] > 0  # written before the commit
    assert sum(store.table("counts").values()) == 2


def test_lease_lost_at_prepare_writes_nothing() -> None:
    store = MemoryStore()
    counter, log = start(store)
    deliver(counter, FakeCheckpointer(store, "ShutdownException"), [kinesis_record(7, 0, "1")])
    assert store.writes == 0
    assert "lease lost before the batch was written" in log.getvalue()


def test_without_the_extension_the_batch_is_checkpointed_after_the_write() -> None:
    store = MemoryStore()
    counter, _ = start(store, prepared=False)
    checkpointer = FakeCheckpointer(store, prepare_error=UNSUPPORTED)
    deliver(counter, checkpointer, [kinesis_record(9, 0, "1")])
    assert [call[:3] for call in checkpointer.calls] == [("checkpoint", "9", 0)]
    assert checkpointer.calls[0][3] > 0


class FailingStore(MemoryStore):
    def add_after(self, target: Target, todo: Pending, also_set: Any = None) -> bool:
        raise DependencyError("dynamodb unreachable")


def test_a_failed_write_ends_the_process_before_any_checkpoint() -> None:
    store = FailingStore()
    counter, log = start(store)
    checkpointer = FakeCheckpointer(store)
    with pytest.raises(SystemExit) as exit_info:
        deliver(counter, checkpointer, [kinesis_record(7, 0, "1")])
    assert exit_info.value.code == EXIT_WRITE_FAILED
    assert [call[0] for call in checkpointer.calls] == ["prepare"]
    assert "exiting so that the daemon restarts" in log.getvalue()


def test_a_failed_commit_is_logged_and_the_replay_adds_nothing() -> None:
    store = MemoryStore()
    counter, log = start(store)
    checkpointer = FakeCheckpointer(store)
    checkpointer.commit_error = "ShutdownException"
    batch = [kinesis_record(7, 0, "1", "ja"), kinesis_record(8, 0, "2")]
    deliver(counter, checkpointer, batch)
    assert "a replay will skip the applied records" in log.getvalue()
    # The next owner starts from the old checkpoint and gets the batch again.
    successor, successor_log = start(store, pending="8")
    deliver(successor, FakeCheckpointer(store), batch)
    assert summed(store.table("counts")) == Counter(
        {("ja", "2024-05-01T13:45Z"): 1, ("en", "2024-05-01T13:45Z"): 1}
    )
    text = successor_log.getvalue()
    assert "prepared a checkpoint at 8/0 and did not commit it" in text
    assert "results applied through 8/0" in text
    assert "replay: 2 of 2 records were already applied" in text


def test_shutdown_requested_checkpoints_at_the_last_applied_record() -> None:
    store = MemoryStore()
    counter, _ = start(store)
    deliver(
        counter, FakeCheckpointer(store), [kinesis_record(7, 0, "1"), kinesis_record(7, 4, "2")]
    )
    final = FakeCheckpointer(store)
    messages.ShutdownRequestedInput({"action": "shutdownRequested"}).dispatch(final, counter)
    assert [call[:3] for call in final.calls] == [("checkpoint", "7", 4)]


def test_shard_end_checkpoints_with_no_position() -> None:
    store = MemoryStore()
    counter, _ = start(store)
    final = FakeCheckpointer(store)
    messages.ShardEndedInput({"action": "shardEnded"}).dispatch(final, counter)
    assert [call[:3] for call in final.calls] == [("checkpoint", None, None)]


def test_the_progress_item_accounts_for_every_record() -> None:
    store = MemoryStore()
    counter, _ = start(store)
    garbage = messages.Record(
        {
            "action": "record",
            "data": "bm90IGpzb24=",
            "partitionKey": "x",
            "sequenceNumber": "12",
            "subSequenceNumber": 0,
            "approximateArrivalTimestamp": MINUTE,
        }
    )
    deliver(
        counter,
        FakeCheckpointer(store),
        [kinesis_record(10, 0, "1"), kinesis_record(11, 0, "1"), garbage],
    )
    progress = store.items[Target("progress", SHARD)]
    assert (
        progress["records"],
        progress["counted"],
        progress["duplicates"],
        progress["invalid"],
    ) == (3, 1, 1, 1)


class BuggyStore(MemoryStore):
    def claim(self, tweet_id: str, claimant: str, expires_s: int) -> str:
        raise KeyError("a bug")


def test_an_unexpected_error_while_applying_also_ends_the_process() -> None:
    store = BuggyStore()
    counter, log = start(store)
    checkpointer = FakeCheckpointer(store)
    with pytest.raises(SystemExit) as exit_info:
        deliver(counter, checkpointer, [kinesis_record(7, 0, "1")])
    assert exit_info.value.code == EXIT_WRITE_FAILED
    assert [call[0] for call in checkpointer.calls] == ["prepare"]
    assert "applying the batch failed: KeyError" in log.getvalue()


def test_after_leaving_a_batch_unwritten_no_later_batch_is_written() -> None:
    store = MemoryStore()
    counter, log = start(store)
    deliver(counter, FakeCheckpointer(store, "ShutdownException"), [kinesis_record(7, 0, "1")])
    deliver(counter, FakeCheckpointer(store), [kinesis_record(8, 0, "2")])
    assert store.writes == 0
    assert "an earlier batch was left unwritten" in log.getvalue()
