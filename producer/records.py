"""The two units the pipeline moves: a user record's bookkeeping and a Kinesis record.

Owns :class:`Entry` (one user record from ``add_user_record`` until its future resolves: its
keys, times, attempts and ordering link) and :class:`KinesisRecord` (one PutRecords entry: a lone
user record sent raw, or an aggregate of several, all predicted for the same shard), plus
:func:`pack`, which turns a run of entries into Kinesis records with
:class:`protocol.aggregation.Aggregator`. Pure data and logic, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

try:
    # CPython's own MD5 costs about half of OpenSSL's on a 16-byte key (no EVP context to set
    # up), and one is computed per record.
    from _md5 import md5 as _md5
except ImportError:  # pragma: no cover - CPython built without it
    from hashlib import md5 as _md5

from producer.results import Attempt
from protocol.aggregation import AGGREGATE_PARTITION_KEY, Aggregator, validate_explicit_hash_key

__all__ = ["Entry", "KinesisRecord", "new_entry", "pack"]

MAX_PARTITION_KEY = 256
_INF = float("inf")
_from_bytes = int.from_bytes

# Life of a Kinesis record: built (open aggregate closed, or a lone record), waiting in its
# lane, sent, then gone (its entries finished or requeued as new Kinesis records).
READY = 0
IN_FLIGHT = 1
DONE = 2


class Entry:
    """One user record inside the producer. Times are ``time.monotonic`` seconds.

    It carries the record's ``partition_key``, ``data`` and ``explicit_hash_key`` itself, the
    three attributes :meth:`protocol.aggregation.Aggregator.try_add` reads, so an entry goes
    into an aggregator as it is and no separate ``UserRecord`` is built per record (this is
    the producer's hot path)."""

    __slots__ = (
        "arrival",
        "attempts",
        "data",
        "deadline",
        "expires_at",
        "explicit_hash_key",
        "finished",
        "future",
        "hash_key",
        "kr",
        "last_end",
        "not_before",
        "outcome",
        "partition_key",
        "prev",
        "seq",
        "size",
        "stream",
    )

    last_end: float
    outcome: Any

    def __init__(
        self,
        stream: str,
        partition_key: str,
        data: bytes,
        explicit_hash_key: str | None,
        hash_key: int,
        size: int,
        future: Future[Any] | None,
        arrival: float,
        deadline: float,
        expires_at: float,
        seq: int,
    ):
        self.stream = stream
        self.partition_key = partition_key
        self.data = data
        self.explicit_hash_key = explicit_hash_key
        self.hash_key = hash_key
        # Data plus partition key bytes: what counts against the outstanding-bytes limit.
        self.size = size
        self.future = future
        self.arrival = arrival
        self.deadline = deadline
        self.expires_at = expires_at
        self.seq = seq
        self.attempts: tuple[Attempt, ...] = ()
        # Not to be sent again before this (a retry's back-off; 0: no wait).
        self.not_before = 0.0
        # Left unset until used, to keep this constructor (one call per record) short:
        # ``last_end``, read only once an attempt exists, and ``outcome`` (how it ended, for the
        # future; see producer.outcomes.result_of), read only once it is finished.
        # The previous unfinished entry with the same hash key (ordering), see producer.ordering.
        self.prev: Entry | None = None
        self.kr: KinesisRecord | None = None
        self.finished = False

    def restamp(self, now: float, buffered: float, ttl: float) -> None:
        """Moves the arrival to ``now`` (the record waited for room before it was taken)."""
        self.arrival = now
        self.deadline = now + min(buffered, ttl)
        self.expires_at = now + ttl

    def add_attempt(
        self, start: float, end: float, code: str | None = None, message: str | None = None
    ) -> None:
        last = self.last_end if self.attempts else self.arrival
        delay = max(0.0, start - last) * 1000.0
        duration = max(0.0, end - start) * 1000.0
        self.attempts += (Attempt(delay, duration, code is None, code, message),)
        self.last_end = end


def new_entry(
    stream: str,
    partition_key: str,
    data: bytes | bytearray | memoryview | str,
    explicit_hash_key: str | int | None,
    max_size: int,
    future: Future[Any] | None,
    now: float,
    buffered: float,
    ttl: float,
    seq: int,
) -> Entry:
    """A validated entry arriving at ``now`` (``buffered`` <= ``ttl``, both in seconds).
    Raises ``ValueError`` naming what is wrong, as the KPL rejects a bad record at once."""
    if type(data) is not bytes:
        data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if not isinstance(partition_key, str) or not 0 < len(partition_key) <= MAX_PARTITION_KEY:
        raise ValueError("partition_key must be a string of 1 to 256 characters")
    pk_bytes = partition_key.encode("utf-8")
    size = len(data) + len(pk_bytes)
    if size > max_size:
        raise ValueError(
            f"data plus partition key is {size} bytes, above max_user_record_size ({max_size})"
        )
    if explicit_hash_key is None:
        return Entry(
            stream,
            partition_key,
            data,
            None,
            _from_bytes(_md5(pk_bytes).digest(), "big"),
            size,
            future,
            now,
            now + buffered,
            now + ttl,
            seq,
        )
    hash_key = validate_explicit_hash_key(str(explicit_hash_key))
    # Canonical decimal: the Kinesis API rejects leading zeros.
    ehk = str(hash_key)
    return Entry(
        stream,
        partition_key,
        data,
        ehk,
        hash_key,
        size,
        future,
        now,
        now + buffered,
        now + ttl,
        seq,
    )


class KinesisRecord:
    """One record of a PutRecords request and the entries it carries, in order.

    An aggregate's bytes are produced on first use of :attr:`data`, which the sending thread
    does outside the producer's lock: encoding ends with an MD5 over up to ``max_size`` bytes,
    during which hashlib lets other threads run, and a caller's thread that lets go of the
    interpreter in the middle of ``add_user_record`` waits a whole switch interval to get it
    back. The size is exact before encoding (``Aggregator.size_bytes``)."""

    __slots__ = (
        "_data",
        "_source",
        "deadline",
        "entries",
        "expires_at",
        "explicit_hash_key",
        "lane",
        "map_version",
        "not_before",
        "partition_key",
        "size",
        "state",
    )

    def __init__(
        self,
        entries: list[Entry],
        partition_key: str,
        data: bytes | Aggregator,
        explicit_hash_key: str | None,
        lane: Any,
        map_version: int,
    ):
        self.entries = entries
        self.partition_key = partition_key
        if isinstance(data, Aggregator):
            self._data: bytes | None = None
            self._source: Aggregator | None = data
            data_size = data.size_bytes
        else:
            self._data = data
            self._source = None
            data_size = len(data)
        self.explicit_hash_key = explicit_hash_key
        # What PutRecords counts against its 5 MiB: data plus partition key bytes.
        pk_size = len(partition_key) if partition_key.isascii() else len(partition_key.encode())
        self.size = data_size + pk_size
        self.lane = lane
        self.map_version = map_version
        deadline = expires_at = _INF
        for entry in entries:
            entry.kr = self
            if entry.deadline < deadline:
                deadline = entry.deadline
            if entry.expires_at < expires_at:
                expires_at = entry.expires_at
        self.deadline = deadline
        self.expires_at = expires_at
        self.not_before = 0.0
        self.state = READY

    @property
    def data(self) -> bytes:
        data = self._data
        if data is None:
            assert self._source is not None
            data = self._data = self._source.encode()
            self._source = None
        return data

    def discard(self) -> None:
        """Done with for good: drops the entries and bytes, so that a timer that still holds
        this record until its time comes keeps a small shell alive, not a whole aggregate."""
        self.state = DONE
        self.entries = []
        self._data = self._source = None

    @property
    def aggregated(self) -> bool:
        return len(self.entries) > 1

    def request_entry(self) -> dict[str, Any]:
        """This record as an item of PutRecords' ``Records``."""
        item: dict[str, Any] = {"Data": self.data, "PartitionKey": self.partition_key}
        if self.explicit_hash_key is not None:
            item["ExplicitHashKey"] = self.explicit_hash_key
        return item


def single(entry: Entry, lane: Any, map_version: int) -> KinesisRecord:
    """A Kinesis record carrying one user record raw, under its own keys."""
    return KinesisRecord(
        [entry], entry.partition_key, entry.data, entry.explicit_hash_key, lane, map_version
    )


def from_aggregator(
    aggregator: Aggregator, entries: list[Entry], lane: Any, map_version: int
) -> KinesisRecord:
    """The Kinesis record for an aggregator's contents (``entries`` in the same order). The
    record keeps the aggregator to encode it later: the caller must not reuse it."""
    if len(entries) == 1:
        return single(entries[0], lane, map_version)
    # The first record's effective hash key steers the aggregate to the predicted shard.
    return KinesisRecord(
        entries, AGGREGATE_PARTITION_KEY, aggregator, str(entries[0].hash_key), lane, map_version
    )


def pack(
    entries: Sequence[Entry],
    lane: Any,
    map_version: int,
    aggregate: bool,
    max_size: int,
    max_count: int,
) -> list[KinesisRecord]:
    """Entries (already in order) as Kinesis records: one each, or aggregates that respect the
    size and count limits."""
    if not aggregate:
        return [single(entry, lane, map_version) for entry in entries]
    out: list[KinesisRecord] = []
    aggregator = Aggregator(max_size=max_size, max_count=max_count)
    run: list[Entry] = []
    for entry in entries:
        if not aggregator.try_add(entry):  # type: ignore[arg-type]  # has UserRecord's fields
            out.append(from_aggregator(aggregator, run, lane, map_version))
            aggregator = Aggregator(max_size=max_size, max_count=max_count)
            run = []
            aggregator.try_add(entry)  # type: ignore[arg-type]
        run.append(entry)
    if run:
        out.append(from_aggregator(aggregator, run, lane, map_version))
    return out
