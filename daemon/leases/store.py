"""The DynamoDB lease table: every read and conditional write, and nothing else.

``LeaseStore`` wraps a boto3 DynamoDB client (thread-safe) and keeps no lease
state of its own, so one instance serves all the daemon's threads; its only
mutable state, the per-operation call statistics, sits behind a lock. Every
write is conditional as lease-table.md prescribes and goes through UpdateItem
(except create), so attributes written by other clients (KCL 3.x) survive.

Error mapping, one daemon.errors type per botocore failure:

- ConditionalCheckFailed: ``LeaseLostError`` (renew, take, evict, checkpoint),
  ``False`` from ``create_lease_if_absent``;
- throttling codes: ``ThrottledError``;
- missing table, 5xx, connection failures: ``DependencyError`` (retriable);
- rejected credentials or requests: ``DependencyError`` with retriable False.

Callers must serialise writes to one lease (renewer and checkpointer share a
per-lease lock) and always pass the lease returned by the previous write:
``leaseCounter`` is the optimistic-concurrency token, and a write based on an
older counter fails as a lost lease.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from daemon.errors import (
    DependencyError,
    InvalidStateError,
    KclDaemonError,
    LeaseLostError,
    ThrottledError,
)
from daemon.leases import model
from daemon.leases.model import Lease, lease_from_item, lease_to_item
from daemon.sequence import ExtendedSequenceNumber

log = structlog.get_logger(__name__)

THROTTLE_CODES = frozenset(
    (
        "ProvisionedThroughputExceededException",  # DynamoDB, Kinesis
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",  # DynamoDB account-level
        "LimitExceededException",  # Kinesis control plane (ListShards)
        "TooManyRequestsException",
    )
)
_RETRIABLE_4XX = frozenset(("RequestTimeout", "RequestTimeoutException", "TransactionConflict"))
_CONDITION_FAILED = "ConditionalCheckFailedException"
_NOT_FOUND = "ResourceNotFoundException"
_IN_USE = "ResourceInUseException"


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def translate_aws_error(error: BotoCoreError | ClientError, what: str) -> KclDaemonError:
    """The daemon error for a botocore failure of ``what`` (e.g. "UpdateItem on table 'app'").

    Callers map the codes that mean something particular to them (a failed
    condition, a missing stream) before falling back on this.
    """
    if isinstance(error, BotoCoreError):
        # Connection refused, timeouts, missing credentials: the message never
        # contains secrets, only the endpoint or the credential source.
        return DependencyError(f"{what} failed: {error}")
    code = error_code(error)
    message = error.response.get("Error", {}).get("Message", "") or code
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in THROTTLE_CODES:
        return ThrottledError(f"{what} throttled ({code}): {message}")
    translated = DependencyError(f"{what} failed ({code}): {message}")
    if 400 <= status < 500 and code not in _RETRIABLE_4XX:
        translated.retriable = False  # bad credentials or a bad request stay bad
    return translated


class _Expected(Exception):
    """An AWS error code the calling method handles itself."""


@dataclass(frozen=True)
class CallStats:
    """DynamoDB calls of one operation: for metrics and calls-per-lease benchmarks."""

    count: int = 0
    failures: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0

    def add(self, seconds: float, failed: bool) -> CallStats:
        return CallStats(
            self.count + 1,
            self.failures + int(failed),
            self.total_seconds + seconds,
            max(self.max_seconds, seconds),
        )


class _Update:
    """Builds one UpdateItem expression with its name and value placeholders."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attribute: str) -> str:
        self.names[f"#{attribute}"] = attribute
        return f"#{attribute}"

    def value(self, label: str, value: Mapping[str, Any]) -> str:
        self.values[f":{label}"] = dict(value)
        return f":{label}"

    def set(self, attribute: str, value: Mapping[str, Any]) -> None:
        self.sets.append(f"{self.name(attribute)} = {self.value(attribute, value)}")

    def remove(self, *attributes: str) -> None:
        self.removes.extend(self.name(attribute) for attribute in attributes)

    def set_position(self, seq: str, sub: str, position: ExtendedSequenceNumber | None) -> None:
        if position is None:
            self.remove(seq, sub)
        else:
            seq_value, sub_value = model.position_values(position)
            self.set(seq, seq_value)
            self.set(sub, sub_value)

    def expression(self) -> str:
        parts = []
        if self.sets:
            parts.append("SET " + ", ".join(self.sets))
        if self.removes:
            parts.append("REMOVE " + ", ".join(self.removes))
        return " ".join(parts)


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


