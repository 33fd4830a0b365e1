"""The tweet counter's DynamoDB tables: creating them, the three writes the counter makes, and
reading them back.

Owns the table layout (four tables sharing a prefix, default ``tweets``):

====================  =====================  ==================================================
table                 key                    attributes
====================  =====================  ==================================================
``<prefix>-counts``   minute (S), shard (S)  ``n_<lang>`` (N) per language, ``through`` (S)
``<prefix>-late``     minute (S), shard (S)  same, for tweets past the allowed lateness
``<prefix>-progress`` shard (S)              ``records``, ``counted``, ``late``,
                                             ``duplicates``, ``invalid`` (N), ``through`` (S),
                                             ``updatedMs`` (N)
``<prefix>-seen``     tweet_id (S)           ``holder`` (S): the record that counts this id;
                                             ``expires`` (N): DynamoDB TTL, epoch seconds
====================  =====================  ==================================================

and the writes: :meth:`ResultsStore.claim` (a conditional put: the first record to claim a
tweet id holds it), :meth:`ResultsStore.add_after` (one atomic UpdateItem that adds a batch's
sums to an item only if the item's ``through`` is below the batch's first record) and
:meth:`ResultsStore.applied_through` (the strongly consistent read that follows a refused
add). Single-item operations only: DynamoDB Local look-alikes such as dynalite have no
TransactWriteItems, and none is needed (see the package docstring).

Any other service failure is raised as ``DependencyError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from daemon.errors import DependencyError
from processors.tweets.counting import Pending, Target

__all__ = ["ResultsStore", "TableNames", "make_dynamodb_client"]

_CONDITION_FAILED = "ConditionalCheckFailedException"


@dataclass(frozen=True)
class TableNames:
    """The four table names for one prefix."""

    prefix: str = "tweets"

    @property
    def counts(self) -> str:
        return f"{self.prefix}-counts"

    @property
    def late(self) -> str:
        return f"{self.prefix}-late"

    @property
    def progress(self) -> str:
        return f"{self.prefix}-progress"

    @property
    def seen(self) -> str:
        return f"{self.prefix}-seen"

    def of(self, target: Target) -> str:
        return {"counts": self.counts, "late": self.late, "progress": self.progress}[target.table]


def make_dynamodb_client(
    endpoint: str | None = None, region: str | None = None, pool: int = 16
) -> Any:
    """A DynamoDB client with standard retries (throttling is retried inside botocore)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 8},
        max_pool_connections=pool,
        connect_timeout=5,
        read_timeout=20,
    )
    session: Any = boto3.session.Session()
    return session.client("dynamodb", endpoint_url=endpoint, region_name=region, config=config)


