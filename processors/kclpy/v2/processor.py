"""The v2 record processor base class, and the adapter from v1 processors.

v2 processors receive input objects but still have a single ``shutdown``
call whose ``reason`` is TERMINATE (shard ended) or ZOMBIE (lease lost).
"""

from __future__ import annotations

from typing import Any

from processors.kclpy import messages


class RecordProcessorBase:
    """Subclass and implement ``initialize``, ``process_records`` and ``shutdown``."""

    def initialize(self, initialize_input: messages.InitializeInput) -> None:
        raise NotImplementedError

    def process_records(self, process_records_input: messages.ProcessRecordsInput) -> None:
        raise NotImplementedError

    def shutdown(self, shutdown_input: messages.ShutdownInput) -> None:
        raise NotImplementedError

    def shutdown_requested(self, shutdown_requested_input: messages.ShutdownRequestedInput) -> None:
        pass

    version = 2


class V1toV2Processor(RecordProcessorBase):
    """Presents a v1 processor (``kcl.RecordProcessorBase``) as a v2 one."""

    def __init__(self, delegate: Any) -> None:
        self.delegate = delegate

    def initialize(self, initialize_input: messages.InitializeInput) -> None:
        self.delegate.initialize(initialize_input.shard_id)

    def process_records(self, process_records_input: messages.ProcessRecordsInput) -> None:
        self.delegate.process_records(
            process_records_input.records, process_records_input.checkpointer
        )

    def shutdown(self, shutdown_input: messages.ShutdownInput) -> None:
        self.delegate.shutdown(shutdown_input.checkpointer, shutdown_input.reason)

    def shutdown_requested(self, shutdown_requested_input: messages.ShutdownRequestedInput) -> None:
        self.delegate.shutdown_requested(shutdown_requested_input.checkpointer)
