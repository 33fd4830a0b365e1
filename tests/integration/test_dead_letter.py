import base64
import uuid

import orjson
import pytest

from daemon.dead_letter import DeadLetter, DynamoDbDeadLetters, KinesisDeadLetters
from daemon.errors import DependencyError
from protocol.records import wire_record
from tests.support.daemon_runner import aws_client, create_stream

pytestmark = pytest.mark.integration


def letter() -> DeadLetter:
    record = wire_record(base64.b64encode(b"poison").decode(), "pk-1", "123", 1700000000000, 2)
    return DeadLetter.from_wire_record("app", "shardId-000000000001", record, "exited with 1", 3)


def test_dynamodb_dead_letter_keeps_everything_needed_to_replay(moto_server):
    table = f"dlq-{uuid.uuid4().hex[:8]}"
    client = aws_client("dynamodb", moto_server.endpoint)
    sink = DynamoDbDeadLetters(client, table)
    sink.ensure_table()
    sink.ensure_table()  # idempotent
    sink.write(letter())
    (item,) = client.scan(TableName=table)["Items"]
    assert item["deadLetterKey"] == {"S": "shardId-000000000001/123/2"}
    assert base64.b64decode(item["data"]["S"]) == b"poison"
    assert item["partition_key"] == {"S": "pk-1"}
    assert item["failure"] == {"S": "exited with 1"}
    assert item["attempts"] == {"N": "3"}


def test_kinesis_dead_letter_is_a_json_record_keyed_by_shard(moto_server):
    stream = f"dlq-{uuid.uuid4().hex[:8]}"
    kinesis = aws_client("kinesis", moto_server.endpoint)
    (shard,) = create_stream(kinesis, stream, 1)
    KinesisDeadLetters(kinesis, stream).write(letter())
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    (record,) = kinesis.get_records(ShardIterator=iterator)["Records"]
    body = orjson.loads(record["Data"])
    assert record["PartitionKey"] == "shardId-000000000001"
    assert body["sequence_number"] == "123" and body["sub_sequence_number"] == 2


def test_a_failed_dead_letter_write_raises_instead_of_losing_the_record(moto_server):
    sink = DynamoDbDeadLetters(aws_client("dynamodb", moto_server.endpoint), "no-such-table")
    with pytest.raises(DependencyError, match="no-such-table"):
        sink.write(letter())
