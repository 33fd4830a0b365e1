"""The public producer: ``KinesisProducer``, a KPL-compatible producer in plain Python.

Owns the threads and the I/O around the pure :class:`~producer.pipeline.Pipeline`:

* the caller's thread validates a record, waits for room (bounded memory), and aggregates it
  into its shard's open aggregate, all under one lock, with no queue in between;
* one pump thread wakes at the next deadline (or when told), asks the pipeline for a plan, and
  hands each PutRecords request to a pool of ``max_connections`` threads and each shard-map
  fetch to a control thread;
* a pool thread makes the call, applies the outcome under the lock, and resolves futures after
  releasing it (a future's callbacks may call the producer again).

Threads suit ``concurrent.futures`` and boto3, whose calls block; the pipeline's own work is
short and happens under a lock that nothing holds across I/O. PutRecords and ListShards go
through ``client`` (anything with boto3's ``put_records`` and ``list_shards``), the seam where
tests inject throttling and partial failures.

No call waits forever: every record ends by ``record_ttl`` (plus one request timeout), so
``flush_sync()`` and ``close()`` return; ``close(timeout)`` fails what is left when the time is
up. If the pump or a completion hits a bug, every pending future fails with code
``ProducerError`` instead of hanging, and later calls raise :class:`ProducerClosedError`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import structlog

from producer.clients import error_code_and_message, make_cloudwatch_client, make_kinesis_client
from producer.collector import Request
from producer.config import ProducerConfig
from producer.futures import new_future
from producer.metrics import Metrics, MetricsSnapshot
from producer.metrics_upload import MetricsUploader
from producer.pipeline import Pipeline, Resolution, result_of
from producer.records import new_entry
from producer.results import (
    CLOSED,
    PRODUCER_ERROR,
    Attempt,
    BufferFullError,
    ProducerClosedError,
    UserRecordFailed,
    UserRecordResult,
)
from producer.shard_map import fetch_shard_map

__all__ = ["KinesisProducer"]

_log = structlog.get_logger("producer")
# The pump re-checks its plan at least this often even if nothing wakes it (belt and braces).
_MAX_SLEEP = 1.0
_INF = float("inf")
# While every due record must wait, the pump looks again this often (adds do not wake it then).
_STALLED_POLL = 0.01


class KinesisProducer:
    """Writes user records to Kinesis streams like the KPL; thread-safe.

    ``add_user_record`` returns a ``concurrent.futures.Future`` of a
    :class:`~producer.results.UserRecordResult`; a failed record's future raises
    :class:`~producer.results.UserRecordFailed` carrying that result.
    """

    def __init__(
        self,
        config: ProducerConfig | None = None,
        *,
        client: Any = None,
        cloudwatch_client_factory: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config = config or ProducerConfig()
        self._client = client if client is not None else make_kinesis_client(config)
        self._clock = clock
        self._buffered = min(config.record_max_buffered_time, config.record_ttl) / 1000.0
        self._ttl = config.record_ttl / 1000.0
        self._metrics = Metrics()
        self._pipeline = Pipeline(config, self._metrics)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._waiting_for_room = 0
        self._seq = 0
        # Every unresolved future by entry number: the last resort of _break.
        self._pending: dict[int, Future[UserRecordResult]] = {}
        self._closed = False
        self._broken: str | None = None
        self._stopping = False
        # close() gave up on requests in flight: the pump may stop without waiting for them.
        self._abandoned = False
        self._refreshing = 0
        self._senders = ThreadPoolExecutor(config.max_connections, thread_name_prefix="kpl-send")
        self._control = ThreadPoolExecutor(1, thread_name_prefix="kpl-shard-map")
        self._uploader: MetricsUploader | None = None
        if config.metrics_level != "none":
            factory = cloudwatch_client_factory or (lambda: make_cloudwatch_client(config))
            self._uploader = MetricsUploader(
                self._metrics,
                factory,
                config.metrics_namespace,
                config.metrics_level,
                config.metrics_granularity,
                config.metrics_upload_delay,
            )
            self._uploader.start()
        self._pump_thread = threading.Thread(target=self._pump, name="kpl-pump", daemon=True)
        self._pump_thread.start()

    # -- public API ------------------------------------------------------------------------------

    def add_user_record(
        self,
        stream: str,
        partition_key: str,
        data: bytes | bytearray | memoryview | str,
        explicit_hash_key: str | int | None = None,
    ) -> Future[UserRecordResult]:
        """Queues one record; the future resolves when it is written or has failed for good.

        Raises ``ValueError`` for an invalid record, :class:`BufferFullError` when the
        outstanding limits are reached and ``backpressure`` is "raise" (with "block", the call
        waits for room), and :class:`ProducerClosedError` after ``close()``.
        """
        if not isinstance(stream, str) or not stream:
            raise ValueError("stream must be a non-empty string")
        # A running future (cancel() says no: every future is ours to resolve), built cheap.
        future: Future[UserRecordResult] = new_future()
        entry = new_entry(
            stream,
            partition_key,
            data,
            explicit_hash_key,
            self.config.max_user_record_size,
            future,
            self._clock(),
            self._buffered,
            self._ttl,
            0,
        )
        with self._lock:
            if self._wait_for_room(entry.size):
                # Its time to live starts when the producer takes it, not while it waited.
                entry.restamp(self._clock(), self._buffered, self._ttl)
            self._seq += 1
            entry.seq = self._seq
            self._pending[self._seq] = future
            if self._pipeline.admit(entry):
                self._wake.notify()
        return future

    def flush(self, stream: str | None = None) -> None:
        """Sends everything buffered now, without waiting (``stream`` is accepted for KPL
        compatibility; all streams are flushed)."""
        with self._lock:
            self._pipeline.flush(self._clock())
            self._wake.notify()

    def flush_sync(self, timeout: float | None = None) -> None:
        """Flushes and waits until every record added so far has succeeded or failed.
        Raises ``TimeoutError`` if ``timeout`` seconds pass first."""
        self.flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            # Waits for the futures themselves, which resolve just after the records finish.
            while self._pending and self._broken is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"{len(self._pending)} records still outstanding")
                self._idle.wait(remaining)

    def close(self, timeout: float | None = None) -> None:
        """Stops taking records, sends all buffered ones and waits for them, then stops the
        threads. With ``timeout`` (seconds), records still unfinished then fail with code
        ``ProducerClosed`` and requests still in flight are left to end on their own. Safe to
        call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._room.notify_all()
        abandoned = False
        try:
            self.flush_sync(timeout)
        except TimeoutError:
            abandoned = True
            with self._lock:
                resolutions = self._pipeline.abandon(CLOSED, "close() timed out", self._clock())
            self._resolve(resolutions)
        with self._lock:
            self._stopping = True
            self._abandoned = abandoned or self._broken is not None
            self._wake.notify()
            wait = not self._abandoned
        self._pump_thread.join(None if wait else 1.0)
        self._senders.shutdown(wait=wait, cancel_futures=True)
        self._control.shutdown(wait=wait, cancel_futures=True)
        if self._uploader is not None:
            self._uploader.stop()

    def __enter__(self) -> KinesisProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def outstanding_records(self) -> int:
        """User records added whose futures have not resolved yet (the KPL's
        getOutstandingRecordsCount)."""
        return len(self._pending)

    def metrics(self) -> MetricsSnapshot:
        """The metrics so far (cumulative since start)."""
        with self._lock:
            self._pipeline.flush_counters()
        return self._metrics.snapshot()

    # -- internals -------------------------------------------------------------------------------

    def _wait_for_room(self, size: int) -> bool:
        """Returns once a record of ``size`` bytes fits (True if that meant waiting)."""
        waited = False
        while True:
            if self._closed or self._broken is not None:
                raise ProducerClosedError(self._broken or "the producer is closed")
            if self._pipeline.has_room(size):
                return waited
            if self.config.backpressure == "raise":
                raise BufferFullError(
                    f"{self._pipeline.outstanding_records} records "
                    f"({self._pipeline.outstanding_bytes} bytes) outstanding: the limit is "
                    f"max_outstanding_records={self.config.max_outstanding_records}, "
                    f"max_outstanding_bytes={self.config.max_outstanding_bytes}"
                )
            waited = True
            self._waiting_for_room += 1
            try:
                self._room.wait()
            finally:
                self._waiting_for_room -= 1

    def _after_change(self) -> None:
        """Under the lock, after records finished: wake whoever waits for that."""
        if self._waiting_for_room:
            self._room.notify_all()
        self._wake.notify()

    def _pump(self) -> None:
        try:
            self._pump_loop()
        except BaseException as error:
            self._break(error)

    def _pump_loop(self) -> None:
        pipeline = self._pipeline
        while True:
            with self._lock:
                while True:
                    if self._stopping and (
                        self._abandoned or (not pipeline.in_flight and not self._refreshing)
                    ):
                        return
                    now = self._clock()
                    free = self.config.max_connections - pipeline.in_flight
                    plan = pipeline.poll(now, free)
                    quiet = plan.saturated or plan.stalled
                    pipeline.wake_at = -_INF if quiet else plan.wake_at
                    if plan.requests or plan.refreshes or plan.resolutions:
                        self._refreshing += len(plan.refreshes)
                        if plan.resolutions:
                            self._after_change()
                        break
                    sleep = min(_MAX_SLEEP, max(0.0, plan.wake_at - now))
                    if plan.stalled:
                        sleep = min(sleep, _STALLED_POLL)
                    self._wake.wait(sleep)
            self._resolve(plan.resolutions)
            for request in plan.requests:
                self._senders.submit(self._send, request)
            for stream in plan.refreshes:
                self._control.submit(self._refresh, stream)

    def _send(self, request: Request) -> None:
        try:
            items = [kr.request_entry() for kr in request.krs]
            response: dict[str, Any] | None = None
            error: tuple[str, str] | None = None
            start = self._clock()
            try:
                response = self._client.put_records(StreamName=request.stream, Records=items)
            except Exception as failure:  # every failure of the call is a retriable outcome
                error = error_code_and_message(failure)
            end = self._clock()
            with self._lock:
                resolutions = self._pipeline.complete(request, response, error, start, end)
                self._after_change()
            self._resolve(resolutions)
        except BaseException as bug:
            self._break(bug)

    def _refresh(self, stream: str) -> None:
        try:
            try:
                shard_map = fetch_shard_map(self._client, stream)
            except Exception as failure:  # retried with back-off by the schedule
                code, message = error_code_and_message(failure)
                _log.warning("shard map fetch failed", stream=stream, code=code, error=message)
                shard_map = None
            with self._lock:
                self._refreshing -= 1
                self._pipeline.map_loaded(stream, shard_map, self._clock())
                self._wake.notify()
        except BaseException as bug:
            self._break(bug)

    def _break(self, error: BaseException) -> None:
        """A bug: fail every pending record rather than leave futures hanging."""
        _log.error("producer stopped by an internal error", error=repr(error), exc_info=error)
        resolutions: list[Resolution] = []
        with self._lock:
            if self._broken is None:
                self._broken = f"internal error: {error!r}"
            try:
                resolutions = self._pipeline.abandon(PRODUCER_ERROR, repr(error), self._clock())
            except Exception as second:  # the state is damaged; the registry below still works
                _log.error("abandon failed", error=repr(second))
            self._stopping = True
            self._abandoned = True
            self._room.notify_all()
            self._idle.notify_all()
            self._wake.notify_all()
            leftovers = list(self._pending.values())
            self._pending.clear()
        self._resolve(resolutions)
        failed = UserRecordResult(False, (Attempt(0.0, 0.0, False, PRODUCER_ERROR, repr(error)),))
        for future in leftovers:
            _settle(future, failed)

    def _resolve(self, resolutions: list[Resolution]) -> None:
        if not resolutions:
            return
        pending = self._pending
        for entry in resolutions:
            if entry.future is not None:
                _settle(entry.future, result_of(entry))
            pending.pop(entry.seq, None)
        if not pending:
            with self._lock:
                self._idle.notify_all()


def _settle(future: Future[UserRecordResult], result: UserRecordResult) -> None:
    try:
        if result.successful:
            future.set_result(result)
        else:
            future.set_exception(UserRecordFailed(result))
    except InvalidStateError:
        # Only _break's last-resort sweep can race a normal resolution; the first one stands.
        return
