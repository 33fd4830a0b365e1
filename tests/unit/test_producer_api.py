"""KinesisProducer's public API with its real threads, against the in-memory FakeKinesis
(no servers): futures, flush, close, backpressure, ordering under failures, internal errors."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from concurrent.futures import Future
from typing import Any

import pytest

from producer.config import ProducerConfig
from producer.producer import KinesisProducer
from producer.results import (
    CLOSED,
    EXPIRED,
    PRODUCER_ERROR,
    BufferFullError,
    ProducerClosedError,
    UserRecordFailed,
    UserRecordResult,
)
from producer.testing import FakeKinesis, FaultInjector, client_error
from protocol.aggregation import deaggregate
from tests.support.waiting import wait_until

TIMEOUT = 20.0


def config(**overrides: Any) -> ProducerConfig:
    overrides.setdefault("metrics_level", "none")
    overrides.setdefault("record_max_buffered_time", 20)
    overrides.setdefault("retry_backoff_min", 10)
    overrides.setdefault("retry_backoff_max", 50)
    return ProducerConfig(**overrides)


def fake(shards: int = 2) -> FakeKinesis:
    kinesis = FakeKinesis()
    kinesis.create_stream("s", shards)
    return kinesis


class BlockingClient:
    """Holds every PutRecords call until released."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.release = threading.Event()
        self.waiting = 0

    def list_shards(self, **kwargs: Any) -> Any:
        return self.inner.list_shards(**kwargs)

    def put_records(self, **kwargs: Any) -> Any:
        self.waiting += 1
        self.release.wait(TIMEOUT)
        return self.inner.put_records(**kwargs)


def results(futures: list[Future[UserRecordResult]]) -> list[UserRecordResult]:
    out = []
    for future in futures:
        try:
            out.append(future.result(TIMEOUT))
        except UserRecordFailed as failure:
            out.append(failure.result)
    return out


def test_every_future_resolves_and_the_records_decode():
    kinesis = fake()
    with KinesisProducer(config(), client=kinesis) as producer:
        futures = [producer.add_user_record("s", f"k{i}", f"v{i}") for i in range(300)]
        producer.flush_sync(TIMEOUT)
        assert all(future.done() for future in futures)
    sent: dict[tuple[str | None, int | None], bytes] = {}
    for stored in kinesis.records("s"):
        subs = deaggregate(stored.data)
        if subs is None:  # sent raw, before the shard map had arrived
            sent[(stored.sequence_number, 0)] = stored.data
        for sub in subs or []:
            sent[(stored.sequence_number, sub.sub_sequence_number)] = sub.data
    for i, result in enumerate(results(futures)):
        assert result.successful
        assert sent[(result.sequence_number, result.sub_sequence_number)] == f"v{i}".encode()


def test_close_sends_records_still_buffered():
    kinesis = fake()
    producer = KinesisProducer(config(record_max_buffered_time=600000), client=kinesis)
    futures = [producer.add_user_record("s", f"k{i}", b"x") for i in range(10)]
    producer.close()
    assert all(r.successful for r in results(futures))
    assert producer.outstanding_records == 0


def test_add_after_close_raises():
    producer = KinesisProducer(config(), client=fake())
    producer.close()
    producer.close()  # a second close is harmless
    with pytest.raises(ProducerClosedError):
        producer.add_user_record("s", "k", b"x")


@pytest.mark.parametrize(
    ("partition_key", "data", "explicit_hash_key", "message"),
    [
        ("", b"x", None, "partition_key"),
        ("k" * 257, b"x", None, "partition_key"),
        ("k", bytes(1048576), None, "max_user_record_size"),
        ("k", b"x", "-1", "decimal"),
        ("k", b"x", str(1 << 128), "2\\*\\*128"),
    ],
)
def test_invalid_record_raises_value_error(partition_key, data, explicit_hash_key, message):
    with (
        KinesisProducer(config(), client=fake()) as producer,
        pytest.raises(ValueError, match=message),
    ):
        producer.add_user_record("s", partition_key, data, explicit_hash_key)


def test_failed_record_future_raises_with_its_result():
    client = FaultInjector(fake(), lambda call, item: "AccessDeniedException")
    with KinesisProducer(config(), client=client) as producer:
        future = producer.add_user_record("s", "k", b"x")
        with pytest.raises(UserRecordFailed) as failure:
            future.result(TIMEOUT)
    assert failure.value.result.error_code == "AccessDeniedException"
    assert not failure.value.result.successful


def test_connection_errors_are_retried_until_record_ttl_then_expired():
    client = FaultInjector(fake(), call_fault=lambda call: ConnectionError("refused"))
    with KinesisProducer(config(record_ttl=300), client=client) as producer:
        future = producer.add_user_record("s", "k", b"x")
        with pytest.raises(UserRecordFailed) as failure:
            future.result(TIMEOUT)
    result = failure.value.result
    assert result.error_code == EXPIRED
    assert {a.error_code for a in result.attempts[:-1]} == {"ConnectionError"}
    assert len(result.attempts) >= 3


