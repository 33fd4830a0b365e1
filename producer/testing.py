"""Test doubles for the producer's Kinesis seam: an in-memory Kinesis and a fault injector.

Owns :class:`FakeKinesis` (streams of shards that route records by hash key like Kinesis, with
splits that close the parent, per-shard increasing sequence numbers, and ListShards paging) and
:class:`FaultInjector`, which wraps any client (the fake, or a real boto3 client talking to a
local server) and fails chosen records or whole calls the way Kinesis does: a failed record comes
back with ``ErrorCode`` and ``ErrorMessage`` and is not written; the others are. Both are
thread-safe. Nothing here talks to a network.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeKinesis", "FaultInjector", "StoredRecord", "hash_key_of"]

_MAX = (1 << 128) - 1


def hash_key_of(item: dict[str, Any]) -> int:
    """The hash key Kinesis routes a PutRecords item by."""
    explicit = item.get("ExplicitHashKey")
    if explicit:
        return int(explicit)
    return int.from_bytes(hashlib.md5(item["PartitionKey"].encode("utf-8")).digest(), "big")


@dataclass
class StoredRecord:
    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    sequence_number: str


@dataclass
class _Shard:
    shard_id: str
    start: int
    end: int
    open: bool = True
    parent: str | None = None
    records: list[StoredRecord] = field(default_factory=list)


class _ClientError(Exception):
    """Shaped like botocore's ClientError as far as the producer looks (``response``)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.response = {"Error": {"Code": code, "Message": message}}


class FakeKinesis:
    """An in-memory Kinesis with ``put_records`` and ``list_shards`` (boto3's signatures)."""

    def __init__(self, page_size: int = 100):
        self._lock = threading.Lock()
        self._streams: dict[str, list[_Shard]] = {}
        self._sequence = 0
        self._next_shard = 0
        self.page_size = page_size
        self.put_calls = 0
        self.list_calls = 0

    def create_stream(self, name: str, shard_count: int = 1) -> None:
        with self._lock:
            step = (_MAX + 1) // shard_count
            shards = []
            for index in range(shard_count):
                end = _MAX if index == shard_count - 1 else (index + 1) * step - 1
                shards.append(_Shard(self._new_shard_id(), index * step, end))
            self._streams[name] = shards

    def _new_shard_id(self) -> str:
        shard_id = f"shardId-{self._next_shard:012d}"
        self._next_shard += 1
        return shard_id

    def split_shard(self, stream: str, shard_id: str, new_starting_hash_key: int) -> list[str]:
        """Closes ``shard_id`` and opens two children; returns their ids."""
        with self._lock:
            parent = self._find(stream, shard_id)
            parent.open = False
            low = _Shard(
                self._new_shard_id(), parent.start, new_starting_hash_key - 1, parent=shard_id
            )
            high = _Shard(self._new_shard_id(), new_starting_hash_key, parent.end, parent=shard_id)
            self._streams[stream].extend([low, high])
            return [low.shard_id, high.shard_id]

    def _find(self, stream: str, shard_id: str) -> _Shard:
        for shard in self._streams[stream]:
            if shard.shard_id == shard_id:
                return shard
        raise KeyError(shard_id)

    def shard_ids(self, stream: str, open_only: bool = True) -> list[str]:
        with self._lock:
            return [s.shard_id for s in self._streams[stream] if s.open or not open_only]

    def records(self, stream: str, shard_id: str | None = None) -> list[StoredRecord]:
        """Records of one shard, or of every shard in shard order."""
        with self._lock:
            shards = self._streams[stream]
            chosen = [s for s in shards if shard_id is None or s.shard_id == shard_id]
            return [record for shard in chosen for record in shard.records]

    def shard_range(self, stream: str, shard_id: str) -> tuple[int, int]:
        with self._lock:
            shard = self._find(stream, shard_id)
            return shard.start, shard.end

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            self.list_calls += 1
            token = kwargs.get("NextToken")
            if token:
                stream, offset_text = token.rsplit("|", 1)
                offset = int(offset_text)
            else:
                stream = kwargs["StreamName"]
                offset = 0
            if stream not in self._streams:
                raise _ClientError("ResourceNotFoundException", f"Stream {stream} not found")
            shards = self._streams[stream]
            page = shards[offset : offset + self.page_size]
            out: dict[str, Any] = {"Shards": [self._describe(shard) for shard in page]}
            if offset + self.page_size < len(shards):
                out["NextToken"] = f"{stream}|{offset + self.page_size}"
            return out

    @staticmethod
    def _describe(shard: _Shard) -> dict[str, Any]:
        numbers = {"StartingSequenceNumber": "0"}
        if not shard.open:
            numbers["EndingSequenceNumber"] = "99999999999999"
        described: dict[str, Any] = {
            "ShardId": shard.shard_id,
            "HashKeyRange": {"StartingHashKey": str(shard.start), "EndingHashKey": str(shard.end)},
            "SequenceNumberRange": numbers,
        }
        if shard.parent:
            described["ParentShardId"] = shard.parent
        return described

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            self.put_calls += 1
            shards = self._streams.get(StreamName)
            if shards is None:
                raise _ClientError("ResourceNotFoundException", f"Stream {StreamName} not found")
            results = []
            for item in Records:
                hash_key = hash_key_of(item)
                shard = next(s for s in shards if s.open and s.start <= hash_key <= s.end)
                self._sequence += 1
                number = f"{self._sequence:020d}"
                data = item["Data"]
                shard.records.append(
                    StoredRecord(
                        bytes(data), item["PartitionKey"], item.get("ExplicitHashKey"), number
                    )
                )
                results.append({"SequenceNumber": number, "ShardId": shard.shard_id})
            return {"FailedRecordCount": 0, "Records": results}


RecordFault = Callable[[int, dict[str, Any]], "str | None"]
"""(call number from 1, PutRecords item) -> an error code to fail that record with, or None."""
CallFault = Callable[[int], "BaseException | None"]
"""(call number from 1) -> an exception to raise instead of making the call, or None."""


class FaultInjector:
    """Wraps a client; fails the records and calls its rules pick, passes the rest through."""

    def __init__(
        self,
        inner: Any,
        record_fault: RecordFault | None = None,
        call_fault: CallFault | None = None,
    ):
        self.inner = inner
        self.record_fault = record_fault
        self.call_fault = call_fault
        self.calls = 0
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def list_shards(self, **kwargs: Any) -> Any:
        return self.inner.list_shards(**kwargs)

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        with self._lock:
            self.calls += 1
            call = self.calls
        if self.call_fault is not None:
            error = self.call_fault(call)
            if error is not None:
                with self._lock:
                    self.injected[type(error).__name__] += 1
                raise error
        codes = [self.record_fault(call, item) if self.record_fault else None for item in Records]
        passed = [item for item, code in zip(Records, codes, strict=True) if code is None]
        answered = iter(
            self.inner.put_records(StreamName=StreamName, Records=passed)["Records"]
            if passed
            else []
        )
        results = []
        for code in codes:
            if code is None:
                results.append(next(answered))
            else:
                results.append({"ErrorCode": code, "ErrorMessage": "injected by FaultInjector"})
        failed = sum(1 for code in codes if code is not None)
        with self._lock:
            self.injected.update(code for code in codes if code is not None)
        return {"FailedRecordCount": failed, "Records": results}


def client_error(code: str, message: str = "injected") -> BaseException:
    """An exception that the producer reads as a service error with ``code``."""
    return _ClientError(code, message)