def _key(target: Target) -> dict[str, Any]:
    if target.minute is None:
        return {"shard": {"S": target.shard}}
    return {"minute": {"S": target.minute}, "shard": {"S": target.shard}}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class ResultsStore:
    """The results tables behind one boto3 DynamoDB client (thread-safe, as the client is)."""

    def __init__(self, client: Any, names: TableNames) -> None:
        self.client = client
        self.names = names

    # -- set-up ----------------------------------------------------------------------------------

    def ensure_tables(
        self, timeout_s: float = 60.0, log: Callable[[str], None] = lambda _: None
    ) -> None:
        """Create whichever of the four tables is missing (on demand capacity) and wait until
        all are ACTIVE. Safe to run from several processes at once."""
        names = self.names
        layouts = {
            names.counts: [("minute", "HASH"), ("shard", "RANGE")],
            names.late: [("minute", "HASH"), ("shard", "RANGE")],
            names.progress: [("shard", "HASH")],
            names.seen: [("tweet_id", "HASH")],
        }
        created = []
        for table, keys in layouts.items():
            if self._status(table) is None:
                self._create(table, keys)
                created.append(table)
        deadline = time.monotonic() + timeout_s
        for table in layouts:
            while self._status(table) != "ACTIVE":
                if time.monotonic() > deadline:
                    raise DependencyError(f"table {table} not ACTIVE after {timeout_s:.0f} s")
                time.sleep(0.1)
        if names.seen in created:
            self._enable_ttl(names.seen, log)

    def _status(self, table: str) -> str | None:
        try:
            return str(self.client.describe_table(TableName=table)["Table"]["TableStatus"])
        except ClientError as error:
            if _code(error) == "ResourceNotFoundException":
                return None
            raise DependencyError(f"describe table {table}: {error}") from error
        except BotoCoreError as error:
            raise DependencyError(f"describe table {table}: {error}") from error

    def _create(self, table: str, keys: list[tuple[str, str]]) -> None:
        try:
            self.client.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
                AttributeDefinitions=[
                    {"AttributeName": name, "AttributeType": "S"} for name, _ in keys
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as error:
            if _code(error) != "ResourceInUseException":  # another process created it first
                raise DependencyError(f"create table {table}: {error}") from error
        except BotoCoreError as error:
            raise DependencyError(f"create table {table}: {error}") from error

    def _enable_ttl(self, table: str, log: Callable[[str], None]) -> None:
        try:
            self.client.update_time_to_live(
                TableName=table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
            )
        except ClientError as error:
            # dynalite has no TTL; on AWS a second enable is a ValidationException. Claims then
            # simply stay: correctness never depends on them expiring.
            log(f"time to live not enabled on {table} ({_code(error) or error}); claims stay")
        except BotoCoreError as error:
            raise DependencyError(f"enable TTL on {table}: {error}") from error

    # -- the counter's writes --------------------------------------------------------------------

    def claim(self, tweet_id: str, claimant: str, expires_s: int) -> str:
        """Claim ``tweet_id`` for ``claimant``; returns who holds the claim afterwards
        (``claimant`` itself if it won now or earlier, another record if that one was first)."""
        table = self.names.seen
        while True:
            try:
                self.client.put_item(
                    TableName=table,
                    Item={
                        "tweet_id": {"S": tweet_id},
                        "holder": {"S": claimant},
                        "expires": {"N": str(expires_s)},
                    },
                    ConditionExpression="attribute_not_exists(tweet_id)",
                )
                return claimant
            except ClientError as error:
                if _code(error) != _CONDITION_FAILED:
                    raise DependencyError(f"claim tweet {tweet_id}: {error}") from error
            except BotoCoreError as error:
                raise DependencyError(f"claim tweet {tweet_id}: {error}") from error
            item = self._get(table, {"tweet_id": {"S": tweet_id}})
            if item is not None:
                return str(item["holder"]["S"])
            # The claim expired (TTL) between the put and the read: claim again.

    def add_after(
        self, target: Target, todo: Pending, also_set: dict[str, int] | None = None
    ) -> bool:
        """Add ``todo.sums`` to the item and set its ``through`` to ``todo.last``, atomically,
        if the item's ``through`` is absent or below ``todo.first``; False if it is not."""
        names = {"#through": "through"}
        values: dict[str, Any] = {":first": {"S": todo.first}, ":last": {"S": todo.last}}
        adds = []
        for index, (attribute, amount) in enumerate(sorted(todo.sums.items())):
            names[f"#a{index}"] = attribute
            values[f":a{index}"] = {"N": str(amount)}
            adds.append(f"#a{index} :a{index}")
        sets = ["#through = :last"]
        for index, (attribute, number) in enumerate(sorted((also_set or {}).items())):
            names[f"#s{index}"] = attribute
            values[f":s{index}"] = {"N": str(number)}
            sets.append(f"#s{index} = :s{index}")
        expression = "SET " + ", ".join(sets)
        if adds:
            expression += " ADD " + ", ".join(adds)
        table = self.names.of(target)
        try:
            self.client.update_item(
                TableName=table,
                Key=_key(target),
                UpdateExpression=expression,
                ConditionExpression="attribute_not_exists(#through) OR #through < :first",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
            return True
        except ClientError as error:
            if _code(error) == _CONDITION_FAILED:
                return False
            raise DependencyError(f"update {table} {target}: {error}") from error
        except BotoCoreError as error:
            raise DependencyError(f"update {table} {target}: {error}") from error

    def applied_through(self, target: Target) -> str | None:
        """The item's ``through`` (strongly consistent), or None if the item does not exist."""
        item = self._get(self.names.of(target), _key(target))
        if item is None or "through" not in item:
            return None
        return str(item["through"]["S"])

    def _get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        try:
            response = self.client.get_item(TableName=table, Key=key, ConsistentRead=True)
        except (ClientError, BotoCoreError) as error:
            raise DependencyError(f"read {table} {key}: {error}") from error
        item = response.get("Item")
        return item if isinstance(item, dict) else None

    # -- reading back ----------------------------------------------------------------------------

    def progress(self, shard_id: str) -> dict[str, Any] | None:
        """A shard's progress item as plain values, or None."""
        item = self._get(self.names.progress, {"shard": {"S": shard_id}})
        return plain(item) if item is not None else None

    def scan(self, table: str) -> Iterator[dict[str, Any]]:
        """Every item of ``table`` as plain values (strings and ints)."""
        start: dict[str, Any] | None = None
        while True:
            request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
            if start:
                request["ExclusiveStartKey"] = start
            try:
                page = self.client.scan(**request)
            except (ClientError, BotoCoreError) as error:
                raise DependencyError(f"scan {table}: {error}") from error
            for item in page.get("Items", []):
                yield plain(item)
            start = page.get("LastEvaluatedKey")
            if not start:
                return


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item with its S and N attributes as str and int (others dropped)."""
    out: dict[str, Any] = {}
    for name, value in item.items():
        if "S" in value:
            out[name] = value["S"]
        elif "N" in value:
            out[name] = int(value["N"])
    return out
