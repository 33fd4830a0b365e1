"""The fault proxy itself: its schedule (pure), and what boto3 sees through it (a real moto).

The chaos tests trust the proxy to fail calls the way AWS fails them; these tests check that
botocore, and the daemon's own error classification, see each fault as the real thing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from daemon.kinesis_client import ErrorKind, classify_error
from tests import servers
from tests.faults.proxy import (
    DYNAMODB,
    KINESIS,
    OTHER,
    Blackhole,
    Delay,
    FaultProxy,
    FaultSchedule,
    LoseResponse,
    Reset,
    Rule,
    dynamodb_capacity_exceeded,
    expired_iterator,
    route,
    server_error,
    throttle,
)
from tests.support.waiting import wait_until

# -- the schedule (pure) ------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_targets_route_to_service_and_operation() -> None:
    assert route("Kinesis_20131202.GetRecords") == (KINESIS, "GetRecords")
    assert route("DynamoDB_20120810.UpdateItem") == (DYNAMODB, "UpdateItem")
    assert route("GraniteServiceVersion20100801.PutMetricData") == (OTHER, "GraniteServiceVersion20100801.PutMetricData")  # fmt: skip
    assert route("") == (OTHER, "")


def test_a_rule_matches_only_its_service_and_operations() -> None:
    schedule = FaultSchedule()
    rule = schedule.add(Rule(Reset(), service=KINESIS, operations={"GetRecords"}))
    assert schedule.decide(DYNAMODB, "GetRecords") is None
    assert schedule.decide(KINESIS, "ListShards") is None
    assert schedule.decide(KINESIS, "GetRecords") is rule


def test_every_fires_on_each_nth_matching_request_and_limit_retires_the_rule() -> None:
    schedule = FaultSchedule()
    rule = schedule.add(Rule(Reset(), every=3, limit=2))
    fired = [schedule.decide(KINESIS, "GetRecords") is rule for _ in range(9)]
    assert fired == [False, False, True, False, False, True, False, False, False]
    assert schedule.rules() == []


def test_a_rule_with_a_duration_retires_when_it_is_up() -> None:
    clock = FakeClock()
    schedule = FaultSchedule(clock=clock)
    rule = schedule.add(Rule(Reset(), duration_s=10))
    assert schedule.is_live(rule) and schedule.decide(KINESIS, "X") is rule
    clock.now += 10
    assert not schedule.is_live(rule)
    assert schedule.decide(KINESIS, "X") is None


def test_probability_zero_never_fires_one_always_fires_a_half_sometimes() -> None:
    schedule = FaultSchedule(seed=1)
    never = schedule.add(Rule(Reset(), service=OTHER, probability=0.0))
    always = schedule.add(Rule(Reset(), service=DYNAMODB, probability=1.0))
    half = schedule.add(Rule(Reset(), service=KINESIS, probability=0.5))
    assert all(schedule.decide(OTHER, "X") is None for _ in range(50))
    assert all(schedule.decide(DYNAMODB, "X") is always for _ in range(50))
    fired = sum(schedule.decide(KINESIS, "X") is half for _ in range(200))
    assert 50 < fired < 150
    assert never.matched == 50 and never.fired == 0


def test_the_first_live_rule_wins_and_an_outage_goes_first() -> None:
    schedule = FaultSchedule()
    slow = schedule.add(Rule(Delay(1.0)))
    assert schedule.decide(KINESIS, "X") is slow
    outage = schedule.add(Rule(Reset(), service=KINESIS, duration_s=5), first=True)
    assert schedule.decide(KINESIS, "X") is outage
    assert schedule.decide(DYNAMODB, "X") is slow


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError):
        Rule(Reset(), probability=1.5)
    with pytest.raises(ValueError):
        Rule(Reset(), every=0)


# -- through a real proxy to a real moto -----------------------------------------------------


@pytest.fixture
def proxy(moto_server: servers.LocalServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.endpoint, seed=5) as running:
        yield running
    assert not running.handler_errors


def _client(service: str, proxy: FaultProxy) -> Any:
    # One attempt: each call the test makes is exactly one request through the proxy.
    return servers.client(
        service, proxy.endpoint, read_timeout=10, retries={"total_max_attempts": 1}
    )


def _failure(call: Any) -> BaseException:
    try:
        call()
    except (ClientError, BotoCoreError) as error:
        return error
    raise AssertionError("the call succeeded")


@pytest.mark.integration
def test_calls_without_a_rule_are_forwarded_and_answered_by_the_backend(proxy: FaultProxy) -> None:
    kinesis, dynamodb = _client("kinesis", proxy), _client("dynamodb", proxy)
    for _ in range(3):
        assert "StreamNames" in kinesis.list_streams()
        assert "TableNames" in dynamodb.list_tables()
    assert proxy.requests(KINESIS, "ListStreams") == 3
    assert proxy.requests(DYNAMODB, "ListTables") == 3
    assert proxy.injected() == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    ("service", "fault", "code", "kind"),
    [
        (KINESIS, throttle(KINESIS), "ProvisionedThroughputExceededException", ErrorKind.THROTTLED),
        (DYNAMODB, throttle(DYNAMODB), "ThrottlingException", ErrorKind.THROTTLED),
        (DYNAMODB, dynamodb_capacity_exceeded(), "ProvisionedThroughputExceededException",
         ErrorKind.THROTTLED),
        (KINESIS, server_error(500), "InternalFailure", ErrorKind.TRANSIENT),
        (DYNAMODB, server_error(503), "ServiceUnavailable", ErrorKind.TRANSIENT),
        (KINESIS, expired_iterator(), "ExpiredIteratorException", ErrorKind.EXPIRED_ITERATOR),
    ],
)  # fmt: skip
def test_answers_look_to_botocore_like_the_services_own(
    proxy: FaultProxy, service: str, fault: Any, code: str, kind: ErrorKind
) -> None:
    client = _client(service, proxy)
    proxy.add(Rule(fault, service=service, limit=1))
    call = client.list_streams if service == KINESIS else client.list_tables
    error = _failure(call)
    assert isinstance(error, ClientError) and error.response["Error"]["Code"] == code
    assert classify_error(error) is kind
    call()  # the rule fired once and retired
    assert proxy.injected(fault.name, service) == 1


@pytest.mark.integration
def test_a_reset_is_a_closed_connection_the_daemon_retries(proxy: FaultProxy) -> None:
    client = _client(KINESIS, proxy)
    proxy.add(Rule(Reset(), limit=1))
    error = _failure(client.list_streams)
    assert isinstance(error, BotoCoreError)
    assert classify_error(error) is ErrorKind.TRANSIENT
    assert "StreamNames" in client.list_streams()


@pytest.mark.integration
def test_a_lost_response_fails_the_call_after_the_backend_applied_it(proxy: FaultProxy) -> None:
    dynamodb = _client(DYNAMODB, proxy)
    table = f"t-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    proxy.add(Rule(LoseResponse(), service=DYNAMODB, operations={"PutItem"}, limit=1))
    error = _failure(lambda: dynamodb.put_item(TableName=table, Item={"k": {"S": "written"}}))
    assert isinstance(error, BotoCoreError)
    item = dynamodb.get_item(TableName=table, Key={"k": {"S": "written"}}, ConsistentRead=True)
    assert item["Item"] == {"k": {"S": "written"}}


@pytest.mark.integration
def test_a_delayed_call_is_answered(proxy: FaultProxy) -> None:
    proxy.add(Rule(Delay(0.2), limit=1))
    assert "StreamNames" in _client(KINESIS, proxy).list_streams()
    assert proxy.injected("delay") == 1


@pytest.mark.integration
def test_an_outage_fails_one_service_only_and_ends_by_itself(proxy: FaultProxy) -> None:
    kinesis, dynamodb = _client(KINESIS, proxy), _client(DYNAMODB, proxy)
    outage = proxy.outage(DYNAMODB, seconds=2)
    assert isinstance(_failure(dynamodb.list_tables), BotoCoreError)
    assert "StreamNames" in kinesis.list_streams()
    wait_until(lambda: not proxy.schedule.is_live(outage), 5, message="the outage to end")
    assert "TableNames" in dynamodb.list_tables()


@pytest.mark.integration
def test_a_blackholed_call_gets_no_answer_until_its_rule_ends(proxy: FaultProxy) -> None:
    kinesis = _client(KINESIS, proxy)
    rule = proxy.add(Rule(Blackhole(), service=KINESIS, duration_s=2))
    error = _failure(kinesis.list_streams)
    assert isinstance(error, BotoCoreError)
    assert not proxy.schedule.is_live(rule), "the call ended only when the rule did"


@pytest.mark.integration
def test_a_dead_backend_looks_like_a_dead_backend() -> None:
    with FaultProxy(servers.UNSERVED_ENDPOINT) as proxy:
        error = _failure(_client(KINESIS, proxy).list_streams)
    assert isinstance(error, BotoCoreError)
    assert classify_error(error) is ErrorKind.TRANSIENT
