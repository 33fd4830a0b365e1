"""The processor's main loop and its checkpointer (``amazon_kclpy.kcl``'s API).

``KCLProcess(processor).run()`` reads one action at a time from the daemon,
calls the processor, and answers with a ``status`` line. While the processor
runs it may call ``checkpointer.checkpoint(...)``, which writes a checkpoint
request and blocks on the daemon's reply (the protocol is strict call and
response, see shared/spec/multilang-protocol.md).

Behaviour kept from amazon_kclpy, because processors rely on it:

* ``checkpoint`` raises ``CheckpointError(name)`` when the reply carries an
  error name, and ``CheckpointError("InvalidStateException")`` when the next
  message is not a checkpoint reply. Retrying is the processor's choice (the
  usual loop retries ThrottlingException and gives up on ShutdownException).
* An exception escaping a processor method is logged with its traceback and
  the action is still answered with ``status``: the daemon then moves on, so
  for processRecords the batch counts as processed (the KCL's rule too). ``SystemExit`` and
  ``KeyboardInterrupt`` stop the process.
* v1 and v2 processors (told apart by their ``version`` attribute) are
  adapted to the v3 calls.

Beyond it: end of input exits cleanly, even in the middle of a checkpoint
(which then raises ``CheckpointError("ShutdownException")``); the stdout
guard (see ``_channel``); prepared checkpoints.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import IO, Any

from processors.kclpy import dispatch, messages
from processors.kclpy._channel import (
    ProtocolChannel,
    StdoutGuard,
    fd_writer,
    file_writer,
    is_real_stdout,
    paused_gc,
)
from processors.kclpy.checkpoint_error import CheckpointError
from processors.kclpy.v2 import processor as v2processor
from processors.kclpy.v3 import processor as v3processor
from protocol.messages import CheckpointRequest, Status

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "KCLProcess",
    "PreparedCheckpointer",
    "RecordProcessorBase",
]

#: The error name ``prepare_checkpoint`` raises when the daemon did not
#: announce the prepared-checkpoint extension.
UNSUPPORTED = "UnsupportedOperationException"

_PIPE_BUFFER = 1 << 16


def _sequence_text(sequence_number: object) -> Any:
    # Sequence numbers run to 56 digits: as a JSON number they would overflow
    # orjson (and many JSON readers), so integers travel as strings.
    if isinstance(sequence_number, int) and not isinstance(sequence_number, bool):
        return str(sequence_number)
    return sequence_number


class PreparedCheckpointer:
    """A checkpoint the daemon has stored as pending; ``checkpoint()`` commits it."""

    def __init__(
        self, checkpointer: Checkpointer, sequence_number: str | None, sub_sequence_number: Any
    ) -> None:
        self._checkpointer = checkpointer
        self._sequence_number = sequence_number
        self._sub_sequence_number = sub_sequence_number

    @property
    def pending_checkpoint_sequence_number(self) -> str | None:
        return self._sequence_number

    @property
    def pending_checkpoint_sub_sequence_number(self) -> int | None:
        return self._sub_sequence_number

    def checkpoint(self) -> None:
        """Commit the prepared position (an ordinary checkpoint at it)."""
        self._checkpointer.checkpoint(self._sequence_number, self._sub_sequence_number)


class Checkpointer:
    """Sends checkpoint requests to the daemon and waits for each answer."""

    def __init__(self, channel: ProtocolChannel) -> None:
        self._channel = channel
        self._supports_prepared = False
        self._last_delivered: messages.Record | None = None

    def _initialized(self, initialize_input: messages.InitializeInput) -> None:
        self._supports_prepared = initialize_input.supports_prepared_checkpoints

    def _delivered(self, records: list[messages.Record]) -> None:
        if records:
            self._last_delivered = records[-1]

    def checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> None:
        """Record progress up to and including the given record.

        With no sequence number: up to the last record delivered so far (at
        shard end: the end of the shard). Raises CheckpointError on failure.
        """
        self._request(sequence_number, sub_sequence_number, prepare=False)

    def prepare_checkpoint(
        self, sequence_number: str | None = None, sub_sequence_number: int | None = None
    ) -> PreparedCheckpointer:
        """Store a pending checkpoint without committing it (two-phase checkpoint).

        Needs the daemon's prepared-checkpoint extension; without it raises
        ``CheckpointError("UnsupportedOperationException")`` and sends nothing.
        """
        if not self._supports_prepared:
            raise CheckpointError(UNSUPPORTED)
        reply = self._request(sequence_number, sub_sequence_number, prepare=True)
        resolved, resolved_sub = reply.sequence_number, reply.sub_sequence_number
        if resolved is None:
            resolved, resolved_sub = self._resolve_latest(sequence_number, sub_sequence_number)
        return PreparedCheckpointer(self, resolved, resolved_sub)

    def _resolve_latest(self, sequence_number: Any, sub_sequence_number: Any) -> tuple[Any, Any]:
        # "No sequence number" means the last record delivered: pin it now so a
        # later commit cannot silently cover records delivered after the prepare.
        if sequence_number is None and self._last_delivered is not None:
            return self._last_delivered.sequence_number, self._last_delivered.sub_sequence_number
        return _sequence_text(sequence_number), sub_sequence_number

    def _request(
        self, sequence_number: Any, sub_sequence_number: Any, prepare: bool
    ) -> messages.CheckpointInput:
        request = CheckpointRequest(_sequence_text(sequence_number), sub_sequence_number, prepare)
        self._channel.write(request.encode())
        body = self._channel.read()
        if body is None:
            # The daemon is gone (it closes our stdin when the lease is lost or
            # it shuts down); this is the name processors already treat as
            # "stop checkpointing".
            raise CheckpointError("ShutdownException")
        if body.get("action") != "checkpoint":
            # Same as amazon_kclpy: the unexpected message is dropped and the
            # processor told the checkpointer is in a state it cannot use.
            raise CheckpointError("InvalidStateException")
        reply = messages.CheckpointInput(body)
        if reply.error is not None:
            raise CheckpointError(reply.error)
        return reply


class RecordProcessorBase:
    """The v1 processor API: ``initialize(shard_id)``, ``process_records(records,
    checkpointer)``, ``shutdown(checkpointer, reason)``."""

    def initialize(self, shard_id: str) -> None:
        raise NotImplementedError

    def process_records(self, records: list[messages.Record], checkpointer: Checkpointer) -> None:
        raise NotImplementedError

    def shutdown(self, checkpointer: Any, reason: str) -> None:
        raise NotImplementedError

    def shutdown_requested(self, checkpointer: Checkpointer) -> None:
        pass

    version = 1


def _as_v3(record_processor: Any) -> Any:
    version = getattr(record_processor, "version", 3)
    if version == 1:
        return v3processor.V2toV3Processor(v2processor.V1toV2Processor(record_processor))
    if version == 2:
        return v3processor.V2toV3Processor(record_processor)
    return record_processor


class KCLProcess:
    """Runs one record processor against the daemon on stdin/stdout.

    ``input_file``/``output_file``/``error_file`` default to the process's
    stdin, stdout and stderr. When the output is the real stdout, ``run()``
    guards it (see the module docstring of ``_channel``).
    """

    #: Whether to accept the daemon's offer of ``recordColumns`` (protocol.records).
    record_columns = True

    def __init__(
        self,
        record_processor: Any,
        input_file: IO[Any] | None = None,
        output_file: IO[Any] | None = None,
        error_file: IO[Any] | None = None,
    ) -> None:
        self.processor = _as_v3(record_processor)
        self._input_file = input_file
        self._output_file = output_file
        self._error_file = error_file
        self._shard_id: str | None = None
        self._status_lines: dict[str, bytes] = {}
        self.checkpointer: Checkpointer | None = None

    def run(self) -> None:
        """Serve actions until the daemon closes our input."""
        guard = None
        output = self._output_file
        if output is None or is_real_stdout(output):
            guard = StdoutGuard()
            write = fd_writer(guard.protocol_fd)
        else:
            write = file_writer(output)
        channel = ProtocolChannel(self._line_reader(), write)
        self.checkpointer = Checkpointer(channel)
        try:
            while not channel.closed:
                body = channel.read()
                if body is not None:
                    self._handle(channel, body)
        finally:
            if guard is not None:
                guard.restore()

    def _line_reader(self) -> Callable[[], bytes | str]:
        source = self._input_file
        if source is not None and source is not sys.stdin:
            return source.readline  # type: ignore[no-any-return]
        # Our own binary reader on the real stdin: no text decoding of lines
        # that can be megabytes long, and a buffer as large as a pipe's.
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            return sys.stdin.readline
        return open(fd, "rb", buffering=_PIPE_BUFFER, closefd=False).readline

    def _handle(self, channel: ProtocolChannel, body: dict[str, Any]) -> None:
        action = body["action"]
        if action in dispatch.STRAY_ACTIONS:
            self._log(f"ignored a {action!r} message that answers nothing: {str(body)[:200]}")
            return
        with paused_gc():
            message = dispatch.decode_action(body)
        checkpointer = self.checkpointer
        assert checkpointer is not None
        if isinstance(message, messages.InitializeInput):
            self._shard_id = message.shard_id
            checkpointer._initialized(message)
        elif isinstance(message, messages.ProcessRecordsInput):
            checkpointer._delivered(message.records)
        try:
            message.dispatch(checkpointer, self.processor)
        except Exception as error:
            self._log_processor_error(action, error)
        if channel.closed:
            return
        if isinstance(message, messages.InitializeInput) and message.offers_record_columns:
            # Ask for the record-columns extension: cheaper batches to decode.
            channel.write(Status(action, record_columns=self.record_columns).encode())
        else:
            channel.write(self._status_line(action))

    def _status_line(self, action: str) -> bytes:
        line = self._status_lines.get(action)
        if line is None:
            line = self._status_lines[action] = Status(action).encode()
        return line

    def _log(self, text: str) -> None:
        error_file = self._error_file if self._error_file is not None else sys.stderr
        error_file.write(f"processors.kclpy [{self._shard_id or 'no shard yet'}]: {text}\n")
        error_file.flush()

    def _log_processor_error(self, action: str, error: Exception) -> None:
        consequence = (
            "the batch counts as processed and the daemon sends the next one"
            if action == "processRecords"
            else "the action is answered as done"
        )
        error_file = self._error_file if self._error_file is not None else sys.stderr
        self._log(
            f"record processor raised {type(error).__name__} during {action}: {error}; "
            f"{consequence}. Traceback follows."
        )
        traceback.print_exc(file=error_file)
        error_file.flush()
