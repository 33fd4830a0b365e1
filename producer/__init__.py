"""A KPL-compatible Kinesis producer in plain Python.

    from producer import KinesisProducer, ProducerConfig

    with KinesisProducer(ProducerConfig(region="us-west-1")) as kpl:
        future = kpl.add_user_record("tweets", partition_key, data)
        result = future.result()  # UserRecordResult: sequence_number, sub_sequence_number, ...

Modules: config (settings), producer (the public class and its threads), pipeline, outcomes
and streams (the pure state machine), records, collector, ordering, limiter, retry, shard_map,
timers, futures, metrics and metrics_upload, clients (boto3), results (what futures resolve
to), testing (an in-memory Kinesis and a fault injector), cli (``kcl-produce``).
"""

from producer.config import ProducerConfig
from producer.metrics import MetricsSnapshot, Stat
from producer.producer import KinesisProducer
from producer.results import (
    Attempt,
    BufferFullError,
    ProducerClosedError,
    UserRecordFailed,
    UserRecordResult,
)

__all__ = [
    "Attempt",
    "BufferFullError",
    "KinesisProducer",
    "MetricsSnapshot",
    "ProducerClosedError",
    "ProducerConfig",
    "Stat",
    "UserRecordFailed",
    "UserRecordResult",
]
