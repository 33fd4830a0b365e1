"""ShardFetcher against real local Kinesis servers (moto; kinesis-local for a true shard end).

Each test makes its own stream on the session's server. Faults (expired iterator, throttling)
are injected by a thin wrapper around the real client. The fetch tests run on both the boto3
parse and the fast orjson parse of GetRecords.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from daemon.errors import ShardEndedError, StreamNotFoundError
from daemon.kinesis_client import make_client
from daemon.retrieval import Batch, ShardFetcher
from daemon.sequence import ExtendedSequenceNumber
from protocol.aggregation import UserRecord, encode_aggregate
from tests import servers
from tests.support.streams import create_stream, wait_stream_active
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SHARD = "shardId-000000000000"
both_paths = pytest.mark.parametrize("fast", [False, True], ids=["boto3", "fast"])


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-aws") as pool:
        yield pool


@pytest.fixture
def moto_env(moto_server: servers.LocalServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Dummy credentials in the environment, so make_client's default chain finds them."""
    for key, value in servers.aws_env(moto_server.endpoint).items():
        monkeypatch.setenv(key, value)
    return moto_server.endpoint


@pytest.fixture
def admin(moto_env: str) -> Any:
    return servers.client("kinesis", moto_env)


@pytest.fixture
def stream(admin: Any) -> str:
    name = f"retrieval-{uuid.uuid4().hex[:10]}"
    create_stream(admin, name)
    return name


def put(admin: Any, stream: str, *payloads: bytes, key: str = "pk") -> list[str]:
    return [
        admin.put_record(StreamName=stream, Data=data, PartitionKey=key)["SequenceNumber"]
        for data in payloads
    ]


def put_aggregate(admin: Any, stream: str, payloads: list[bytes]) -> str:
    blob = encode_aggregate([UserRecord(f"k{i}", data) for i, data in enumerate(payloads)])
    return str(admin.put_record(StreamName=stream, Data=blob, PartitionKey="a")["SequenceNumber"])


def position(text: str) -> ExtendedSequenceNumber:
    """ "TRIM_HORIZON", "42" or "42/3" (sequence number / sub-sequence number)."""
    sequence_number, _, sub = text.partition("/")
    return ExtendedSequenceNumber(sequence_number, int(sub or 0))


def new_fetcher(
    client: Any, executor: ThreadPoolExecutor, stream: str, start: str = "TRIM_HORIZON", **kw: Any
) -> ShardFetcher:
    settings: dict[str, Any] = {
        "shard_id": SHARD,
        "start": position(start),
        "stream_name": stream,
        "max_records": 4,
        "idle_time_between_reads_s": 0.02,
        "min_call_interval_s": 0.0,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    settings.update(kw)
    return ShardFetcher(client, executor, **settings)


async def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll `predicate` on the loop (which keeps the fetcher running) until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def collect(fetcher: ShardFetcher, count: int, timeout: float = 15.0) -> list[Any]:
    """Records from successive batches until `count` of them have come."""
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {len(records)} of {count} records came")
        batch = await asyncio.wait_for(fetcher.next_batch(), remaining)
        assert not batch.shard_end, "the shard ended early"
        records.extend(batch.records)
    return records


async def until_shard_end(fetcher: ShardFetcher, timeout: float = 15.0) -> tuple[list[Any], Batch]:
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        batch = await asyncio.wait_for(fetcher.next_batch(), max(0.01, deadline - time.monotonic()))
        if batch.shard_end:
            return records, batch
        records.extend(batch.records)


def data_of(records: list[Any]) -> list[bytes]:
    return [base64.b64decode(r["data"]) for r in records]


def positions(records: list[Any]) -> list[tuple[str, int]]:
    return [(r["sequenceNumber"], r["subSequenceNumber"]) for r in records]


class FlakyKinesis:
    """The real client, except that chosen GetRecords calls (1-based) raise instead."""

    def __init__(self, client: Any, failures: dict[int, BaseException]) -> None:
        self.client = client
        self.failures = failures
        self.calls = 0
        self.iterator_requests: list[dict[str, Any]] = []

    def get_shard_iterator(self, **request: Any) -> Any:
        self.iterator_requests.append(request)
        return self.client.get_shard_iterator(**request)

    def get_records(self, **request: Any) -> Any:
        self.calls += 1
        failure = self.failures.get(self.calls)
        if failure is not None:
            raise failure
        return self.client.get_records(**request)


def client_error(code: str) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {}}
    response["ResponseMetadata"]["HTTPStatusCode"] = 400
    return ClientError(response, "GetRecords")


