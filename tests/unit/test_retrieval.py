"""Pure parts of record retrieval: response conversion, iterators, pacing, shard end, errors,
the fast GetRecords parse; and the fetcher's buffering driven by a scripted fake client."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from structlog.testing import capture_logs

from daemon.conversion import arrival_millis, convert_records
from daemon.errors import (
    ConfigError,
    DependencyError,
    InvalidStateError,
    ShardEndedError,
    StreamNotFoundError,
)
from daemon.fast_records import MAGIC_BASE64_PREFIX, base64_decoded_size
from daemon.kinesis_client import (
    ErrorKind,
    _parse_get_records,
    classify_error,
    fatal_error,
    is_get_records_body,
    make_client,
)
from daemon.retrieval import (
    Batch,
    EndCheck,
    ShardFetcher,
    check_shard_end,
    iterator_request,
    next_call_delay,
)
from daemon.sequence import ExtendedSequenceNumber
from protocol.aggregation import MAGIC, UserRecord, encode_aggregate

ARRIVAL = datetime.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=datetime.timezone.utc)
ARRIVAL_MS = 1714564800123


def hash_of(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode()).digest(), "big")


def record(seq: str, data: bytes, key: str = "pk", *, fast: bool = False) -> dict[str, Any]:
    """A GetRecords record as boto3 returns it, or as the fast path does."""
    if fast:
        return {
            "SequenceNumber": seq,
            "Data": base64.b64encode(data).decode(),
            "PartitionKey": key,
            "ApproximateArrivalTimestamp": ARRIVAL_MS / 1000,
        }
    return {
        "SequenceNumber": seq,
        "Data": data,
        "PartitionKey": key,
        "ApproximateArrivalTimestamp": ARRIVAL,
    }


def aggregate(*items: tuple[str, bytes]) -> bytes:
    return encode_aggregate([UserRecord(key, data) for key, data in items])


def positions(records: list[Any]) -> list[tuple[str, int]]:
    return [(r["sequenceNumber"], r["subSequenceNumber"]) for r in records]


def payloads(records: list[Any]) -> list[bytes]:
    return [base64.b64decode(r["data"]) for r in records]


both_paths = pytest.mark.parametrize("fast", [False, True], ids=["boto3", "fast"])


# -- arrival times and sizes -----------------------------------------------------------


def test_arrival_datetime_becomes_epoch_millis() -> None:
    assert arrival_millis(ARRIVAL) == ARRIVAL_MS
    elsewhere = datetime.timezone(datetime.timedelta(hours=-7))
    assert arrival_millis(ARRIVAL.astimezone(elsewhere)) == ARRIVAL_MS


def test_naive_arrival_datetime_is_taken_as_utc() -> None:
    assert arrival_millis(ARRIVAL.replace(tzinfo=None)) == ARRIVAL_MS


def test_arrival_epoch_seconds_become_millis_without_float_truncation() -> None:
    assert arrival_millis(1714564800.123) == ARRIVAL_MS
    assert arrival_millis(1714564800) == 1714564800000


def test_missing_arrival_becomes_zero() -> None:
    assert arrival_millis(None) == 0


@pytest.mark.parametrize("size", range(0, 9))
def test_base64_decoded_size_matches_the_decoded_length(size: int) -> None:
    text = base64.b64encode(bytes(range(size))).decode()
    assert base64_decoded_size(text) == size


def test_every_aggregate_base64_starts_with_the_magic_prefix() -> None:
    for next_byte in range(256):
        text = base64.b64encode(MAGIC + bytes((next_byte, 0, 0))).decode()
        assert text.startswith(MAGIC_BASE64_PREFIX)
        # "84mawg" only holds when the byte after the magic is below 0x10.
        assert text.startswith("84mawg") == (next_byte < 0x10)


def test_a_real_aggregate_starts_with_84mawg() -> None:
    assert base64.b64encode(aggregate(("a", b"x"), ("b", b"y"))).decode().startswith("84mawg")


# -- convert_records -------------------------------------------------------------------


@both_paths
def test_plain_records_pass_through_as_base64_with_sub_zero(fast: bool) -> None:
    raw = [record("1", b"hello", "k1", fast=fast), record("2", b"", "k2", fast=fast)]
    out = convert_records(raw)
    assert out.records == [
        {
            "data": base64.b64encode(b"hello").decode(),
            "partitionKey": "k1",
            "sequenceNumber": "1",
            "approximateArrivalTimestamp": ARRIVAL_MS,
            "subSequenceNumber": 0,
            "action": "record",
        },
        {
            "data": "",
            "partitionKey": "k2",
            "sequenceNumber": "2",
            "approximateArrivalTimestamp": ARRIVAL_MS,
            "subSequenceNumber": 0,
            "action": "record",
        },
    ]
    assert out.byte_size == 5
    assert out.last_position == ExtendedSequenceNumber("2")
    assert out.last_sequence_number == "2"


def test_fast_path_data_string_is_passed_on_as_the_same_object() -> None:
    raw = [record("1", b"payload", fast=True)]
    assert convert_records(raw).records[0]["data"] is raw[0]["Data"]


@both_paths
def test_aggregate_becomes_sub_records_sharing_the_sequence_number(fast: bool) -> None:
    blob = aggregate(("a", b"x"), ("b", b"yy"), ("a", b"zzz"))
    out = convert_records([record("7", b"first", fast=fast), record("9", blob, "a", fast=fast)])
    assert positions(out.records) == [("7", 0), ("9", 0), ("9", 1), ("9", 2)]
    assert payloads(out.records) == [b"first", b"x", b"yy", b"zzz"]
    assert [r["partitionKey"] for r in out.records] == ["pk", "a", "b", "a"]
    assert out.byte_size == 5 + 1 + 2 + 3
    assert out.last_position == ExtendedSequenceNumber("9", 2)


@both_paths
def test_data_with_the_magic_but_a_bad_digest_passes_through_unchanged(fast: bool) -> None:
    blob = bytearray(aggregate(("a", b"x"), ("b", b"y")))
    blob[-1] ^= 0xFF
    out = convert_records([record("1", bytes(blob), fast=fast)])
    assert positions(out.records) == [("1", 0)]
    assert payloads(out.records) == [bytes(blob)]


@both_paths
def test_checkpoint_sub_sequence_keeps_only_later_sub_records(fast: bool) -> None:
    blob = aggregate(*[(f"k{i}", bytes([i])) for i in range(6)])
    raw = [record("5", blob, fast=fast), record("6", b"after", fast=fast)]
    out = convert_records(raw, skip_through=ExtendedSequenceNumber("5", 3))
    assert positions(out.records) == [("5", 4), ("5", 5), ("6", 0)]
    assert out.last_sequence_number == "6"


@both_paths
def test_checkpoint_at_a_plain_record_drops_it_and_everything_before(fast: bool) -> None:
    raw = [record(s, s.encode(), fast=fast) for s in ("3", "4", "10", "11")]
    out = convert_records(raw, skip_through=ExtendedSequenceNumber("4"))
    assert positions(out.records) == [("10", 0), ("11", 0)]


def test_sequence_numbers_compare_as_integers_when_skipping() -> None:
    raw = [record("9", b"a"), record("10", b"b")]
    out = convert_records(raw, skip_through=ExtendedSequenceNumber("9"))
    assert positions(out.records) == [("10", 0)]


def test_everything_at_or_below_the_checkpoint_leaves_no_position_but_a_last_fetched() -> None:
    blob = aggregate(("a", b"x"), ("b", b"y"))
    out = convert_records([record("5", blob)], skip_through=ExtendedSequenceNumber("5", 1))
    assert out.records == []
    assert out.last_position is None
    assert out.last_sequence_number == "5"


@both_paths
def test_aggregate_with_a_sub_record_outside_the_hash_range_is_dropped_whole(fast: bool) -> None:
    inside, outside = sorted(["alpha", "beta"], key=hash_of)
    hash_range = (0, hash_of(inside))
    blob = aggregate((inside, b"in"), (outside, b"out"))
    kept = aggregate((inside, b"in-only"))
    raw = [record("1", blob, fast=fast), record("2", kept, fast=fast)]
    out = convert_records(raw, hash_range=hash_range)
    assert positions(out.records) == [("2", 0)]
    assert payloads(out.records) == [b"in-only"]
    assert out.dropped_sequence_numbers == ["1"]
    assert out.last_sequence_number == "2"


def test_plain_records_outside_the_hash_range_are_not_dropped() -> None:
    out = convert_records([record("1", b"plain", "anything")], hash_range=(0, 0))
    assert positions(out.records) == [("1", 0)]


def test_explicit_hash_key_inside_the_range_keeps_the_aggregate() -> None:
    blob = encode_aggregate([UserRecord("a", b"x", "5"), UserRecord("b", b"y", "6")])
    out = convert_records([record("1", blob)], hash_range=(5, 6))
    assert positions(out.records) == [("1", 0), ("1", 1)]


def test_missing_partition_key_becomes_empty() -> None:
    raw = [{"SequenceNumber": "1", "Data": b"x", "ApproximateArrivalTimestamp": ARRIVAL}]
    assert convert_records(raw).records[0]["partitionKey"] == ""


# -- iterators, pacing, shard end ------------------------------------------------------

STREAM = {"StreamName": "s"}


def test_checkpoint_iterator_is_at_its_sequence_number() -> None:
    request = iterator_request(STREAM, "shard-1", ExtendedSequenceNumber("42", 3))
    assert request == {
        "StreamName": "s",
        "ShardId": "shard-1",
        "ShardIteratorType": "AT_SEQUENCE_NUMBER",
        "StartingSequenceNumber": "42",
    }


@pytest.mark.parametrize("sentinel", ["TRIM_HORIZON", "LATEST"])
def test_sentinels_map_to_their_iterator_types(sentinel: str) -> None:
    request = iterator_request({"StreamARN": "arn:x"}, "s1", ExtendedSequenceNumber(sentinel))
    assert request == {"StreamARN": "arn:x", "ShardId": "s1", "ShardIteratorType": sentinel}


def test_at_timestamp_sends_the_timestamp() -> None:
    request = iterator_request(
        STREAM, "s1", ExtendedSequenceNumber("AT_TIMESTAMP"), at_timestamp=1700000000.5
    )
    assert request["ShardIteratorType"] == "AT_TIMESTAMP"
    assert request["Timestamp"] == 1700000000.5


def test_at_timestamp_without_a_timestamp_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="initialPositionInStreamExtended"):
        iterator_request(STREAM, "s1", ExtendedSequenceNumber("AT_TIMESTAMP"))


@pytest.mark.parametrize("start", ["TRIM_HORIZON", "LATEST", "77"])
def test_after_a_fetched_record_the_iterator_resumes_after_it(start: str) -> None:
    request = iterator_request(
        STREAM, "s1", ExtendedSequenceNumber(start), after_sequence_number="99"
    )
    assert request["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"
    assert request["StartingSequenceNumber"] == "99"


def test_no_iterator_starts_at_shard_end() -> None:
    with pytest.raises(ValueError):
        iterator_request(STREAM, "s1", ExtendedSequenceNumber("SHARD_END"))


def test_first_call_goes_out_at_once() -> None:
    assert next_call_delay(100.0, None, None, True, 1.0) == 0.0


def test_behind_the_next_call_waits_only_for_the_service_limit() -> None:
    assert next_call_delay(100.05, 100.0, 100.04, False, 1.5, 0.2) == pytest.approx(0.15)
    assert next_call_delay(100.5, 100.0, 100.4, False, 1.5, 0.2) == 0.0


def test_caught_up_the_next_call_waits_idle_time_after_the_last_returned() -> None:
    assert next_call_delay(100.1, 100.0, 100.05, True, 1.0, 0.2) == pytest.approx(0.95)


def test_idle_time_shorter_than_the_service_limit_still_respects_the_limit() -> None:
    assert next_call_delay(100.0, 100.0, 100.0, True, 0.0, 0.2) == pytest.approx(0.2)


def end(**overrides: Any) -> EndCheck:
    arguments: dict[str, Any] = {
        "next_iterator": "it",
        "ending_sequence_number": None,
        "last_fetched": None,
        "got_records": True,
        "millis_behind_latest": 5,
        "confirming": False,
        "iterator_unchanged": False,
    }
    arguments.update(overrides)
    return check_shard_end(**arguments)


def test_null_next_iterator_is_shard_end() -> None:
    assert end(next_iterator=None) is EndCheck.ENDED
    assert end(next_iterator=None, ending_sequence_number="9", last_fetched="3") is EndCheck.ENDED


def test_open_shard_never_ends_while_the_iterator_continues() -> None:
    assert end(got_records=False, millis_behind_latest=0) is EndCheck.OPEN
    assert end(last_fetched="1000") is EndCheck.OPEN


def test_closed_shard_read_to_its_ending_sequence_asks_for_one_confirming_call() -> None:
    assert end(ending_sequence_number="10", last_fetched="10") is EndCheck.CONFIRM
    assert end(ending_sequence_number="10", last_fetched="11") is EndCheck.CONFIRM
    assert end(ending_sequence_number="10", last_fetched="9") is EndCheck.OPEN


def test_the_confirming_call_ends_a_closed_shard_whatever_it_returns() -> None:
    assert end(ending_sequence_number="10", last_fetched="10", confirming=True) is EndCheck.ENDED


def test_closed_shard_empty_caught_up_and_standing_still_has_ended() -> None:
    closed = {"ending_sequence_number": "10", "last_fetched": None, "got_records": False}
    assert end(**closed, millis_behind_latest=0, iterator_unchanged=True) is EndCheck.ENDED
    assert end(**closed, millis_behind_latest=3000, iterator_unchanged=True) is EndCheck.OPEN
    assert end(**closed, millis_behind_latest=None, iterator_unchanged=True) is EndCheck.OPEN


def test_closed_shard_empty_but_moving_on_is_not_ended() -> None:
    # AWS hands out a new iterator with every response: only its null iterator ends a shard.
    closed = {"ending_sequence_number": "10", "got_records": False, "millis_behind_latest": 0}
    assert end(**closed, iterator_unchanged=False) is EndCheck.OPEN


def test_open_shard_standing_still_is_not_ended() -> None:
    assert end(got_records=False, millis_behind_latest=0, iterator_unchanged=True) is EndCheck.OPEN


# -- errors ----------------------------------------------------------------------------


def client_error(code: str, status: int = 400, message: str = "msg") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetRecords")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (client_error("ExpiredIteratorException"), ErrorKind.EXPIRED_ITERATOR),
        (client_error("ProvisionedThroughputExceededException"), ErrorKind.THROTTLED),
        (client_error("KMSThrottlingException"), ErrorKind.THROTTLED),
        (client_error("InternalFailure", 500), ErrorKind.TRANSIENT),
        (client_error("Whatever", 503), ErrorKind.TRANSIENT),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), ErrorKind.TRANSIENT),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), ErrorKind.TRANSIENT),
        (client_error("ResourceNotFoundException"), ErrorKind.FATAL),
        (client_error("AccessDeniedException"), ErrorKind.FATAL),
        (client_error("InvalidArgumentException"), ErrorKind.FATAL),
        (NoCredentialsError(), ErrorKind.FATAL),
        (ValueError("bug"), ErrorKind.FATAL),
    ],
)
def test_each_failure_maps_to_one_kind(error: BaseException, kind: ErrorKind) -> None:
    assert classify_error(error) is kind


def test_missing_stream_or_shard_is_stream_not_found() -> None:
    error = fatal_error(client_error("ResourceNotFoundException"), "GetRecords", "s", "shard-1")
    assert isinstance(error, StreamNotFoundError)
    assert "shard-1" in str(error) and "'s'" in str(error)


@pytest.mark.parametrize("code", ["AccessDeniedException", "UnrecognizedClientException"])
def test_denied_access_is_a_config_error_naming_the_permissions(code: str) -> None:
    error = fatal_error(client_error(code), "GetRecords", "s", "shard-1")
    assert isinstance(error, ConfigError)
    assert "kinesis:GetRecords" in str(error)


def test_no_credentials_is_a_config_error() -> None:
    assert isinstance(fatal_error(NoCredentialsError(), "GetRecords", "s", "x"), ConfigError)


def test_other_rejected_requests_are_retriable_dependency_errors() -> None:
    error = fatal_error(client_error("InvalidArgumentException"), "GetShardIterator", "s", "x")
    assert type(error) is DependencyError
    assert error.retriable
    assert "InvalidArgumentException" in str(error)


# -- the fast GetRecords parse ---------------------------------------------------------

GOOD_BODY = {
    "Records": [
        {
            "SequenceNumber": "1",
            "ApproximateArrivalTimestamp": 1714564800.123,
            "Data": "aGVsbG8=",
            "PartitionKey": "k",
        }
    ],
    "NextShardIterator": "it-2",
    "MillisBehindLatest": 0,
}


def run_hook(body: bytes, status: int = 200) -> tuple[dict[str, Any], dict[str, Any]]:
    response_dict: dict[str, Any] = {"status_code": status, "body": body, "headers": {}}
    customized: dict[str, Any] = {}
    _parse_get_records(response_dict=response_dict, customized_response_dict=customized)
    return response_dict, customized


def test_fast_parse_takes_over_a_well_formed_body() -> None:
    response_dict, customized = run_hook(orjson.dumps(GOOD_BODY))
    assert customized == GOOD_BODY
    assert response_dict["body"] == b"{}"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"NextShardIterator": "x"}',
        b'{"Records": [{"SequenceNumber": "1", "Data": 5}]}',
        b'{"Records": [{"SequenceNumber": 1, "Data": "eA=="}]}',
        b'{"Records": [{"SequenceNumber": "1", "Data": "", "ApproximateArrivalTimestamp": "x"}]}',
        b'{"Records": [], "MillisBehindLatest": "0"}',
        b'{"Records": [], "NextShardIterator": 3}',
    ],
)
def test_fast_parse_leaves_unexpected_bodies_to_botocore(body: bytes) -> None:
    response_dict, customized = run_hook(body)
    assert customized == {}
    assert response_dict["body"] == body


def test_fast_parse_leaves_error_responses_to_botocore() -> None:
    body = b'{"__type": "ExpiredIteratorException", "message": "expired"}'
    response_dict, customized = run_hook(body, status=400)
    assert customized == {}
    assert response_dict["body"] == body


def test_child_shards_pass_the_fast_body_check() -> None:
    body = {**GOOD_BODY, "NextShardIterator": None, "ChildShards": [{"ShardId": "c"}]}
    assert is_get_records_body(body)


def test_make_client_uses_standard_retries_and_a_large_pool() -> None:
    client = make_client("kinesis", "us-east-1", "http://127.0.0.1:9", max_pool_connections=200)
    config: Any = client.meta.config
    assert config.retries["mode"] == "standard"
    assert config.max_pool_connections == 200
    assert config.connect_timeout > 0 and config.read_timeout > 0


def test_fast_get_records_is_only_for_kinesis() -> None:
    with pytest.raises(ValueError, match="kinesis"):
        make_client("dynamodb", "us-east-1", "http://127.0.0.1:9", fast_get_records=True)


# -- the fetcher, with a scripted client -----------------------------------------------


class ScriptedKinesis:
    """A Kinesis client whose GetRecords answers come from a script of responses or errors.

    Each answer is a dict (returned with a fresh NextShardIterator unless it sets one) or an
    exception (raised). When the script runs out, it answers empty and caught up.
    """

    def __init__(self, answers: list[dict[str, Any] | BaseException]) -> None:
        self.answers = list(answers)
        self.iterator_requests: list[dict[str, Any]] = []
        self.get_records_calls = 0

    def get_shard_iterator(self, **request: Any) -> dict[str, Any]:
        self.iterator_requests.append(request)
        return {"ShardIterator": f"it-{len(self.iterator_requests)}"}

    def get_records(self, **request: Any) -> dict[str, Any]:
        self.get_records_calls += 1
        if not self.answers:
            return {"Records": [], "NextShardIterator": "tail", "MillisBehindLatest": 0}
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return {"NextShardIterator": f"next-{self.get_records_calls}", **answer}


def plain(*seqs: int, behind: int = 1000) -> dict[str, Any]:
    return {"Records": [record(str(s), b"d%d" % s) for s in seqs], "MillisBehindLatest": behind}


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def fetcher(client: Any, executor: ThreadPoolExecutor, **settings: Any) -> ShardFetcher:
    options: dict[str, Any] = {
        "shard_id": "shardId-000000000000",
        "start": ExtendedSequenceNumber("TRIM_HORIZON"),
        "stream_name": "s",
        "max_records": 100,
        "idle_time_between_reads_s": 0.01,
        "min_call_interval_s": 0.0,
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.002,
    }
    options.update(settings)
    return ShardFetcher(client, executor, **options)


async def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll `predicate` on the loop until it holds (the loop keeps running the fetcher)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def take(fetcher: ShardFetcher, count: int) -> list[Batch]:
    return [await asyncio.wait_for(fetcher.next_batch(), 5) for _ in range(count)]


def test_prefetch_stops_when_the_buffer_is_full_and_resumes_when_drained(
    executor: ThreadPoolExecutor,
) -> None:
    client = ScriptedKinesis([plain(1, 2), plain(3, 4), plain(5, 6), plain(7, 8)])
    shard = fetcher(client, executor, prefetch_max_records=3)

    async def scenario() -> None:
        shard.start()
        await eventually(lambda: shard.buffer_full)
        assert client.get_records_calls == 2
        assert shard.buffered_records == 4
        (first,) = await take(shard, 1)
        assert positions(first.records) == [("1", 0), ("2", 0)]
        await eventually(lambda: shard.buffer_full and client.get_records_calls == 3)
        assert shard.buffered_records == 4
        await shard.close()

    asyncio.run(scenario())


def test_prefetch_also_stops_at_the_byte_limit(executor: ThreadPoolExecutor) -> None:
    client = ScriptedKinesis([plain(1, 2), plain(3, 4)])
    shard = fetcher(client, executor, prefetch_max_bytes=4)

    async def scenario() -> None:
        shard.start()
        await eventually(lambda: shard.buffer_full)
        assert client.get_records_calls == 1
        await shard.close()

    asyncio.run(scenario())


def test_expired_iterator_resumes_after_the_last_record_fetched(
    executor: ThreadPoolExecutor,
) -> None:
    client = ScriptedKinesis([plain(1, 2), client_error("ExpiredIteratorException"), plain(3)])
    shard = fetcher(client, executor)

    async def scenario() -> None:
        batches = await take(shard, 2)
        assert [positions(b.records) for b in batches] == [[("1", 0), ("2", 0)], [("3", 0)]]
        await shard.close()

    asyncio.run(scenario())
    assert shard.stats.expired_iterators == 1
    assert client.iterator_requests[1]["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"
    assert client.iterator_requests[1]["StartingSequenceNumber"] == "2"


def test_expired_iterator_before_any_record_restarts_from_the_checkpoint(
    executor: ThreadPoolExecutor,
) -> None:
    blob = aggregate(("a", b"0"), ("b", b"1"), ("c", b"2"))
    client = ScriptedKinesis(
        [client_error("ExpiredIteratorException"), {"Records": [record("5", blob)]}]
    )
    shard = fetcher(client, executor, start=ExtendedSequenceNumber("5", 1))

    async def scenario() -> None:
        (batch,) = await take(shard, 1)
        assert positions(batch.records) == [("5", 2)]
        await shard.close()

    asyncio.run(scenario())
    assert [r["ShardIteratorType"] for r in client.iterator_requests] == ["AT_SEQUENCE_NUMBER"] * 2


def test_throttling_and_transient_errors_are_retried_with_back_off(
    executor: ThreadPoolExecutor,
) -> None:
    client = ScriptedKinesis(
        [
            client_error("ProvisionedThroughputExceededException"),
            client_error("ProvisionedThroughputExceededException"),
            EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
            plain(1),
        ]
    )
    shard = fetcher(client, executor)

    async def scenario() -> None:
        (batch,) = await take(shard, 1)
        assert positions(batch.records) == [("1", 0)]
        await shard.close()

    asyncio.run(scenario())
    assert shard.stats.throttled == 2
    assert shard.stats.transient_errors == 1


def test_fatal_error_is_raised_from_next_batch_after_buffered_batches(
    executor: ThreadPoolExecutor,
) -> None:
    client = ScriptedKinesis([plain(1), client_error("ResourceNotFoundException")])
    shard = fetcher(client, executor)

    async def scenario() -> None:
        (batch,) = await take(shard, 1)
        assert positions(batch.records) == [("1", 0)]
        with pytest.raises(StreamNotFoundError):
            await take(shard, 1)
        with pytest.raises(StreamNotFoundError):
            await take(shard, 1)
        await shard.close()

    asyncio.run(scenario())


def test_null_iterator_gives_records_then_an_empty_shard_end_batch(
    executor: ThreadPoolExecutor,
) -> None:
    children = [{"ShardId": "shardId-000000000001", "ParentShards": ["shardId-000000000000"]}]
    client = ScriptedKinesis([{**plain(1, 2), "NextShardIterator": None, "ChildShards": children}])
    shard = fetcher(client, executor)

    async def scenario() -> None:
        records, ended = await take(shard, 2)
        assert positions(records.records) == [("1", 0), ("2", 0)]
        assert not records.shard_end
        assert ended.shard_end and ended.records == [] and ended.child_shards == children
        with pytest.raises(ShardEndedError):
            await take(shard, 1)

    asyncio.run(scenario())


def test_closed_shard_ends_after_its_ending_sequence_and_one_confirming_call(
    executor: ThreadPoolExecutor,
) -> None:
    client = ScriptedKinesis([plain(1, 2), plain(3, behind=0)])
    shard = fetcher(client, executor, ending_sequence_number="3")

    async def scenario() -> None:
        batches = await take(shard, 3)
        assert [positions(b.records) for b in batches] == [[("1", 0), ("2", 0)], [("3", 0)], []]
        assert [b.shard_end for b in batches] == [False, False, True]

    asyncio.run(scenario())
    assert client.get_records_calls == 3


def test_shard_end_checkpoint_ends_at_once_without_calls(executor: ThreadPoolExecutor) -> None:
    client = ScriptedKinesis([])
    shard = fetcher(client, executor, start=ExtendedSequenceNumber("SHARD_END"))

    async def scenario() -> None:
        (batch,) = await take(shard, 1)
        assert batch.shard_end

    asyncio.run(scenario())
    assert client.iterator_requests == [] and client.get_records_calls == 0


def test_empty_batches_are_coalesced_while_the_consumer_is_away(
    executor: ThreadPoolExecutor,
) -> None:
    client = ScriptedKinesis([])
    shard = fetcher(client, executor)

    async def scenario() -> None:
        shard.start()
        await eventually(lambda: client.get_records_calls >= 5)
        (batch,) = await take(shard, 1)
        assert batch.records == [] and batch.millis_behind_latest == 0
        assert len(shard._buffer) <= 1
        await shard.close()

    asyncio.run(scenario())


def test_next_batch_after_close_is_an_invalid_state(executor: ThreadPoolExecutor) -> None:
    shard = fetcher(ScriptedKinesis([plain(1)]), executor)

    async def scenario() -> None:
        shard.start()
        await shard.close()
        with pytest.raises(InvalidStateError):
            await take(shard, 1)

    asyncio.run(scenario())


def test_hash_range_drops_are_counted_in_the_batch_and_stats(executor: ThreadPoolExecutor) -> None:
    inside, outside = sorted(["alpha", "beta"], key=hash_of)
    blob = aggregate((inside, b"i"), (outside, b"o"))
    client = ScriptedKinesis([{"Records": [record("1", blob), record("2", b"p")]}])

    async def scenario() -> None:
        (batch,) = await take(shard, 1)
        assert positions(batch.records) == [("2", 0)]
        assert batch.dropped_for_hash_range == 1
        await shard.close()

    with capture_logs() as logs:
        shard = fetcher(client, executor, hash_range=(0, hash_of(inside)))
        asyncio.run(scenario())
    assert shard.stats.dropped_for_hash_range == 1
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "hash range" in warnings[0]["event"] and warnings[0]["sequence_numbers"] == ["1"]


def test_at_timestamp_without_timestamp_fails_at_construction(
    executor: ThreadPoolExecutor,
) -> None:
    with pytest.raises(ConfigError):
        fetcher(ScriptedKinesis([]), executor, start=ExtendedSequenceNumber("AT_TIMESTAMP"))
