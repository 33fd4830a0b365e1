"""The producer's pipeline without threads: a harness drives poll/complete with an explicit clock
against the in-memory FakeKinesis (with FaultInjector where failures are wanted)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from producer.clients import error_code_and_message
from producer.config import ProducerConfig
from producer.metrics import Metrics
from producer.pipeline import Pipeline, result_of
from producer.records import Entry, new_entry
from producer.results import EXPIRED, WRONG_SHARD, UserRecordResult
from producer.retry import Backoff
from producer.shard_map import fetch_shard_map
from producer.testing import FakeKinesis, FaultInjector, client_error
from protocol.aggregation import UserRecord, aggregated_size, all_in_hash_range, deaggregate


def md5_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


class Harness:
    def __init__(self, shards: int = 1, client: Any = None, map_loaded: bool = True, **config: Any):
        config.setdefault("metrics_level", "none")
        self.config = ProducerConfig(**config)
        self.kinesis = FakeKinesis()
        self.kinesis.create_stream("s", shards)
        self.client = client(self.kinesis) if client else self.kinesis
        # Deterministic back-off: always the nominal delay's upper end.
        backoff = Backoff(
            self.config.retry_backoff_min, self.config.retry_backoff_max, lambda a, b: b
        )
        self.metrics = Metrics()
        self.pipeline = Pipeline(self.config, self.metrics, backoff)
        self.seq = 0
        self.results: dict[int, UserRecordResult] = {}
        self.requests: list[list[dict[str, Any]]] = []
        if map_loaded:
            self.load_map(0.0)

    def load_map(self, now: float) -> None:
        self.pipeline.map_loaded("s", fetch_shard_map(self.client, "s"), now)

    def add(
        self, pk: str, data: bytes = b"x" * 10, now: float = 0.0, ehk: str | None = None
    ) -> int:
        self.seq += 1
        config = self.config
        entry = new_entry(
            "s",
            pk,
            data,
            ehk,
            config.max_user_record_size,
            None,
            now,
            min(config.record_max_buffered_time, config.record_ttl) / 1000,
            config.record_ttl / 1000,
            self.seq,
        )
        self.pipeline.admit(entry)
        return self.seq

    def step(self, now: float, free: int = 1000, refresh: bool = False) -> int:
        """One pump round at ``now``; every planned request is answered at once.
        Returns the number of requests sent."""
        plan = self.pipeline.poll(now, free)
        self._collect(plan.resolutions)
        for stream in plan.refreshes:
            if refresh:
                self.pipeline.map_loaded(stream, fetch_shard_map(self.client, stream), now)
            else:
                self.pipeline.map_loaded(stream, None, now)
        for request in plan.requests:
            items = [kr.request_entry() for kr in request.krs]
            self.requests.append(items)
            response = error = None
            try:
                response = self.client.put_records(StreamName="s", Records=items)
            except Exception as failure:
                error = error_code_and_message(failure)
            self._collect(self.pipeline.complete(request, response, error, now, now + 0.001))
        return len(plan.requests)

    def _collect(self, entries: list[Entry]) -> None:
        for entry in entries:
            assert entry.seq not in self.results, "an entry was resolved twice"
            self.results[entry.seq] = result_of(entry)

    def run(self, until: float, tick: float = 0.01, start: float = 0.0, **kw: Any) -> None:
        now = start
        while now <= until:
            self.step(now, **kw)
            now = round(now + tick, 6)


# -- aggregation per shard ---------------------------------------------------------------------


def test_aggregates_never_mix_shards():
    h = Harness(shards=4)
    for i in range(400):
        h.add(f"key-{i}")
    h.run(0.2)
    assert len(h.results) == 400 and all(r.successful for r in h.results.values())
    for shard_id in h.kinesis.shard_ids("s"):
        low, high = h.kinesis.shard_range("s", shard_id)
        for stored in h.kinesis.records("s", shard_id):
            subs = deaggregate(stored.data)
            assert subs is not None and len(subs) > 1
            assert all(low <= md5_key(sub.partition_key) <= high for sub in subs)


def test_sub_sequence_numbers_are_positions_in_the_aggregate():
    h = Harness()
    seqs = [h.add(f"k{i}", f"d{i}".encode()) for i in range(5)]
    h.run(0.2)
    (stored,) = h.kinesis.records("s")
    subs = deaggregate(stored.data) or []
    assert [s.data for s in subs] == [f"d{i}".encode() for i in range(5)]
    for index, seq in enumerate(seqs):
        result = h.results[seq]
        assert result.sequence_number == stored.sequence_number
        assert result.sub_sequence_number == index
        assert result.shard_id == "shardId-000000000000"


def test_record_is_held_until_its_deadline_then_sent():
    h = Harness(record_max_buffered_time=100)
    seq = h.add("k", now=0.0)
    assert h.step(0.05) == 0
    assert h.step(0.0999) == 0
    assert h.step(0.1) == 1
    assert h.results[seq].successful


def test_aggregate_closes_on_count_and_waits_for_the_collection():
    h = Harness(aggregation_max_count=3, record_max_buffered_time=1000)
    for i in range(7):
        h.add(f"k{i}")
    assert h.pipeline.poll(0.0, 10).requests == []  # closed aggregates still wait for a fill
    h.pipeline.flush(0.0)
    assert h.step(0.0) == 1
    counts = sorted(len(deaggregate(r.data) or [r]) for r in h.kinesis.records("s"))
    assert counts == [1, 3, 3]


def test_aggregate_size_never_exceeds_aggregation_max_size():
    h = Harness(aggregation_max_size=1000)
    for i in range(200):
        h.add(f"k{i}", bytes(37))
    h.run(0.2)
    stored = h.kinesis.records("s")
    assert all(len(r.data) <= 1000 for r in stored)
    # Exact accounting: packing the next record would have passed the limit.
    assert all(len(r.data) + 37 + 2 + 2 + 5 > 1000 for r in stored[:-1])


def test_record_bigger_than_the_aggregate_limit_goes_alone_and_raw():
    h = Harness(aggregation_max_size=64)
    seq = h.add("big", bytes(500))
    h.run(0.2)
    (stored,) = h.kinesis.records("s")
    assert stored.data == bytes(500) and stored.partition_key == "big"
    assert h.results[seq].sub_sequence_number == 0


def test_aggregation_disabled_sends_every_record_raw():
    h = Harness(shards=2, aggregation_enabled=False)
    for i in range(10):
        h.add(f"k{i}", b"raw")
    h.run(0.2)
    stored = h.kinesis.records("s")
    assert len(stored) == 10 and all(r.data == b"raw" for r in stored)


def test_explicit_hash_key_steers_the_record_and_is_kept_in_the_aggregate():
    h = Harness(shards=2)
    high = str((1 << 128) - 5)
    h.add("a", b"1", ehk=high)
    h.add("b", b"2", ehk=high)
    h.run(0.2)
    (stored,) = h.kinesis.records("s", "shardId-000000000001")
    assert [s.explicit_hash_key for s in deaggregate(stored.data) or []] == [high, high]


# -- collection ----------------------------------------------------------------------------------


def test_put_records_request_holds_at_most_collection_max_count_records():
    h = Harness(aggregation_enabled=False, collection_max_count=7, rate_limit=100000)
    for i in range(20):
        h.add(f"k{i}")
    h.run(0.2)
    assert [len(r) for r in h.requests] == [7, 7, 6]


def test_put_records_request_holds_at_most_collection_max_size_bytes():
    h = Harness(aggregation_enabled=False, collection_max_size=60000, rate_limit=100000)
    for i in range(10):
        h.add(f"k{i}", bytes(20000))
    h.run(0.2)
    assert all(sum(len(i["Data"]) + len(i["PartitionKey"]) for i in r) <= 60000 for r in h.requests)
    assert sum(len(r) for r in h.requests) == 10


def test_full_collection_is_sent_before_any_deadline():
    h = Harness(aggregation_enabled=False, collection_max_count=5, record_max_buffered_time=10000)
    for i in range(5):
        h.add(f"k{i}")
    assert h.step(0.0) == 1


def test_no_more_requests_than_free_connections():
    h = Harness(aggregation_enabled=False, collection_max_count=1, rate_limit=100000)
    for i in range(5):
        h.add(f"k{i}")
    plan = h.pipeline.poll(1.0, 2)
    assert len(plan.requests) == 2
    assert h.pipeline.in_flight == 2


def test_rate_limiter_holds_a_hot_shard_back():
    # 10% of 1000 records/s: the bucket holds 100 records.
    h = Harness(aggregation_enabled=False, rate_limit=10)
    for i in range(150):
        h.add(f"k{i}")
    h.step(0.1)
    assert len(h.results) == 100
    h.run(0.7, start=0.2)
    assert len(h.results) == 150


# -- retries, expiry, failures -----------------------------------------------------------------


def throttle_first(calls: int):
    def fault(call: int, item: dict[str, Any]) -> str | None:
        return "ProvisionedThroughputExceededException" if call <= calls else None

    return fault


def test_throttled_record_is_retried_after_a_back_off_and_counted():
    h = Harness(client=lambda k: FaultInjector(k, throttle_first(1)), retry_backoff_min=100)
    seq = h.add("k")
    h.step(0.1)
    assert seq not in h.results
    h.step(0.15)  # back-off is 100 ms from the failure at 0.101
    assert seq not in h.results
    h.step(0.21)
    result = h.results[seq]
    assert result.successful
    assert [a.error_code for a in result.attempts] == [
        "ProvisionedThroughputExceededException",
        None,
    ]
    snapshot = h.metrics.snapshot()
    assert snapshot.errors_by_code() == {"ProvisionedThroughputExceededException": 1}
    assert snapshot.sum("RetriesPerRecord") == 1


def test_back_off_grows_between_retries():
    h = Harness(client=lambda k: FaultInjector(k, throttle_first(3)), retry_backoff_min=100)
    seq = h.add("k")
    h.run(2.0)
    starts = []
    elapsed = 0.0
    for attempt in h.results[seq].attempts:
        elapsed += attempt.delay_ms
        starts.append(round(elapsed))
        elapsed += attempt.duration_ms
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps[0] >= 100 and gaps[1] >= 200 and gaps[2] >= 400


def test_record_that_keeps_failing_expires_with_code_expired_after_record_ttl():
    h = Harness(client=lambda k: FaultInjector(k, throttle_first(10**9)), record_ttl=500)
    seq = h.add("k")
    h.run(0.49)
    assert seq not in h.results
    h.run(1.0, start=0.5)
    result = h.results[seq]
    assert not result.successful and result.error_code == EXPIRED
    assert len(result.attempts) >= 3
    assert h.metrics.snapshot().sum("UserRecordExpired") == 1
    assert h.pipeline.outstanding_records == 0


def test_record_waiting_behind_the_rate_limit_expires_too():
    h = Harness(aggregation_enabled=False, rate_limit=1, record_ttl=200)
    seqs = [h.add(f"k{i}") for i in range(30)]
    h.run(0.4)
    codes = [h.results[s].error_code for s in seqs]
    assert codes.count(EXPIRED) >= 15 and None in codes
    assert h.pipeline.outstanding_records == 0


def test_permanent_error_fails_at_once():
    h = Harness(client=lambda k: FaultInjector(k, lambda c, i: "ValidationException"))
    seq = h.add("k")
    h.step(0.1)
    assert h.results[seq].error_code == "ValidationException"
    assert len(h.results[seq].attempts) == 1


def test_fail_if_throttled_fails_a_throttled_record_without_retry():
    h = Harness(client=lambda k: FaultInjector(k, throttle_first(1)), fail_if_throttled=True)
    seq = h.add("k")
    h.step(0.1)
    assert h.results[seq].error_code == "ProvisionedThroughputExceededException"


def test_whole_call_failure_retries_every_record_in_it():
    def boom(call: int) -> BaseException | None:
        return client_error("InternalFailure") if call == 1 else None

    h = Harness(client=lambda k: FaultInjector(k, call_fault=boom), aggregation_enabled=False)
    seqs = [h.add(f"k{i}") for i in range(3)]
    h.run(0.5)
    assert all(h.results[s].successful for s in seqs)
    assert all(h.results[s].attempts[0].error_code == "InternalFailure" for s in seqs)


def test_partial_failure_retries_only_the_failed_records():
    failed_keys = {"k1", "k3"}

    def fault(call: int, item: dict[str, Any]) -> str | None:
        return "InternalFailure" if call == 1 and item["PartitionKey"] in failed_keys else None

    h = Harness(client=lambda k: FaultInjector(k, fault), aggregation_enabled=False)
    seqs = {f"k{i}": h.add(f"k{i}") for i in range(5)}
    h.run(0.5)
    for key, seq in seqs.items():
        attempts = h.results[seq].attempts
        assert len(attempts) == (2 if key in failed_keys else 1)
    assert len(h.kinesis.records("s")) == 5


# -- shard map -----------------------------------------------------------------------------------


def test_without_a_shard_map_records_go_raw_then_aggregate_once_it_arrives():
    h = Harness(shards=2, map_loaded=False)
    for i in range(4):
        h.add(f"early{i}")
    assert h.step(0.0, refresh=False) == 0  # refresh planned and failed; records wait
    h.run(0.2, start=0.1)
    early = h.kinesis.records("s")
    assert len(early) == 4 and all(deaggregate(r.data) is None for r in early)
    h.load_map(0.3)
    for i in range(50):
        h.add(f"late{i}", now=0.3)
    h.run(0.5, start=0.3)
    assert len(h.results) == 54
    assert len(h.kinesis.records("s")) == 6  # one aggregate per shard


def test_records_wait_for_the_first_map_fetch_instead_of_going_raw():
    h = Harness(shards=2, map_loaded=False, aggregation_enabled=True, collection_max_count=5)
    for i in range(40):
        h.add(f"k{i}")
    plan = h.pipeline.poll(0.5, 10)  # the fetch starts; nothing goes while it runs
    assert plan.refreshes == ["s"] and plan.requests == []
    h.load_map(0.5)
    h.run(1.0, start=0.5)
    assert len(h.results) == 40
    assert len(h.kinesis.records("s")) == 2  # one aggregate per shard, nothing raw


def test_flush_before_the_map_arrives_still_sends_at_once_after_it():
    h = Harness(shards=2, map_loaded=False, record_max_buffered_time=600000)
    for i in range(10):
        h.add(f"k{i}")
    h.pipeline.flush(0.0)
    h.load_map(0.1)
    assert h.step(0.1) >= 1
    assert len(h.results) == 10


def test_map_arriving_repacks_records_that_waited_for_it():
    h = Harness(shards=2, map_loaded=False, record_max_buffered_time=1000)
    for i in range(20):
        h.add(f"k{i}")
    h.load_map(0.01)
    h.run(1.1)
    assert len(h.results) == 20
    assert len(h.kinesis.records("s")) == 2


def test_aggregate_landing_on_a_shard_that_does_not_cover_all_its_keys_is_retried_whole():
    h = Harness(shards=1)
    # Split after the map was read: the producer still predicts the parent.
    h.kinesis.split_shard("s", "shardId-000000000000", 1 << 127)
    low = [f"k{i}" for i in range(200) if md5_key(f"k{i}") < (1 << 127)][:3]
    high = [f"k{i}" for i in range(200) if md5_key(f"k{i}") >= (1 << 127)][:3]
    keys = [low[0], high[0], low[1], high[1], low[2], high[2]]
    seqs = {key: h.add(key) for key in keys}
    h.step(0.1, refresh=True)
    # The aggregate landed on the low child, which a KCL consumer would drop whole.
    assert h.results == {}
    # The map may be read again 1 s after the last read; until then retries land badly too.
    h.run(3.0, start=0.11, refresh=True)
    by_number: dict[tuple[str | None, str | None], Any] = {
        (shard_id, stored.sequence_number): stored
        for shard_id in h.kinesis.shard_ids("s")
        for stored in h.kinesis.records("s", shard_id)
    }
    for key in keys:
        result = h.results[seqs[key]]
        assert result.successful and result.attempts[0].error_code == WRONG_SHARD
        stored = by_number[(result.shard_id, result.sequence_number)]
        subs = deaggregate(stored.data)
        lo, hi = h.kinesis.shard_range("s", str(result.shard_id))
        assert subs is not None and all_in_hash_range(subs, lo, hi)
        assert subs[result.sub_sequence_number or 0].partition_key == key


def test_failed_map_fetch_is_retried_with_back_off():
    h = Harness(map_loaded=False)
    h.add("k")
    schedule = h.pipeline._streams["s"].refresh
    h.step(0.0)
    first_delay = schedule.not_before
    assert schedule.failures == 1
    h.step(first_delay)
    assert schedule.failures == 2 and schedule.not_before - first_delay > first_delay


# -- ordering ------------------------------------------------------------------------------------


def test_same_key_records_keep_add_order_when_an_earlier_one_is_retried():
    def fault(call: int, item: dict[str, Any]) -> str | None:
        return "InternalFailure" if call == 1 else None

    h = Harness(client=lambda k: FaultInjector(k, fault), aggregation_enabled=False)
    seqs = [h.add("same", f"{i}".encode()) for i in range(3)]
    h.step(0.1)  # all three were in the first request? no: only the first may go
    assert len(h.requests[0]) == 1
    h.run(1.0, start=0.11)
    numbers = [int(h.results[s].sequence_number or "") for s in seqs]
    assert numbers == sorted(numbers)
    assert [r.data for r in h.kinesis.records("s")] == [b"0", b"1", b"2"]


def test_without_preserve_order_same_key_records_share_a_request():
    h = Harness(aggregation_enabled=False, preserve_order=False)
    for i in range(3):
        h.add("same", f"{i}".encode())
    h.step(0.1)
    assert len(h.requests[0]) == 3


def test_different_keys_are_not_held_back_by_a_retry():
    def fault(call: int, item: dict[str, Any]) -> str | None:
        return "InternalFailure" if item["PartitionKey"] == "slow" and call == 1 else None

    h = Harness(client=lambda k: FaultInjector(k, fault), aggregation_enabled=False)
    slow = h.add("slow")
    h.step(0.1)
    fast = h.add("fast", now=0.1)
    h.step(0.2)  # slow is still backing off
    assert h.results[fast].successful and slow not in h.results


# -- accounting and shutdown ---------------------------------------------------------------------


def test_outstanding_records_and_bytes_return_to_zero():
    h = Harness(shards=3)
    for i in range(50):
        h.add(f"k{i}", bytes(100))
    assert h.pipeline.outstanding_records == 50
    assert h.pipeline.outstanding_bytes == sum(100 + len(f"k{i}") for i in range(50))
    h.run(0.3)
    assert (h.pipeline.outstanding_records, h.pipeline.outstanding_bytes) == (0, 0)


def test_has_room_respects_record_and_byte_limits():
    h = Harness(max_outstanding_records=2, max_outstanding_bytes=1000)
    assert h.pipeline.has_room(5000)  # nothing outstanding: one big record may go alone
    h.add("a", bytes(400))
    assert h.pipeline.has_room(500) and not h.pipeline.has_room(700)
    h.add("b", bytes(10))
    assert not h.pipeline.has_room(1)


def test_abandon_fails_buffered_and_in_flight_records_once():
    h = Harness(aggregation_enabled=False, collection_max_count=1)
    first = h.add("a")
    second = h.add("b")
    plan = h.pipeline.poll(0.2, 1)
    assert len(plan.requests) == 1
    abandoned = h.pipeline.abandon("ProducerClosed", "closing", 0.3)
    assert sorted(e.seq for e in abandoned) == [first, second]
    late = h.pipeline.complete(
        plan.requests[0], {"Records": [{"SequenceNumber": "1", "ShardId": "x"}]}, None, 0.2, 0.4
    )
    assert late == []
    assert h.pipeline.outstanding_records == 0


def test_aggregated_size_matches_what_was_sent():
    h = Harness()
    records = [UserRecord(f"k{i}", bytes(i)) for i in range(30)]
    for r in records:
        h.add(r.partition_key, r.data)
    h.run(0.2)
    (stored,) = h.kinesis.records("s")
    assert len(stored.data) == aggregated_size(records)


@pytest.mark.parametrize("granularity_shards", [1, 3])
def test_metrics_count_user_and_kinesis_records(granularity_shards: int):
    h = Harness(shards=granularity_shards)
    for i in range(30):
        h.add(f"k{i}", bytes(10))
    h.run(0.2)
    snapshot = h.metrics.snapshot()
    assert snapshot.sum("UserRecordsPut") == 30
    assert snapshot.sum("UserRecordsDataPut") == 300
    assert snapshot.sum("KinesisRecordsPut") == len(h.kinesis.records("s"))
    assert snapshot.sum("UserRecordsPut", stream="s") == 30
    per_shard = sum(
        snapshot.sum("UserRecordsPut", stream="s", shard=shard)
        for shard in h.kinesis.shard_ids("s")
    )
    assert per_shard == 30