# -- starting positions ------------------------------------------------------------------


@both_paths
def test_trim_horizon_delivers_every_record_in_order_with_aggregates_expanded(
    fast: bool, moto_env: str, admin: Any, stream: str, executor: ThreadPoolExecutor
) -> None:
    first = put(admin, stream, *[b"a%d" % i for i in range(6)])
    aggregate_seq = put_aggregate(admin, stream, [b"x0", b"x1", b"x2"])
    last = put(admin, stream, *[b"b%d" % i for i in range(5)])
    client = make_client("kinesis", endpoint_url=moto_env, fast_get_records=fast)
    fetcher = new_fetcher(client, executor, stream)

    async def scenario() -> list[Any]:
        try:
            return await collect(fetcher, 14)
        finally:
            await fetcher.close()

    records = asyncio.run(scenario())
    assert data_of(records) == [b"a%d" % i for i in range(6)] + [b"x0", b"x1", b"x2"] + [
        b"b%d" % i for i in range(5)
    ]
    assert positions(records) == (
        [(s, 0) for s in first] + [(aggregate_seq, i) for i in range(3)] + [(s, 0) for s in last]
    )
    assert all(isinstance(r["approximateArrivalTimestamp"], int) for r in records)
    assert abs(records[0]["approximateArrivalTimestamp"] / 1000 - time.time()) < 300


@both_paths
def test_latest_delivers_only_records_written_after_the_start(
    fast: bool, moto_env: str, admin: Any, stream: str, executor: ThreadPoolExecutor
) -> None:
    put(admin, stream, b"old-1", b"old-2")
    client = make_client("kinesis", endpoint_url=moto_env, fast_get_records=fast)
    fetcher = new_fetcher(client, executor, stream, "LATEST")

    async def scenario() -> list[Any]:
        fetcher.start()
        # The iterator exists once the first GetRecords went out.
        await eventually(lambda: fetcher.stats.get_records_calls > 0)
        await asyncio.get_running_loop().run_in_executor(
            executor, lambda: put(admin, stream, b"new-1", b"new-2", b"new-3")
        )
        try:
            return await collect(fetcher, 3)
        finally:
            await fetcher.close()

    assert data_of(asyncio.run(scenario())) == [b"new-1", b"new-2", b"new-3"]


