"""Record retrieval for one shard: polling GetRecords with prefetch, deaggregation.

Owns, per leased shard, the conversation with Kinesis that yields records:
the shard iterator (from a checkpoint or a sentinel), GetRecords calls paced
against the service limits, a background prefetch into a bounded buffer,
recovery from expired iterators, back-off on throttling and transient
failures, KPL deaggregation with the post-reshard hash-range filter, and the
decision that the shard has ended. The shard consumer (one asyncio loop for
every shard) calls :meth:`ShardFetcher.next_batch`; boto3 runs in the thread
pool it hands in, and so does the record conversion (a large response must
not stall the other shards' pipes).

Records are converted for the child by ``daemon.conversion`` (in the same
thread pool), fast-parsed ones spliced straight into JSON text.

Pacing (a deliberate difference from the official client, which always sleeps
``idleTimeBetweenReadsInMillis`` between calls): while the shard is behind --
the last response had records and either ``MillisBehindLatest > 0`` or a full
``Limit`` of them -- the next call goes out at once, held only to the service
limit of 5 GetRecords calls per second per shard (``min_call_interval_s``
between call starts). When caught up (no records, or ``MillisBehindLatest ==
0`` on a partial batch) the next call waits ``idle_time_between_reads_s`` after
the previous one returned, as the official client does. A lagging consumer
catches up at the service's pace instead of one batch per idle interval.

Prefetch: a GetRecords call starts only while the buffer holds fewer than
``prefetch_max_records`` records and fewer than ``prefetch_max_bytes`` data
bytes, so the buffer exceeds a limit by at most one response. Empty batches
(kept for ``callProcessRecordsEvenForEmptyRecordList``) are coalesced: at most
one waits in the buffer.

Errors, each mapped to one action (``classify_error``):

=====================================  =========================================
ExpiredIteratorException               new iterator AFTER_SEQUENCE_NUMBER of the
                                       last record fetched (else the original
                                       start), no wait
throttling (ProvisionedThroughput...)  exponential back-off with jitter, retry
5xx, connection errors, timeouts       exponential back-off with jitter, retry
ResourceNotFoundException              StreamNotFoundError from next_batch
access denied, bad or no credentials   ConfigError from next_batch
any other client error                 DependencyError (retriable: rebuild the
                                       fetcher from the lease) from next_batch
=====================================  =========================================

Shard end (``check_shard_end``): ``NextShardIterator`` null (AWS,
kinesis-local; ``ChildShards`` then name the children). Stand-ins such as moto
never return a null iterator, so for a closed shard (``ending_sequence_number``
known from ListShards) two more rules apply: once a record at or past the
ending sequence number has been fetched, one confirming call follows (it picks
up ``ChildShards`` where the backend sends them) and then the shard has ended
whatever it returns; and a closed shard's empty response with
``MillisBehindLatest == 0`` that hands back the very iterator it was sent is
its end (a LATEST iterator, or a TRIM_HORIZON one whose records have all
expired, never reaches the last record). AWS issues a new iterator string
with every response, so there only its null iterator ends a shard. The shard-end batch
carries no records: records fetched with it come in a batch just before it.
After it, ``next_batch`` raises ``ShardEndedError``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from daemon.backoff import Backoff, RandomSource
from daemon.conversion import Converted, convert_records
from daemon.errors import (
    ConfigError,
    InvalidStateError,
    KclDaemonError,
    ShardEndedError,
)
from daemon.kinesis_client import ErrorKind, classify_error, fatal_error
from daemon.logs import get_logger
from daemon.sequence import AT_TIMESTAMP, LATEST, TRIM_HORIZON, ExtendedSequenceNumber
from protocol.records import WireRecord

T = TypeVar("T")

#: Service limit: 5 GetRecords calls per second per shard.
MIN_CALL_INTERVAL_S = 0.2


@dataclass
class Batch:
    """One GetRecords response, ready for the child.

    ``last_position`` is that of the last record in ``records`` (None when it
    is empty); ``byte_size`` counts the data bytes of ``records``.
    """

    records: Sequence[WireRecord]
    millis_behind_latest: int | None
    last_position: ExtendedSequenceNumber | None
    shard_end: bool
    child_shards: list[dict[str, Any]] | None
    byte_size: int
    dropped_for_hash_range: int


@dataclass
class FetcherStats:
    """Counters for metrics and for tests that watch the fetcher work."""

    get_records_calls: int = 0
    records_fetched: int = 0  # Kinesis records received, before deaggregation
    expired_iterators: int = 0
    throttled: int = 0
    transient_errors: int = 0
    dropped_for_hash_range: int = 0


# -- pure parts --------------------------------------------------------------------------


def iterator_request(
    stream: Mapping[str, str],
    shard_id: str,
    start: ExtendedSequenceNumber,
    *,
    at_timestamp: float | None = None,
    after_sequence_number: str | None = None,
) -> dict[str, Any]:
    """GetShardIterator arguments: after the last record fetched, else from ``start``."""
    request: dict[str, Any] = {**stream, "ShardId": shard_id}
    if after_sequence_number is not None:
        request["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
        request["StartingSequenceNumber"] = after_sequence_number
    elif not start.is_sentinel:
        # AT, not AFTER: the checkpointed record may be an aggregate whose later
        # sub-records are still to be delivered; convert_records drops the rest.
        request["ShardIteratorType"] = "AT_SEQUENCE_NUMBER"
        request["StartingSequenceNumber"] = start.sequence_number
    elif start.sequence_number == AT_TIMESTAMP:
        if at_timestamp is None:
            raise ConfigError(
                "initial position AT_TIMESTAMP needs a timestamp:"
                " set initialPositionInStreamExtended in the properties file"
            )
        request["ShardIteratorType"] = AT_TIMESTAMP
        request["Timestamp"] = at_timestamp
    elif start.sequence_number in (TRIM_HORIZON, LATEST):
        request["ShardIteratorType"] = start.sequence_number
    else:
        raise ValueError(f"no shard iterator starts at {start}")
    return request


def next_call_delay(
    now: float,
    last_start: float | None,
    last_end: float | None,
    caught_up: bool,
    idle_s: float,
    min_interval_s: float = MIN_CALL_INTERVAL_S,
) -> float:
    """Seconds to wait before the next GetRecords (see the module doc on pacing)."""
    if last_start is None:
        return 0.0
    wait = last_start + min_interval_s - now
    if caught_up and last_end is not None:
        wait = max(wait, last_end + idle_s - now)
    return max(0.0, wait)


class EndCheck(enum.Enum):
    """What a response says about the end of the shard."""

    OPEN = "open"
    CONFIRM = "confirm"  # the closed shard's last record is in: one more call, then end
    ENDED = "ended"


def check_shard_end(
    *,
    next_iterator: str | None,
    ending_sequence_number: str | None,
    last_fetched: str | None,
    got_records: bool,
    millis_behind_latest: int | None,
    confirming: bool,
    iterator_unchanged: bool,
) -> EndCheck:
    """Whether a response ends the shard (rules in the module doc).

    ``last_fetched`` is the last sequence number fetched so far, this response
    included; ``confirming`` says this response answers the confirming call;
    ``iterator_unchanged`` that the next iterator is the one just sent.
    """
    if next_iterator is None:
        return EndCheck.ENDED
    if ending_sequence_number is None:
        return EndCheck.OPEN
    if confirming:
        return EndCheck.ENDED
    if last_fetched is not None and int(last_fetched) >= int(ending_sequence_number):
        return EndCheck.CONFIRM
    if not got_records and millis_behind_latest == 0 and iterator_unchanged:
        return EndCheck.ENDED
    return EndCheck.OPEN


# -- the fetcher -------------------------------------------------------------------------


class ShardFetcher:
    """Prefetches one shard's records in a background task; see the module doc.

    Give ``stream_arn`` or ``stream_name`` (the ARN wins when both are given).
    ``start`` is the lease's checkpoint or initial-position sentinel; a
    SHARD_END checkpoint yields the shard-end batch at once.
    """

    def __init__(
        self,
        client: Any,
        executor: Executor,
        *,
        shard_id: str,
        start: ExtendedSequenceNumber,
        stream_name: str | None = None,
        stream_arn: str | None = None,
        at_timestamp: float | None = None,
        max_records: int = 10000,
        idle_time_between_reads_s: float = 1.0,
        prefetch_max_records: int = 20000,
        prefetch_max_bytes: int = 64 * 1024 * 1024,
        hash_range: tuple[int, int] | None = None,
        record_columns: bool = False,
        ending_sequence_number: str | None = None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        min_call_interval_s: float = MIN_CALL_INTERVAL_S,
        logger: Any = None,
        rng: RandomSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stream_arn:
            self._stream: dict[str, str] = {"StreamARN": stream_arn}
        elif stream_name:
            self._stream = {"StreamName": stream_name}
        else:
            raise ValueError("give stream_name or stream_arn")
        if start.sequence_number == AT_TIMESTAMP and at_timestamp is None:
            iterator_request(self._stream, shard_id, start)  # raises the ConfigError
        self.shard_id = shard_id
        self.stream = stream_arn or stream_name or ""
        self._client = client
        self._executor = executor
        self._start = start
        self._at_timestamp = at_timestamp
        self._max_records = max_records
        self._idle_s = idle_time_between_reads_s
        self._prefetch_max_records = prefetch_max_records
        self._prefetch_max_bytes = prefetch_max_bytes
        self._hash_range = hash_range
        # The child asked for the record-columns form (protocol.records): splice that.
        self._record_columns = record_columns
        self._ending = ending_sequence_number
        self._backoff = Backoff(backoff_initial_s, backoff_max_s, rng=rng)
        self._min_interval_s = min_call_interval_s
        self._log = logger if logger is not None else get_logger(shard_id=shard_id)
        self._clock = clock
        self.stats = FetcherStats()
        # Real checkpoints are fetched AT their sequence number, then filtered.
        self._skip_through: ExtendedSequenceNumber | None = None if start.is_sentinel else start
        self._last_fetched: str | None = None
        self._last_start: float | None = None
        self._last_end: float | None = None
        self._caught_up = False
        self._buffer: deque[Batch] = deque()
        self._buffered_records = 0
        self._buffered_bytes = 0
        self._terminal: BaseException | None = None
        self._changed = asyncio.Condition()
        self._waiting_for_room = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- the consumer's side ---------------------------------------------------------

    def start(self) -> None:
        """Launch the background prefetch (idempotent); needs a running loop."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"fetch-{self.shard_id}"
            )

    async def next_batch(self) -> Batch:
        """The next batch, waiting for one; raises the fetcher's fatal error if any,
        ``ShardEndedError`` after the shard-end batch, ``InvalidStateError`` once closed."""
        self.start()
        async with self._changed:
            await self._changed.wait_for(lambda: self._buffer or self._terminal is not None)
            if not self._buffer:
                assert self._terminal is not None
                raise self._terminal
            batch = self._buffer.popleft()
            self._buffered_records -= len(batch.records)
            self._buffered_bytes -= batch.byte_size
            self._changed.notify_all()
        return batch

    async def close(self) -> None:
        """Stop fetching; a call in flight finishes in its thread and is discarded."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        async with self._changed:
            if self._terminal is None or isinstance(self._terminal, ShardEndedError):
                self._terminal = InvalidStateError(
                    f"the fetcher of shard {self.shard_id} is closed"
                )
            self._buffer.clear()
            self._changed.notify_all()

    @property
    def buffer_full(self) -> bool:
        """True while prefetch waits for the consumer to make room."""
        return self._waiting_for_room

    @property
    def buffered_records(self) -> int:
        """Records fetched and waiting for ``next_batch``."""
        return self._buffered_records

    # -- the background task ---------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._fetch_until_end()
            error: BaseException = ShardEndedError(f"shard {self.shard_id} has ended")
        except asyncio.CancelledError:
            raise
        except KclDaemonError as failure:
            self._log.error("record retrieval stopped", error=str(failure))
            error = failure
        except Exception as failure:  # a bug: hand it to the consumer rather than vanish
            self._log.exception("record retrieval failed")
            error = failure
        async with self._changed:
            self._terminal = error
            self._changed.notify_all()

    async def _fetch_until_end(self) -> None:
        if self._start.is_shard_end:
            await self._push(self._end_batch(None, None))
            return
        iterator = await self._new_iterator()
        confirming = False
        while iterator is not None:
            await self._wait_for_room()
            delay = next_call_delay(
                self._clock(), self._last_start, self._last_end, self._caught_up,
                self._idle_s, self._min_interval_s,
            )  # fmt: skip
            if delay > 0:
                await asyncio.sleep(delay)
            self._last_start = self._clock()
            self.stats.get_records_calls += 1
            try:
                response, converted = await self._in_thread(
                    self._get_records, iterator, self._skip_through
                )
            except (BotoCoreError, ClientError) as error:
                if classify_error(error) is ErrorKind.EXPIRED_ITERATOR:
                    self.stats.expired_iterators += 1
                    self._log.info("shard iterator expired", after=self._last_fetched)
                    iterator = await self._new_iterator()
                else:
                    await self._after_failure(error, "GetRecords")
                continue
            self._last_end = self._clock()
            self._backoff.reset()
            iterator, confirming = await self._take(iterator, response, converted, confirming)
            if iterator is None:
                return  # _take buffered the shard-end batch
        # GetShardIterator answered without an iterator: the shard has nothing more.
        await self._push(self._end_batch(None, None))

    async def _take(
        self, sent: str, response: Mapping[str, Any], converted: Converted, confirming: bool
    ) -> tuple[str | None, bool]:
        """Account for one response and buffer its batch; the next iterator (None when ended)."""
        raw_count = converted.kinesis_records
        self.stats.records_fetched += raw_count
        if converted.last_sequence_number is not None:
            self._last_fetched = converted.last_sequence_number
            skip = self._skip_through
            if skip is not None and int(self._last_fetched) > int(skip.sequence_number):
                self._skip_through = None
        dropped = len(converted.dropped_sequence_numbers)
        if dropped:
            self.stats.dropped_for_hash_range += dropped
            self._log.warning(
                "dropped aggregates with records outside the shard's hash range"
                " (written before a reshard; the child shard delivers them)",
                count=dropped,
                sequence_numbers=converted.dropped_sequence_numbers[:10],
            )
        millis = response.get("MillisBehindLatest")
        next_iterator = response.get("NextShardIterator")
        end = check_shard_end(
            next_iterator=next_iterator,
            ending_sequence_number=self._ending,
            last_fetched=self._last_fetched,
            got_records=raw_count > 0,
            millis_behind_latest=millis,
            confirming=confirming,
            iterator_unchanged=next_iterator == sent,
        )
        behind = raw_count > 0 and (raw_count >= self._max_records or (millis or 0) > 0)
        self._caught_up = not behind and end is not EndCheck.CONFIRM
        batch = Batch(
            records=converted.records,
            millis_behind_latest=millis,
            last_position=converted.last_position,
            shard_end=False,
            child_shards=None,
            byte_size=converted.byte_size,
            dropped_for_hash_range=dropped,
        )
        if batch.records or end is not EndCheck.ENDED:
            await self._push(batch)
        if end is EndCheck.ENDED:
            self._log.info("shard end reached", last_sequence_number=self._last_fetched)
            await self._push(self._end_batch(millis, response.get("ChildShards")))
            return None, False
        return next_iterator, end is EndCheck.CONFIRM

    def _end_batch(self, millis: int | None, child_shards: list[dict[str, Any]] | None) -> Batch:
        return Batch([], millis, None, True, child_shards, 0, 0)

    async def _new_iterator(self) -> str | None:
        request = iterator_request(
            self._stream,
            self.shard_id,
            self._start,
            at_timestamp=self._at_timestamp,
            after_sequence_number=self._last_fetched,
        )
        while True:
            try:
                response = await self._in_thread(
                    functools.partial(self._client.get_shard_iterator, **request)
                )
            except (BotoCoreError, ClientError) as error:
                await self._after_failure(error, "GetShardIterator")
                continue
            self._backoff.reset()
            iterator: str | None = response.get("ShardIterator")
            return iterator

    def _get_records(
        self, iterator: str, skip_through: ExtendedSequenceNumber | None
    ) -> tuple[Mapping[str, Any], Converted]:
        """One GetRecords call and its conversion; runs in the executor.

        The response comes back without its ``Records`` (``converted`` has them).
        """
        request: dict[str, Any] = {"ShardIterator": iterator, "Limit": self._max_records}
        if "StreamARN" in self._stream:
            request["StreamARN"] = self._stream["StreamARN"]
        response = self._client.get_records(**request)
        records = response.get("Records") or ()
        response = {key: value for key, value in response.items() if key != "Records"}
        converted = convert_records(
            records,
            skip_through=skip_through,
            hash_range=self._hash_range,
            record_columns=self._record_columns,
        )
        # The records go here, in this thread, not when the event loop next
        # rebinds the response: a fetcher waiting for buffer room would keep
        # megabytes of record dicts alive, per shard.
        del records
        return response, converted

    async def _after_failure(self, error: BaseException, operation: str) -> None:
        """Back off after a retriable failure; raise the typed error for a fatal one."""
        kind = classify_error(error)
        if kind is ErrorKind.FATAL or kind is ErrorKind.EXPIRED_ITERATOR:
            # An expired iterator from GetShardIterator cannot happen; treat it as a bug.
            raise fatal_error(error, operation, self.stream, self.shard_id) from error
        delay = self._backoff.next_delay()
        if kind is ErrorKind.THROTTLED:
            self.stats.throttled += 1
            self._log.info("throttled", operation=operation, retry_in_s=round(delay, 3))
        else:
            self.stats.transient_errors += 1
            self._log.warning(
                "call failed; will retry",
                operation=operation,
                error=str(error),
                retry_in_s=round(delay, 3),
            )
        await asyncio.sleep(delay)

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    async def _wait_for_room(self) -> None:
        async with self._changed:
            if not self._has_room():
                self._waiting_for_room = True
                try:
                    await self._changed.wait_for(self._has_room)
                finally:
                    self._waiting_for_room = False

    def _has_room(self) -> bool:
        return (
            self._buffered_records < self._prefetch_max_records
            and self._buffered_bytes < self._prefetch_max_bytes
        )

    async def _push(self, batch: Batch) -> None:
        async with self._changed:
            buffer = self._buffer
            if not batch.records and not batch.shard_end and buffer:
                last = buffer[-1]
                if not last.records and not last.shard_end:
                    # Only the newest empty batch matters (its millisBehindLatest).
                    buffer[-1] = replace(
                        batch,
                        dropped_for_hash_range=batch.dropped_for_hash_range
                        + last.dropped_for_hash_range,
                    )
                    return
            buffer.append(batch)
            self._buffered_records += len(batch.records)
            self._buffered_bytes += batch.byte_size
            self._changed.notify_all()
