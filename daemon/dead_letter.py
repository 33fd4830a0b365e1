"""Where poison records go: a DynamoDB table or a Kinesis stream.

Each dead letter keeps everything needed to inspect or replay the record:
its shard, sequence and sub-sequence numbers, partition key, data (base64,
as delivered), arrival time, the failure and the number of attempts. The
write must succeed before the consumer checkpoints past the record, so these
calls raise (``DependencyError``) rather than losing a record quietly.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from daemon.errors import DependencyError


@dataclass(frozen=True)
class DeadLetter:
    application: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    data: str
    approximate_arrival_timestamp: int
    failure: str
    attempts: int
    dead_lettered_at: float

    @property
    def key(self) -> str:
        return f"{self.shard_id}/{self.sequence_number}/{self.sub_sequence_number}"

    @classmethod
    def from_wire_record(
        cls, application: str, shard_id: str, record: dict[str, Any], failure: str, attempts: int
    ) -> DeadLetter:
        return cls(
            application=application,
            shard_id=shard_id,
            sequence_number=record["sequenceNumber"],
            sub_sequence_number=record["subSequenceNumber"],
            partition_key=record["partitionKey"],
            data=record["data"],
            approximate_arrival_timestamp=record["approximateArrivalTimestamp"],
            failure=failure,
            attempts=attempts,
            dead_lettered_at=time.time(),
        )


class DeadLetterSink(Protocol):
    def write(self, letter: DeadLetter) -> None: ...


class DynamoDbDeadLetters:
    """One item per poison record, keyed ``shard/sequence/sub-sequence``."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self.table = table

    def ensure_table(self) -> None:
        try:
            self._client.describe_table(TableName=self.table)
            return
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise DependencyError(f"dead-letter table {self.table}: {error}") from error
        try:
            self._client.create_table(
                TableName=self.table,
                AttributeDefinitions=[{"AttributeName": "deadLetterKey", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "deadLetterKey", "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
            self._client.get_waiter("table_exists").wait(
                TableName=self.table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
        except (ClientError, BotoCoreError) as error:
            raise DependencyError(
                f"cannot create dead-letter table {self.table}: {error}"
            ) from error

    def write(self, letter: DeadLetter) -> None:
        item: dict[str, Any] = {"deadLetterKey": {"S": letter.key}}
        for name, value in asdict(letter).items():
            if isinstance(value, str):
                item[name] = {"S": value}
            else:
                item[name] = {"N": str(value)}
        try:
            self._client.put_item(TableName=self.table, Item=item)
        except (ClientError, BotoCoreError) as error:
            raise DependencyError(f"dead-letter write to {self.table} failed: {error}") from error


class KinesisDeadLetters:
    """One JSON record per poison record, partitioned by the source shard."""

    def __init__(self, client: Any, stream: str) -> None:
        self._client = client
        self.stream = stream

    def write(self, letter: DeadLetter) -> None:
        try:
            self._client.put_record(
                StreamName=self.stream,
                PartitionKey=letter.shard_id,
                Data=orjson.dumps(asdict(letter)),
            )
        except (ClientError, BotoCoreError) as error:
            raise DependencyError(f"dead-letter write to {self.stream} failed: {error}") from error