def test_backpressure_raise_refuses_records_beyond_the_limit():
    client = BlockingClient(fake())
    producer = KinesisProducer(
        config(max_outstanding_records=5, backpressure="raise"), client=client
    )
    futures = [producer.add_user_record("s", f"k{i}", b"x") for i in range(5)]
    with pytest.raises(BufferFullError, match="max_outstanding_records=5"):
        producer.add_user_record("s", "one-too-many", b"x")
    client.release.set()
    producer.close()
    assert all(r.successful for r in results(futures))


def test_backpressure_block_waits_for_room():
    client = BlockingClient(fake())
    producer = KinesisProducer(config(max_outstanding_bytes=100), client=client)
    producer.add_user_record("s", "a", bytes(90))
    late: list[Future[UserRecordResult]] = []
    adder = threading.Thread(
        target=lambda: late.append(producer.add_user_record("s", "b", bytes(90)))
    )
    adder.start()
    wait_until(lambda: producer._waiting_for_room == 1, TIMEOUT, message="add never waited")
    assert adder.is_alive() and not late
    client.release.set()
    adder.join(TIMEOUT)
    assert late and late[0].result(TIMEOUT).successful
    producer.close()


def test_same_key_order_survives_random_failures_and_retries():
    rng = random.Random(7)
    lock = threading.Lock()

    def flaky(call: int, item: dict[str, Any]) -> str | None:
        with lock:
            roll = rng.random()
        if roll < 0.2:
            return "ProvisionedThroughputExceededException"
        return "InternalFailure" if roll < 0.3 else None

    kinesis = fake(shards=3)
    client = FaultInjector(kinesis, flaky)
    keys = [f"key-{i}" for i in range(12)]
    added: dict[str, list[bytes]] = defaultdict(list)
    futures = []
    with KinesisProducer(
        config(max_connections=8, aggregation_max_count=5), client=client
    ) as producer:
        for n in range(600):
            key = keys[n % len(keys)]
            payload = f"{key}:{n}".encode()
            added[key].append(payload)
            futures.append(producer.add_user_record("s", key, payload))
    assert sum(client.injected.values()) > 0
    assert all(r.successful for r in results(futures))
    written: dict[str, list[bytes]] = defaultdict(list)
    for shard_id in kinesis.shard_ids("s"):
        for stored in kinesis.records("s", shard_id):
            subs = deaggregate(stored.data)
            if subs is None:
                written[stored.partition_key].append(stored.data)
            for sub in subs or []:
                written[sub.partition_key].append(sub.data)
    assert written == added
    positions: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for n, future in enumerate(futures):
        result = future.result()
        positions[keys[n % len(keys)]].append(
            (int(result.sequence_number or ""), result.sub_sequence_number or 0)
        )
    assert all(p == sorted(p) for p in positions.values())


def test_a_future_callback_may_add_records():
    kinesis = fake()
    chained: list[Future[UserRecordResult]] = []
    with KinesisProducer(config(), client=kinesis) as producer:
        first = producer.add_user_record("s", "k", b"first")
        first.add_done_callback(
            lambda f: chained.append(producer.add_user_record("s", "k", b"second"))
        )
        first.result(TIMEOUT)
        wait_until(lambda: chained, TIMEOUT, message="callback never ran")
        producer.flush_sync(TIMEOUT)
    assert chained[0].result(TIMEOUT).successful


def test_close_with_timeout_fails_what_cannot_be_sent_in_time():
    client = BlockingClient(fake())
    producer = KinesisProducer(config(), client=client)
    future = producer.add_user_record("s", "k", b"x")
    wait_until(lambda: client.waiting, TIMEOUT, message="request never started")
    producer.close(timeout=0.2)
    with pytest.raises(UserRecordFailed) as failure:
        future.result(0)
    assert failure.value.result.error_code == CLOSED
    client.release.set()


def test_internal_error_fails_pending_records_instead_of_hanging(monkeypatch):
    producer = KinesisProducer(config(), client=fake())

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(producer._pipeline, "complete", broken)
    future = producer.add_user_record("s", "k", b"x")
    with pytest.raises(UserRecordFailed) as failure:
        future.result(TIMEOUT)
    assert failure.value.result.error_code == PRODUCER_ERROR
    with pytest.raises(ProducerClosedError, match="internal error"):
        producer.add_user_record("s", "k", b"x")
    producer.close()


def test_whole_call_errors_are_counted_by_code():
    calls = {"n": 0}

    def first_two_fail(call: int) -> BaseException | None:
        calls["n"] = call
        return client_error("ServiceUnavailable") if call <= 2 else None

    client = FaultInjector(fake(shards=1), call_fault=first_two_fail)
    with KinesisProducer(config(), client=client) as producer:
        future = producer.add_user_record("s", "k", b"x")
        assert future.result(TIMEOUT).successful
        snapshot = producer.metrics()
    assert snapshot.errors_by_code() == {"ServiceUnavailable": 2}
    assert snapshot.sum("UserRecordsReceived") == 1
    assert snapshot.sum("UserRecordsPut", stream="s") == 1
