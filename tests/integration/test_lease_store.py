"""LeaseStore against real DynamoDB look-alikes (moto server and dynalite), two workers racing.

Each test gets its own table. The error-mapping tests at the end use botocore's Stubber (no
server) for failures a local server cannot be made to produce.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.stub import Stubber

from daemon.errors import DependencyError, InvalidStateError, LeaseLostError, ThrottledError
from daemon.leases.model import Lease, lease_to_item
from daemon.leases.store import LeaseStore
from daemon.sequence import SHARD_END, TRIM_HORIZON, ExtendedSequenceNumber
from tests import servers

pytestmark = pytest.mark.integration

A = "worker-a"
B = "worker-b"
CP_1 = ExtendedSequenceNumber("49590338271490256608559692538361571095921575989136588898")
CP_2 = ExtendedSequenceNumber("49590338271490256608559692538361571095921575989136588999", 4)

_clients: dict[tuple[str, str], Any] = {}


def cached_client(endpoint: str, role: str) -> Any:
    """One DynamoDB client per endpoint and worker: clients are slow to build, tables are not."""
    key = (endpoint, role)
    if key not in _clients:
        _clients[key] = servers.client("dynamodb", endpoint)
    return _clients[key]


@dataclass
class Workers:
    endpoint: str
    table: str
    a: LeaseStore
    b: LeaseStore

    def raw_item(self, key: str) -> dict[str, Any]:
        response = cached_client(self.endpoint, "raw").get_item(
            TableName=self.table, Key={"leaseKey": {"S": key}}, ConsistentRead=True
        )
        return dict(response.get("Item", {}))


@pytest.fixture(params=["moto", "dynalite"])
def endpoint(request: pytest.FixtureRequest) -> str:
    server: servers.LocalServer = request.getfixturevalue(f"{request.param}_server")
    return server.endpoint


@pytest.fixture
def dynalite_server(dynalite: servers.LocalServer) -> servers.LocalServer:
    return dynalite


@pytest.fixture
def workers(endpoint: str, unique_name: Callable[[str], str]) -> Iterator[Workers]:
    table = unique_name("leases")[:255]
    a = LeaseStore(cached_client(endpoint, A), table)
    assert a.ensure_table(timeout_s=30)
    yield Workers(endpoint, table, a, LeaseStore(cached_client(endpoint, B), table))
    cached_client(endpoint, "raw").delete_table(TableName=table)


def new_lease(key: str = "shardId-000000000000", **fields: Any) -> Lease:
    fields.setdefault("checkpoint", ExtendedSequenceNumber(TRIM_HORIZON))
    return Lease(key, **fields)


def created(workers: Workers, key: str = "shardId-000000000000", **fields: Any) -> Lease:
    lease = new_lease(key, **fields)
    assert workers.a.create_lease_if_absent(lease)
    return lease


# -- table ------------------------------------------------------------------------------


def test_ensure_table_creates_pay_per_request_table_keyed_by_lease_key(workers: Workers) -> None:
    description = cached_client(workers.endpoint, "raw").describe_table(TableName=workers.table)
    table = description["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_ensure_table_on_an_existing_table_reports_not_created(workers: Workers) -> None:
    assert workers.b.ensure_table() is False


def test_operations_on_a_missing_table_are_dependency_errors_naming_it(endpoint: str) -> None:
    store = LeaseStore(cached_client(endpoint, A), "no-such-lease-table")
    with pytest.raises(DependencyError, match="no-such-lease-table"):
        store.list_leases()


# -- create, read, delete ---------------------------------------------------------------


def test_create_if_absent_loses_the_race_to_an_existing_lease(workers: Workers) -> None:
    lease = new_lease()
    assert workers.a.create_lease_if_absent(lease) is True
    assert workers.b.create_lease_if_absent(lease) is False


def test_created_lease_reads_back_equal(workers: Workers) -> None:
    lease = created(
        workers,
        parent_shard_ids=frozenset({"shardId-p1", "shardId-p2"}),
        starting_hash_key=0,
        ending_hash_key=2**128 - 1,
    )
    assert workers.b.get_lease(lease.lease_key) == lease
    assert workers.b.get_lease("absent") is None


def test_list_leases_skips_kcl3_non_lease_items(workers: Workers) -> None:
    created(workers, "shardId-1")
    created(workers, "shardId-2")
    cached_client(workers.endpoint, "raw").put_item(
        TableName=workers.table,
        Item={"leaseKey": {"S": "worker-metrics-1"}, "entityType": {"S": "WORKER_METRICS"}},
    )
    assert sorted(lease.lease_key for lease in workers.b.list_leases()) == [
        "shardId-1",
        "shardId-2",
    ]


def test_delete_lease_removes_it(workers: Workers) -> None:
    lease = created(workers)
    workers.b.delete_lease(lease.lease_key)
    assert workers.a.get_lease(lease.lease_key) is None


# -- take, renew, evict -----------------------------------------------------------------


def test_take_of_unowned_lease_sets_owner_and_bumps_counter(workers: Workers) -> None:
    taken = workers.a.take(created(workers), A)
    assert (taken.lease_owner, taken.lease_counter) == (A, 1)
    assert taken.owner_switches_since_checkpoint == 0
    assert workers.b.get_lease(taken.lease_key) == taken


def test_steal_counts_an_owner_switch(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    stolen = workers.b.take(held, B)
    assert (stolen.lease_owner, stolen.lease_counter) == (B, 2)
    assert stolen.owner_switches_since_checkpoint == 1


def test_only_one_of_two_racing_takes_wins(workers: Workers) -> None:
    lease = created(workers)
    workers.a.take(lease, A)
    with pytest.raises(LeaseLostError, match=A):
        workers.b.take(lease, B)
    current = workers.b.get_lease(lease.lease_key)
    assert current is not None and current.lease_owner == A


def test_renew_bumps_counter(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    renewed = workers.a.renew(held)
    assert renewed.lease_counter == held.lease_counter + 1
    assert renewed.lease_owner == A


def test_renew_after_the_lease_was_stolen_is_lease_lost(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    workers.b.take(held, B)
    with pytest.raises(LeaseLostError, match=B):
        workers.a.renew(held)


def test_renew_of_deleted_lease_is_lease_lost(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    workers.b.delete_lease(held.lease_key)
    with pytest.raises(LeaseLostError, match="deleted"):
        workers.a.renew(held)


def test_renew_of_unowned_lease_is_refused(workers: Workers) -> None:
    with pytest.raises(InvalidStateError):
        workers.a.renew(created(workers))


class RetriedWrites:
    """A client whose UpdateItem is sent twice, as when botocore retries a write whose
    response was lost: the first attempt succeeds, the retry fails its condition."""

    def __init__(self, inner: Any):
        self._inner = inner

    def update_item(self, **kwargs: Any) -> Any:
        self._inner.update_item(**kwargs)
        return self._inner.update_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_renew_whose_retried_write_had_succeeded_is_renewed(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    flaky = LeaseStore(RetriedWrites(cached_client(workers.endpoint, A)), workers.table)
    renewed = flaky.renew(held)
    assert (renewed.lease_owner, renewed.lease_counter) == (A, held.lease_counter + 1)


def test_take_whose_retried_write_had_succeeded_is_taken(workers: Workers) -> None:
    lease = created(workers)
    flaky = LeaseStore(RetriedWrites(cached_client(workers.endpoint, A)), workers.table)
    assert flaky.take(lease, A).lease_owner == A


def test_checkpoint_whose_retried_write_had_succeeded_is_written(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    flaky = LeaseStore(RetriedWrites(cached_client(workers.endpoint, A)), workers.table)
    written = flaky.checkpoint(held, CP_1, A)
    assert written.checkpoint == CP_1


def test_evict_releases_the_lease_for_a_peer(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    workers.a.evict(held, A)
    released = workers.b.get_lease(held.lease_key)
    assert released is not None
    assert released.lease_owner is None
    assert released.lease_counter == held.lease_counter + 1
    assert workers.b.take(released, B).lease_owner == B


def test_evict_by_a_worker_that_does_not_hold_the_lease_is_lease_lost(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    with pytest.raises(LeaseLostError):
        workers.b.evict(held, B)
    current = workers.a.get_lease(held.lease_key)
    assert current is not None and current.lease_owner == A


# -- checkpoints ------------------------------------------------------------------------


def test_checkpoint_writes_position_resets_switches_and_renews(workers: Workers) -> None:
    stolen = workers.b.take(workers.a.take(created(workers), A), B)
    assert stolen.owner_switches_since_checkpoint == 1
    written = workers.b.checkpoint(stolen, CP_2, B)
    assert written.checkpoint == CP_2
    assert written.owner_switches_since_checkpoint == 0
    assert written.lease_counter == stolen.lease_counter + 1
    item = workers.raw_item(stolen.lease_key)
    assert item["checkpointSubSequenceNumber"] == {"N": "4"}


def test_checkpoint_with_stale_counter_is_lease_lost(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    workers.b.take(held, B)
    with pytest.raises(LeaseLostError):
        workers.a.checkpoint(held, CP_1, A)
    current = workers.b.get_lease(held.lease_key)
    assert current is not None and current.checkpoint == ExtendedSequenceNumber(TRIM_HORIZON)


def test_checkpoint_by_non_owner_with_current_counter_is_lease_lost(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    with pytest.raises(LeaseLostError):
        workers.b.checkpoint(held, CP_1, B)


def test_prepare_then_checkpoint_sets_and_clears_pending_fields(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    prepared = workers.a.prepare_checkpoint(held, CP_2, A, pending_state=b"\x01app-state")
    assert prepared.pending_checkpoint == CP_2
    assert prepared.pending_checkpoint_state == b"\x01app-state"
    assert prepared.checkpoint == ExtendedSequenceNumber(TRIM_HORIZON)
    written = workers.a.checkpoint(prepared, CP_2, A)
    assert written.checkpoint == CP_2
    assert written.pending_checkpoint is None and written.pending_checkpoint_state is None
    assert "pendingCheckpoint" not in workers.raw_item(held.lease_key)


def test_checkpoint_can_write_a_new_pending_checkpoint(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    written = workers.a.checkpoint(held, CP_1, A, pending=CP_2, pending_state=b"s")
    assert (written.checkpoint, written.pending_checkpoint) == (CP_1, CP_2)
    assert written.pending_checkpoint_state == b"s"


def test_checkpoint_preserves_attributes_of_other_clients(workers: Workers) -> None:
    lease = new_lease()
    item = lease_to_item(lease)
    item["checkpointOwner"] = {"S": "kcl3-worker"}
    item["throughputKBps"] = {"N": "12.5"}
    item["entityType"] = {"S": "LEASE"}
    cached_client(workers.endpoint, "raw").put_item(TableName=workers.table, Item=item)
    held = workers.a.take(lease, A)
    written = workers.a.checkpoint(held, CP_1, A)
    raw = workers.raw_item(lease.lease_key)
    assert raw["checkpointOwner"] == {"S": "kcl3-worker"}
    assert raw["throughputKBps"] == {"N": "12.5"}
    assert written.extra["checkpointOwner"] == {"S": "kcl3-worker"}


def test_shard_end_checkpoint_marks_lease_finished(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    written = workers.a.checkpoint(held, ExtendedSequenceNumber(SHARD_END), A)
    assert written.is_finished


def test_set_child_shard_ids_leaves_the_counter_alone(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    updated = workers.a.set_child_shard_ids(held, ["shardId-2", "shardId-1"])
    assert updated.child_shard_ids == {"shardId-1", "shardId-2"}
    assert updated.lease_counter == held.lease_counter
    assert workers.a.renew(held).child_shard_ids == {"shardId-1", "shardId-2"}


def test_set_child_shard_ids_on_deleted_lease_is_lease_lost(workers: Workers) -> None:
    held = workers.a.take(created(workers), A)
    workers.a.delete_lease(held.lease_key)
    with pytest.raises(LeaseLostError):
        workers.a.set_child_shard_ids(held, ["shardId-1"])
    assert workers.a.get_lease(held.lease_key) is None


# -- statistics and threads ----------------------------------------------------------------


def test_calls_are_counted_per_operation_from_many_threads(workers: Workers) -> None:
    leases = [workers.a.take(created(workers, f"shardId-{n}"), A) for n in range(8)]
    store = LeaseStore(cached_client(workers.endpoint, A), workers.table)
    errors: list[BaseException] = []

    def renew_twice(lease: Lease) -> None:
        try:
            store.renew(store.renew(lease))
        except BaseException as error:  # collected and asserted on below
            errors.append(error)

    threads = [threading.Thread(target=renew_twice, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert store.call_counts == {"renew": 16}
    stats = store.call_stats()["renew"]
    assert stats.failures == 0 and stats.total_seconds >= stats.max_seconds > 0


# -- error mapping and waiting, without a server ---------------------------------------------


@pytest.fixture
def stubbed() -> Iterator[tuple[LeaseStore, Stubber, list[float]]]:
    client = cached_client(servers.UNSERVED_ENDPOINT, "stubbed")
    sleeps: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    store = LeaseStore(client, "leases", clock=lambda: clock[0], sleep=sleep)
    with Stubber(client) as stub:
        yield store, stub, sleeps


def describe(status: str) -> dict[str, Any]:
    return {"Table": {"TableName": "leases", "TableStatus": status}}


def test_ensure_table_waits_until_active(stubbed: tuple[LeaseStore, Stubber, list[float]]) -> None:
    store, stub, sleeps = stubbed
    stub.add_client_error("describe_table", "ResourceNotFoundException")
    stub.add_response(
        "create_table", {"TableDescription": {"TableName": "leases", "TableStatus": "CREATING"}}
    )
    stub.add_response("describe_table", describe("CREATING"))
    stub.add_response("describe_table", describe("ACTIVE"))
    assert store.ensure_table() is True
    stub.assert_no_pending_responses()
    assert len(sleeps) == 2


def test_ensure_table_waits_for_a_table_another_worker_is_creating(
    stubbed: tuple[LeaseStore, Stubber, list[float]],
) -> None:
    store, stub, _ = stubbed
    stub.add_client_error("describe_table", "ResourceNotFoundException")
    stub.add_client_error("create_table", "ResourceInUseException")
    stub.add_response("describe_table", describe("ACTIVE"))
    assert store.ensure_table() is False


def test_ensure_table_gives_up_after_the_timeout(
    stubbed: tuple[LeaseStore, Stubber, list[float]],
) -> None:
    store, stub, _ = stubbed
    stub.add_response("describe_table", describe("CREATING"))
    for _ in range(20):
        stub.add_response("describe_table", describe("CREATING"))
    with pytest.raises(DependencyError, match="not ACTIVE after 3 s"):
        store.ensure_table(timeout_s=3)


@pytest.mark.parametrize(
    "code",
    ["ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"],
)
def test_throttling_codes_are_throttled_errors(
    stubbed: tuple[LeaseStore, Stubber, list[float]], code: str
) -> None:
    store, stub, _ = stubbed
    stub.add_client_error("update_item", code, http_status_code=400)
    with pytest.raises(ThrottledError):
        store.renew(new_lease(lease_owner=A))
    assert store.call_stats()["renew"].failures == 1


def test_server_error_is_retriable_dependency_error(
    stubbed: tuple[LeaseStore, Stubber, list[float]],
) -> None:
    store, stub, _ = stubbed
    stub.add_client_error("scan", "InternalServerError", http_status_code=500)
    with pytest.raises(DependencyError) as caught:
        store.list_leases()
    assert caught.value.retriable and not isinstance(caught.value, ThrottledError)


def test_rejected_credentials_are_not_retriable(
    stubbed: tuple[LeaseStore, Stubber, list[float]],
) -> None:
    store, stub, _ = stubbed
    stub.add_client_error("get_item", "UnrecognizedClientException", http_status_code=400)
    with pytest.raises(DependencyError) as caught:
        store.get_lease("shardId-0")
    assert caught.value.retriable is False


def test_scan_follows_pagination(stubbed: tuple[LeaseStore, Stubber, list[float]]) -> None:
    store, stub, _ = stubbed
    first, second = new_lease("shardId-1"), new_lease("shardId-2")
    stub.add_response(
        "scan",
        {"Items": [lease_to_item(first)], "LastEvaluatedKey": {"leaseKey": {"S": "shardId-1"}}},
        {"TableName": "leases", "ConsistentRead": True},
    )
    stub.add_response(
        "scan",
        {"Items": [lease_to_item(second)]},
        {
            "TableName": "leases",
            "ConsistentRead": True,
            "ExclusiveStartKey": {"leaseKey": {"S": "shardId-1"}},
        },
    )
    assert store.list_leases() == [first, second]
    assert store.call_counts == {"list_leases": 2}


def test_unreachable_endpoint_is_dependency_error() -> None:
    client = servers.client(
        "dynamodb",
        servers.UNSERVED_ENDPOINT,
        connect_timeout=1,
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    with pytest.raises(DependencyError, match="127.0.0.1:9"):
        LeaseStore(client, "leases").get_lease("shardId-0")
