"""The v3 record processor base class, and the adapter from v2 processors.

v3 is amazon_kclpy's current API: ``initialize``, ``process_records``,
``lease_lost``, ``shard_ended`` and ``shutdown_requested``, each given an
input object from ``processors.kclpy.messages``.
"""

from __future__ import annotations

from typing import Any

from processors.kclpy import messages
from processors.kclpy.messages import ShutdownInput


class RecordProcessorBase:
    """Subclass and implement every method.

    Missing methods are not caught at construction (amazon_kclpy does not
    enforce them either): calling one raises NotImplementedError, which the
    SDK logs before answering the action.
    """

    def initialize(self, initialize_input: messages.InitializeInput) -> None:
        raise NotImplementedError

    def process_records(self, process_records_input: messages.ProcessRecordsInput) -> None:
        raise NotImplementedError

    def lease_lost(self, lease_lost_input: messages.LeaseLostInput) -> None:
        raise NotImplementedError

    def shard_ended(self, shard_ended_input: messages.ShardEndedInput) -> None:
        raise NotImplementedError

    def shutdown_requested(self, shutdown_requested_input: messages.ShutdownRequestedInput) -> None:
        raise NotImplementedError

    version = 3


class V2toV3Processor(RecordProcessorBase):
    """Presents a v2 processor as a v3 one (lease lost and shard end become ``shutdown``)."""

    def __init__(self, delegate: Any) -> None:
        self.delegate = delegate

    def initialize(self, initialize_input: messages.InitializeInput) -> None:
        self.delegate.initialize(initialize_input)

    def process_records(self, process_records_input: messages.ProcessRecordsInput) -> None:
        self.delegate.process_records(process_records_input)

    def lease_lost(self, lease_lost_input: messages.LeaseLostInput) -> None:
        self.delegate.shutdown(ShutdownInput.zombie())

    def shard_ended(self, shard_ended_input: messages.ShardEndedInput) -> None:
        self.delegate.shutdown(ShutdownInput.terminate(shard_ended_input.checkpointer))

    def shutdown_requested(self, shutdown_requested_input: messages.ShutdownRequestedInput) -> None:
        self.delegate.shutdown_requested(shutdown_requested_input)