@both_paths
def test_at_timestamp_delivers_records_from_that_time_on(
    fast: bool, moto_env: str, admin: Any, stream: str, executor: ThreadPoolExecutor
) -> None:
    put(admin, stream, b"before-1", b"before-2")
    iterator = admin.get_shard_iterator(
        StreamName=stream, ShardId=SHARD, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    last_before = admin.get_records(ShardIterator=iterator)["Records"][-1]
    arrived = last_before["ApproximateArrivalTimestamp"].timestamp()
    wait_until(lambda: time.time() > arrived + 0.002, 2, interval=0.001)
    timestamp = time.time()
    wait_until(lambda: time.time() > timestamp + 0.002, 2, interval=0.001)
    put(admin, stream, b"after-1", b"after-2")
    client = make_client("kinesis", endpoint_url=moto_env, fast_get_records=fast)
    fetcher = new_fetcher(client, executor, stream, "AT_TIMESTAMP", at_timestamp=timestamp)

    async def scenario() -> list[Any]:
        try:
            return await collect(fetcher, 2)
        finally:
            await fetcher.close()

    assert data_of(asyncio.run(scenario())) == [b"after-1", b"after-2"]


@both_paths
def test_checkpoint_inside_an_aggregate_resumes_at_its_next_sub_record(
    fast: bool, moto_env: str, admin: Any, stream: str, executor: ThreadPoolExecutor
) -> None:
    put(admin, stream, b"done-1")
    seq = put_aggregate(admin, stream, [b"s0", b"s1", b"s2", b"s3", b"s4"])
    put(admin, stream, b"next")
    client = make_client("kinesis", endpoint_url=moto_env, fast_get_records=fast)
    fetcher = new_fetcher(client, executor, stream, f"{seq}/2")

    async def scenario() -> list[Any]:
        try:
            return await collect(fetcher, 3)
        finally:
            await fetcher.close()

    records = asyncio.run(scenario())
    assert data_of(records) == [b"s3", b"s4", b"next"]
    assert positions(records)[:2] == [(seq, 3), (seq, 4)]


# -- prefetch and faults -----------------------------------------------------------------


def test_prefetch_does_not_run_ahead_of_its_limits(
    moto_env: str, admin: Any, stream: str, executor: ThreadPoolExecutor
) -> None:
    put(admin, stream, *[b"r%02d" % i for i in range(20)])
    client = make_client("kinesis", endpoint_url=moto_env)
    fetcher = new_fetcher(client, executor, stream, max_records=2, prefetch_max_records=3)

    async def scenario() -> list[Any]:
        fetcher.start()
        # 2 records, then 4 >= 3: full after two calls, and it stays there.
        await eventually(lambda: fetcher.buffer_full)
        assert (fetcher.stats.get_records_calls, fetcher.stats.records_fetched) == (2, 4)
        first = (await fetcher.next_batch()).records
        await eventually(lambda: fetcher.buffer_full and fetcher.stats.get_records_calls == 3)
        assert fetcher.stats.records_fetched == 6
        assert fetcher.buffered_records == 4
        try:
            return first + await collect(fetcher, 18)
        finally:
            await fetcher.close()

    assert data_of(asyncio.run(scenario())) == [b"r%02d" % i for i in range(20)]


def test_expired_iterator_recovers_without_loss_or_duplicates(
    moto_env: str, admin: Any, stream: str, executor: ThreadPoolExecutor
) -> None:
    put(admin, stream, *[b"e%d" % i for i in range(10)])
    client = FlakyKinesis(
        make_client("kinesis", endpoint_url=moto_env),
        {2: client_error("ExpiredIteratorException")},
    )
    fetcher = new_fetcher(client, executor, stream, max_records=3)

    async def scenario() -> list[Any]:
        try:
            return await collect(fetcher, 10)
        finally:
            await fetcher.close()

    assert data_of(asyncio.run(scenario())) == [b"e%d" % i for i in range(10)]
    assert fetcher.stats.expired_iterators == 1
    resumed = client.iterator_requests[1]
    assert resumed["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"
    assert resumed["StartingSequenceNumber"] == "3"


def test_throttled_reads_back_off_and_then_deliver(
    moto_env: str, admin: Any, stream: str, executor: ThreadPoolExecutor
) -> None:
    put(admin, stream, b"t1", b"t2")
    throttled = client_error("ProvisionedThroughputExceededException")
    client = FlakyKinesis(
        make_client("kinesis", endpoint_url=moto_env), {1: throttled, 2: throttled}
    )
    fetcher = new_fetcher(client, executor, stream)

    async def scenario() -> list[Any]:
        try:
            return await collect(fetcher, 2)
        finally:
            await fetcher.close()

    assert data_of(asyncio.run(scenario())) == [b"t1", b"t2"]
    assert fetcher.stats.throttled == 2
    assert client.calls == 3


def test_missing_stream_is_raised_from_next_batch(
    moto_env: str, executor: ThreadPoolExecutor
) -> None:
    client = make_client("kinesis", endpoint_url=moto_env)
    fetcher = new_fetcher(client, executor, f"missing-{uuid.uuid4().hex[:8]}")

    async def scenario() -> None:
        with pytest.raises(StreamNotFoundError):
            await asyncio.wait_for(fetcher.next_batch(), 10)
        await fetcher.close()

    asyncio.run(scenario())


# -- shard end ---------------------------------------------------------------------------


def ending_sequence_number(admin: Any, stream: str, shard_id: str) -> str:
    shards = admin.list_shards(StreamName=stream)["Shards"]
    (shard,) = [s for s in shards if s["ShardId"] == shard_id]
    return str(shard["SequenceNumberRange"]["EndingSequenceNumber"])


@both_paths
def test_split_parent_on_moto_is_read_to_its_end(
    fast: bool, moto_env: str, admin: Any, stream: str, executor: ThreadPoolExecutor
) -> None:
    put(admin, stream, *[b"p%d" % i for i in range(6)])
    admin.split_shard(StreamName=stream, ShardToSplit=SHARD, NewStartingHashKey=str(2**127))
    wait_stream_active(admin, stream)
    ending = ending_sequence_number(admin, stream, SHARD)
    client = make_client("kinesis", endpoint_url=moto_env, fast_get_records=fast)
    fetcher = new_fetcher(client, executor, stream, ending_sequence_number=ending)

    async def scenario() -> tuple[list[Any], Batch]:
        result = await until_shard_end(fetcher)
        with pytest.raises(ShardEndedError):
            await asyncio.wait_for(fetcher.next_batch(), 5)
        await fetcher.close()
        return result

    records, end = asyncio.run(scenario())
    assert data_of(records) == [b"p%d" % i for i in range(6)]
    assert end.shard_end and end.records == [] and end.child_shards is None


def test_latest_on_a_closed_shard_on_moto_ends_at_once(
    moto_env: str, admin: Any, stream: str, executor: ThreadPoolExecutor
) -> None:
    put(admin, stream, b"gone")
    admin.split_shard(StreamName=stream, ShardToSplit=SHARD, NewStartingHashKey=str(2**127))
    wait_stream_active(admin, stream)
    ending = ending_sequence_number(admin, stream, SHARD)
    client = make_client("kinesis", endpoint_url=moto_env)
    fetcher = new_fetcher(client, executor, stream, "LATEST", ending_sequence_number=ending)

    async def scenario() -> tuple[list[Any], Batch]:
        try:
            return await until_shard_end(fetcher)
        finally:
            await fetcher.close()

    records, end = asyncio.run(scenario())
    assert records == [] and end.shard_end


@pytest.mark.parametrize(
    ("fast", "ending_known"),
    [(False, False), (True, True)],
    ids=["boto3-null-iterator", "fast-ending-known"],
)
def test_split_parent_on_kinesis_local_ends_with_child_shards(
    fast: bool,
    ending_known: bool,
    kinesis_local: servers.LocalServer,
    monkeypatch: pytest.MonkeyPatch,
    executor: ThreadPoolExecutor,
) -> None:
    for key, value in servers.aws_env(kinesis=kinesis_local.endpoint).items():
        monkeypatch.setenv(key, value)
    admin = servers.client("kinesis", kinesis_local.endpoint)
    stream = f"retrieval-{uuid.uuid4().hex[:10]}"
    create_stream(admin, stream)
    put(admin, stream, b"k1", b"k2", b"k3")
    admin.split_shard(StreamName=stream, ShardToSplit=SHARD, NewStartingHashKey=str(2**127))
    wait_stream_active(admin, stream)
    client = make_client("kinesis", endpoint_url=kinesis_local.endpoint, fast_get_records=fast)
    # Without the ending sequence number the end must come from the server's null iterator;
    # with it, the confirming call after the last record must still collect ChildShards.
    ending = ending_sequence_number(admin, stream, SHARD) if ending_known else None
    fetcher = new_fetcher(client, executor, stream, ending_sequence_number=ending)

    async def scenario() -> tuple[list[Any], Batch]:
        try:
            return await until_shard_end(fetcher)
        finally:
            await fetcher.close()

    records, end = asyncio.run(scenario())
    assert data_of(records) == [b"k1", b"k2", b"k3"]
    assert end.shard_end
    assert end.child_shards is not None
    assert len(end.child_shards) == 2
    assert all(child["ParentShards"] == [SHARD] for child in end.child_shards)


def test_fast_client_passes_data_on_as_base64_text(moto_env: str, admin: Any, stream: str) -> None:
    put(admin, stream, b"\x00\xffraw")
    fast: Any = make_client("kinesis", endpoint_url=moto_env, fast_get_records=True)
    iterator = fast.get_shard_iterator(
        StreamName=stream, ShardId=SHARD, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    (record,) = fast.get_records(ShardIterator=iterator)["Records"]
    assert record["Data"] == base64.b64encode(b"\x00\xffraw").decode()
    assert isinstance(record["ApproximateArrivalTimestamp"], float)


def test_fast_client_raises_get_records_errors_as_boto3_does(
    moto_env: str, admin: Any, stream: str
) -> None:
    fast: Any = make_client("kinesis", endpoint_url=moto_env, fast_get_records=True)
    iterator = fast.get_shard_iterator(
        StreamName=stream, ShardId=SHARD, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    admin.delete_stream(StreamName=stream)
    with pytest.raises(ClientError) as raised:
        fast.get_records(ShardIterator=iterator)
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"