class LeaseStore:
    """Reads and conditionally writes leases in one DynamoDB table (KCL 2.x schema)."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._client = client
        self.table_name = table_name
        self._clock = clock
        self._sleep = sleep
        self._stats_lock = threading.Lock()
        self._stats: dict[str, CallStats] = {}

    # -- statistics ---------------------------------------------------------

    @property
    def call_counts(self) -> dict[str, int]:
        """DynamoDB calls made so far, per operation name (a snapshot)."""
        with self._stats_lock:
            return {name: stats.count for name, stats in self._stats.items()}

    def call_stats(self) -> dict[str, CallStats]:
        """Counts, failures and latency per operation name (a snapshot)."""
        with self._stats_lock:
            return dict(self._stats)

    def _call(self, op: str, api: str, expected: Iterable[str] = (), **kwargs: Any) -> Any:
        """Call ``api`` on the client, timed and counted under ``op``, errors translated."""
        start = self._clock()
        failed = True
        try:
            result = getattr(self._client, api)(**kwargs)
            failed = False
            return result
        except ClientError as error:
            code = error_code(error)
            if code in expected:
                raise _Expected(code) from error
            if code == _NOT_FOUND:
                raise DependencyError(
                    f"lease table {self.table_name!r} does not exist"
                    f" (region {self._client.meta.region_name}): check applicationName/tableName"
                    " and the region, or restart the daemon so it creates the table"
                ) from error
            raise translate_aws_error(error, f"{api} on lease table {self.table_name!r}") from error
        except BotoCoreError as error:
            raise translate_aws_error(error, f"{api} on lease table {self.table_name!r}") from error
        finally:
            elapsed = self._clock() - start
            with self._stats_lock:
                self._stats[op] = self._stats.get(op, CallStats()).add(elapsed, failed)

    # -- table --------------------------------------------------------------

    def _table_status(self) -> str | None:
        try:
            response = self._call(
                "describe_table",
                "describe_table",
                expected=(_NOT_FOUND,),
                TableName=self.table_name,
            )
        except _Expected:
            return None
        return str(response["Table"]["TableStatus"])

    def ensure_table(self, timeout_s: float = 60) -> bool:
        """Create the table (PAY_PER_REQUEST, key leaseKey) if missing; wait until ACTIVE.

        Returns True if this call created it. Another worker creating it at the
        same moment is fine: both wait for ACTIVE. Raises DependencyError when
        the table is not ACTIVE within ``timeout_s``.
        """
        created = False
        status = self._table_status()
        if status is None:
            try:
                response = self._call(
                    "create_table",
                    "create_table",
                    expected=(_IN_USE,),
                    TableName=self.table_name,
                    AttributeDefinitions=[{"AttributeName": model.LEASE_KEY, "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": model.LEASE_KEY, "KeyType": "HASH"}],
                    BillingMode="PAY_PER_REQUEST",
                )
                created = True
                status = response.get("TableDescription", {}).get("TableStatus")
                log.info("lease table created", table=self.table_name)
            except _Expected:
                log.info("lease table being created by another worker", table=self.table_name)
        deadline = self._clock() + timeout_s
        delay = 0.05
        while status != "ACTIVE":
            if self._clock() >= deadline:
                raise DependencyError(
                    f"lease table {self.table_name!r} not ACTIVE after {timeout_s:g} s"
                    f" (status {status}); check the table in the DynamoDB console"
                )
            self._sleep(delay)
            delay = min(delay * 2, 1.0)
            status = self._table_status()
        return created

    # -- reads --------------------------------------------------------------

    def list_leases(self) -> list[Lease]:
        """Every lease in the table (consistent, paginated Scan); non-lease items skipped."""
        leases: list[Lease] = []
        kwargs: dict[str, Any] = {"TableName": self.table_name, "ConsistentRead": True}
        while True:
            page = self._call("list_leases", "scan", **kwargs)
            for item in page.get("Items", []):
                lease = self._parse(item)
                if lease is not None:
                    leases.append(lease)
            last_key = page.get("LastEvaluatedKey")
            if not last_key:
                return leases
            kwargs["ExclusiveStartKey"] = last_key

    def get_lease(self, lease_key: str) -> Lease | None:
        """One lease by key (consistent read); None if absent or not a lease item."""
        response = self._call(
            "get_lease",
            "get_item",
            TableName=self.table_name,
            Key={model.LEASE_KEY: {"S": lease_key}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return self._parse(item) if item else None

    def _parse(self, item: Mapping[str, Any]) -> Lease | None:
        try:
            return lease_from_item(item)
        except ValueError as error:
            # One bad item must not stop every shard: skip it, loudly.
            log.warning("skipping malformed lease item", table=self.table_name, error=str(error))
            return None

    # -- writes -------------------------------------------------------------

    def create_lease_if_absent(self, lease: Lease) -> bool:
        """Write a new lease; False if a lease with that key already exists."""
        try:
            self._call(
                "create_lease",
                "put_item",
                expected=(_CONDITION_FAILED,),
                TableName=self.table_name,
                Item=lease_to_item(lease),
                ConditionExpression="attribute_not_exists(#leaseKey)",
                ExpressionAttributeNames={"#leaseKey": model.LEASE_KEY},
            )
        except _Expected:
            return False
        return True

    def _update(self, op: str, lease_key: str, update: _Update, condition: str) -> Lease:
        """Run one conditional UpdateItem and return the lease as written.

        Raises _Expected on a failed condition so that each caller decides
        what a failure means for it.
        """
        response = self._call(
            op,
            "update_item",
            expected=(_CONDITION_FAILED,),
            TableName=self.table_name,
            Key={model.LEASE_KEY: {"S": lease_key}},
            UpdateExpression=update.expression(),
            ConditionExpression=condition,
            ExpressionAttributeNames=update.names,
            ExpressionAttributeValues=update.values,
            ReturnValues="ALL_NEW",
        )
        written = lease_from_item(response["Attributes"])
        if written is None:  # the key now holds a KCL 3.x non-lease item
            raise LeaseLostError(f"lease {lease_key!r} is no longer a lease item")
        return written

    def _lost(self, lease: Lease, op: str, current: Lease | None) -> LeaseLostError:
        if current is None:
            return LeaseLostError(
                f"{op} of lease {lease.lease_key!r} failed: the lease was deleted"
            )
        return LeaseLostError(
            f"{op} of lease {lease.lease_key!r} failed: owner now {current.lease_owner!r},"
            f" counter {current.lease_counter} (expected {lease.lease_counter})"
        )

    def _counter_condition(self, update: _Update, lease: Lease) -> str:
        expected = update.value("expected", _n(lease.lease_counter))
        return f"{update.name(model.LEASE_COUNTER)} = {expected}"

    def _owner_condition(self, update: _Update, worker_id: str) -> str:
        return f"{update.name(model.LEASE_OWNER)} = {update.value('me', {'S': worker_id})}"

    def _write_or_recover(
        self,
        op: str,
        lease: Lease,
        update: _Update,
        condition: str,
        worker_id: str,
        shows_write: Callable[[Lease], bool] = lambda current: True,
    ) -> Lease:
        """A counter-conditioned write (counter -> counter+1) that survives botocore's retries.

        When a write's first attempt succeeded but its response was lost, the
        retry fails the condition. A re-read showing this worker at counter+1
        with the written values proves the write happened; anything else
        means the lease is lost.
        """
        try:
            return self._update(op, lease.lease_key, update, condition)
        except _Expected:
            current = self.get_lease(lease.lease_key)
            if (
                current is not None
                and current.lease_owner == worker_id
                and current.lease_counter == lease.lease_counter + 1
                and shows_write(current)
            ):
                return current
            raise self._lost(lease, op, current) from None

    def renew(self, lease: Lease) -> Lease:
        """Bump the counter of a lease this worker holds; LeaseLostError if it is gone."""
        if lease.lease_owner is None:
            raise InvalidStateError(f"cannot renew unowned lease {lease.lease_key!r}")
        update = _Update()
        update.set(model.LEASE_COUNTER, _n(lease.lease_counter + 1))
        condition = self._counter_condition(update, lease)
        return self._write_or_recover("renew", lease, update, condition, lease.lease_owner)

    def take(self, lease: Lease, worker_id: str) -> Lease:
        """Take ``lease`` (available or stolen) for ``worker_id``; LeaseLostError on a lost race."""
        update = _Update()
        update.set(model.LEASE_OWNER, {"S": worker_id})
        update.set(model.LEASE_COUNTER, _n(lease.lease_counter + 1))
        if lease.lease_owner is not None and lease.lease_owner != worker_id:
            switches = update.name(model.OWNER_SWITCHES)
            update.sets.append(
                f"{switches} = if_not_exists({switches}, {update.value('zero', _n(0))})"
                f" + {update.value('one', _n(1))}"
            )
        condition = self._counter_condition(update, lease)
        return self._write_or_recover("take", lease, update, condition, worker_id)

    def evict(self, lease: Lease, worker_id: str) -> None:
        """Release a lease this worker holds (graceful hand-off); LeaseLostError if not held.

        The counter is incremented in place rather than set from the caller's
        view: the condition is on the owner only, and a counter must never go
        back to a value a peer may still hold a take condition for.
        """
        update = _Update()
        update.remove(model.LEASE_OWNER)
        counter = update.name(model.LEASE_COUNTER)
        update.sets.append(f"{counter} = {counter} + {update.value('one', _n(1))}")
        condition = self._owner_condition(update, worker_id)
        try:
            self._update("evict", lease.lease_key, update, condition)
        except _Expected:
            raise LeaseLostError(
                f"evict of lease {lease.lease_key!r} failed: not held by {worker_id!r}"
            ) from None

    def checkpoint(
        self,
        lease: Lease,
        position: ExtendedSequenceNumber,
        worker_id: str,
        pending: ExtendedSequenceNumber | None = None,
        pending_state: bytes | None = None,
    ) -> Lease:
        """Write a checkpoint (also a renewal); LeaseLostError if the lease is no longer held.

        ``pending``/``pending_state`` are written as the prepared checkpoint,
        or removed when ``pending`` is None. ownerSwitchesSinceCheckpoint
        goes back to 0.
        """
        if pending is None and pending_state is not None:
            raise ValueError("pending_state needs a pending checkpoint position")
        update = _Update()
        update.set_position(model.CHECKPOINT, model.CHECKPOINT_SUB, position)
        update.set(model.OWNER_SWITCHES, _n(0))
        update.set(model.LEASE_COUNTER, _n(lease.lease_counter + 1))
        self._set_pending(update, pending, pending_state)
        condition = f"{self._counter_condition(update, lease)} AND {self._owner_condition(update, worker_id)}"
        return self._write_or_recover(
            "checkpoint",
            lease,
            update,
            condition,
            worker_id,
            lambda current: (
                current.checkpoint == position
                and current.pending_checkpoint == pending
                and current.pending_checkpoint_state == pending_state
            ),
        )

    def prepare_checkpoint(
        self,
        lease: Lease,
        pending: ExtendedSequenceNumber,
        worker_id: str,
        pending_state: bytes | None = None,
    ) -> Lease:
        """Write only the prepared (pending) checkpoint; LeaseLostError if not held."""
        update = _Update()
        update.set(model.LEASE_COUNTER, _n(lease.lease_counter + 1))
        self._set_pending(update, pending, pending_state)
        condition = f"{self._counter_condition(update, lease)} AND {self._owner_condition(update, worker_id)}"
        return self._write_or_recover(
            "prepare_checkpoint",
            lease,
            update,
            condition,
            worker_id,
            lambda current: (
                current.pending_checkpoint == pending
                and current.pending_checkpoint_state == pending_state
            ),
        )

    @staticmethod
    def _set_pending(
        update: _Update, pending: ExtendedSequenceNumber | None, pending_state: bytes | None
    ) -> None:
        update.set_position(model.PENDING_CHECKPOINT, model.PENDING_CHECKPOINT_SUB, pending)
        if pending_state is None:
            update.remove(model.PENDING_CHECKPOINT_STATE)
        else:
            update.set(model.PENDING_CHECKPOINT_STATE, {"B": pending_state})

    def set_child_shard_ids(self, lease: Lease, child_ids: Iterable[str]) -> Lease:
        """Record the children of a finished shard; LeaseLostError if the lease was deleted.

        Conditional on the lease existing only and leaving the counter alone,
        as the Java client does: the children are a fact about the shard, not
        about its owner, and this write must not race with renewals.
        """
        ids = frozenset(child_ids)
        if not ids:
            raise ValueError("child shard ids must not be empty (DynamoDB rejects empty sets)")
        update = _Update()
        update.set(model.CHILD_SHARD_IDS, model.string_set(ids))
        condition = f"attribute_exists({update.name(model.LEASE_KEY)})"
        try:
            return self._update("set_child_shard_ids", lease.lease_key, update, condition)
        except _Expected:
            raise self._lost(lease, "set_child_shard_ids", None) from None

    def delete_lease(self, lease_key: str) -> None:
        """Delete a lease (cleanup of finished shards); absent keys are fine."""
        self._call(
            "delete_lease",
            "delete_item",
            TableName=self.table_name,
            Key={model.LEASE_KEY: {"S": lease_key}},
        )
