"""What happens when a PutRecords call ends, and when records expire.

Owns the results half of the pipeline (a mixin of :class:`producer.pipeline.Pipeline`): a
success (with the check that an aggregate landed on a shard whose range holds all its keys), a
per-record error, a whole-call error, the choice between retrying and failing (permanent codes,
``fail_if_throttled``, ``record_ttl``), putting retried records back at the front of their lanes
after a back-off (re-packed when the shard map changed), expiry of waiting records, and the
:class:`Resolution` list from which the producer resolves futures outside its lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from producer import records as kr_mod
from producer.collector import Lane, Request
from producer.config import ProducerConfig
from producer.metrics import Metrics
from producer.ordering import KeyOrder, release
from producer.records import Entry, KinesisRecord, pack
from producer.results import EXPIRED, WRONG_SHARD, Attempt, UserRecordResult
from producer.retry import Backoff, is_retriable, is_throttle
from producer.streams import StreamState
from producer.timers import Timers

__all__ = ["Outcomes", "Resolution", "result_of"]

Resolution = Entry
"""A finished entry whose future is to be resolved once the lock is released; its ``outcome``
is the failure's result, or for a success (start, end, sequence number, sub-sequence number,
shard id), from which :func:`result_of` builds the result outside the lock."""

_new_tuple = tuple.__new__


def result_of(entry: Entry) -> UserRecordResult:
    """The result of a finished entry; called once, after the lock is released."""
    outcome = entry.outcome
    if isinstance(outcome, UserRecordResult):
        return outcome
    assert outcome is not None
    start, end, sequence_number, sub, shard_id = outcome
    # Entry.add_attempt written out, with the named tuples built by tuple.__new__ (skipping their
    # Python-level __new__): this runs once per record written.
    last = entry.last_end if entry.attempts else entry.arrival
    delay = (start - last) * 1000.0 if start > last else 0.0
    attempt = _new_tuple(Attempt, (delay, (end - start) * 1000.0, True, None, None))
    attempts = entry.attempts + (attempt,)
    entry.attempts = attempts
    entry.last_end = end
    return _new_tuple(UserRecordResult, (True, attempts, sequence_number, sub, shard_id))  # type: ignore[no-any-return]


class Outcomes:
    """Results, retries and expiry; mixed into the Pipeline, whose state it shares."""

    config: ProducerConfig
    metrics: Metrics
    backoff: Backoff
    order: KeyOrder
    outstanding_records: int
    outstanding_bytes: int
    in_flight: int
    _streams: dict[str, StreamState]
    _expiry: Timers[KinesisRecord]
    _requests: set[Request]

    def complete(
        self,
        request: Request,
        response: dict[str, Any] | None,
        error: tuple[str, str] | None,
        start: float,
        end: float,
    ) -> list[Resolution]:
        """Applies a PutRecords outcome: the response, or ``error`` (code, message) when the
        whole call failed."""
        self.in_flight -= 1
        self._requests.discard(request)
        out: list[Resolution] = []
        retry: list[tuple[KinesisRecord, list[Entry]]] = []
        stream = self._streams[request.stream]
        self._request_metrics(request, start, end)
        results = (response or {}).get("Records")
        if error is None and (results is None or len(results) != len(request.krs)):
            error = ("Record Count Mismatch", "PutRecords answered with a different record count")
        if error is not None and not is_throttle(error[0]):
            # The stream may have changed under us (resharded, recreated): look again, at most
            # as often as the refresh schedule allows.
            stream.refresh.request()
        for index, kr in enumerate(request.krs):
            kr.state = kr_mod.DONE
            if error is not None:
                self._failed(stream, kr, error[0], error[1], start, end, out, retry)
                continue
            assert results is not None
            item = results[index]
            sequence_number = item.get("SequenceNumber")
            if sequence_number:
                self._succeeded(
                    stream, kr, item["ShardId"], sequence_number, start, end, out, retry
                )
            else:
                code = item.get("ErrorCode") or "Unknown"
                message = item.get("ErrorMessage") or ""
                self._failed(stream, kr, code, message, start, end, out, retry)
        self._requeue(stream, retry, end)
        for kr in request.krs:
            if kr.state == kr_mod.DONE:  # not sent again whole
                kr.discard()
        return out

    def _request_metrics(self, request: Request, start: float, end: float) -> None:
        name = request.stream
        metrics = self.metrics
        metrics.put("RequestTime", (end - start) * 1000.0, name)
        metrics.put("KinesisRecordsPerPutRecordsRequest", len(request.krs), name)
        metrics.put(
            "UserRecordsPerPutRecordsRequest", sum(len(kr.entries) for kr in request.krs), name
        )

    def _succeeded(
        self,
        stream: StreamState,
        kr: KinesisRecord,
        shard_id: str,
        sequence_number: str,
        start: float,
        end: float,
        out: list[Resolution],
        retry: list[tuple[KinesisRecord, list[Entry]]],
    ) -> None:
        predicted = kr.lane.shard
        if predicted is not None and shard_id != predicted:
            stream.refresh.request()
            actual = stream.shard_map.get(shard_id) if stream.shard_map else None
            if kr.aggregated and not (
                actual is not None and all(actual.contains(e.hash_key) for e in kr.entries)
            ):
                # A KCL consumer drops a whole aggregate that holds a key outside the range of
                # the shard it reads it from, so this aggregate counts as not written at all.
                message = f"aggregate went to {shard_id}, not {predicted}, outside its key range"
                self._failed(stream, kr, WRONG_SHARD, message, start, end, out, retry)
                return
        metrics = self.metrics
        name = stream.name
        metrics.put("KinesisRecordsPut", 1, name, shard_id)
        metrics.put("KinesisRecordsDataPut", kr.size, name, shard_id)
        metrics.put("AllErrors", 0, name, shard_id)
        metrics.put("UserRecordsPerKinesisRecord", len(kr.entries), name, shard_id)
        aggregated = kr.aggregated
        table = stream.last_by_key
        count = data_put = sizes = retried = most = 0
        fewest = 1 << 30
        for index, entry in enumerate(kr.entries):
            if entry.finished:  # abandoned by close() while in flight
                continue
            entry.outcome = (start, end, sequence_number, index if aggregated else 0, shard_id)
            out.append(entry)
            release(entry, table)
            count += 1
            data_put += len(entry.data)
            sizes += entry.size
            tries = len(entry.attempts)
            retried += tries
            most = max(most, tries)
            fewest = min(fewest, tries)
        if count:
            self.outstanding_records -= count
            self.outstanding_bytes -= sizes
            stream.finished += count
            metrics.put_many("UserRecordsPut", count, count, 1, 1, name, shard_id)
            metrics.put_many("UserRecordsDataPut", 1, data_put, data_put, data_put, name, shard_id)
            metrics.put_many("RetriesPerRecord", count, retried, fewest, most, name, shard_id)

    def _failed(
        self,
        stream: StreamState,
        kr: KinesisRecord,
        code: str,
        message: str,
        start: float,
        end: float,
        out: list[Resolution],
        retry: list[tuple[KinesisRecord, list[Entry]]],
    ) -> None:
        shard = kr.lane.shard
        self.metrics.put("KinesisRecordsPut", 0, stream.name, shard)
        self.metrics.put("ErrorsByCode", 1, stream.name, shard, code)
        self.metrics.put("AllErrors", 1, stream.name, shard)
        self._retry_or_fail(stream, kr, kr.entries, code, message, start, end, out, retry)

    def _retry_or_fail(
        self,
        stream: StreamState,
        kr: KinesisRecord,
        entries: list[Entry],
        code: str,
        message: str,
        start: float,
        end: float,
        out: list[Resolution],
        retry: list[tuple[KinesisRecord, list[Entry]]],
    ) -> None:
        give_up = not is_retriable(code) or (self.config.fail_if_throttled and is_throttle(code))
        again: list[Entry] = []
        expired = 0
        for entry in entries:
            if entry.finished:  # abandoned by close() while in flight
                continue
            entry.add_attempt(start, end, code, message)
            if give_up:
                self._fail(entry, out)
            elif entry.expires_at <= end:
                entry.add_attempt(end, end, EXPIRED, "Record has reached expiration")
                self._fail(entry, out)
                expired += 1
            else:
                again.append(entry)
        if expired:
            self.metrics.put_many("UserRecordExpired", expired, expired, 1, 1, stream.name)
        if again:
            retry.append((kr, again))

    def _requeue(
        self, stream: StreamState, retry: list[tuple[KinesisRecord, list[Entry]]], now: float
    ) -> None:
        """Puts retried entries back at the front of their lanes after a back-off. A Kinesis
        record that comes back whole, for an unchanged map, is sent again as it is."""
        if not retry:
            return
        version = stream.version
        front: dict[Lane, list[KinesisRecord]] = {}
        loose: list[Entry] = []
        for kr, entries in retry:
            attempts = max(len(entry.attempts) for entry in entries)
            not_before = now + self.backoff.delay(attempts)
            if len(entries) == len(kr.entries) and kr.map_version == version:
                kr.not_before = kr.deadline = not_before
                front.setdefault(kr.lane, []).append(kr)
            else:
                for entry in entries:
                    entry.not_before = not_before
                loose.extend(entries)
        loose.sort(key=lambda entry: entry.seq)
        for lane, krs in self._regroup(stream, loose, now).items():
            front.setdefault(lane, []).extend(krs)
        for lane, krs in front.items():
            krs.sort(key=lambda kr: kr.entries[0].seq)
            self._enqueue_front(stream, lane, krs)

    def _enqueue_front(self, stream: StreamState, lane: Lane, krs: list[KinesisRecord]) -> None:
        stream.queue.enqueue_front(lane, krs)
        for kr in krs:
            self._expiry.push(kr.expires_at, kr)

    def _regroup(
        self, stream: StreamState, entries: Iterable[Entry], now: float
    ) -> dict[Lane, list[KinesisRecord]]:
        """Entries (in add order) packed anew for the lanes the current map predicts."""
        by_lane: dict[Lane, list[Entry]] = {}
        for entry in entries:
            lane = stream.lane(stream.predict(entry.hash_key), now, self.config)
            by_lane.setdefault(lane, []).append(entry)
        config = self.config
        version = stream.version
        out: dict[Lane, list[KinesisRecord]] = {}
        for lane, group in by_lane.items():
            krs = pack(
                group,
                lane,
                version,
                lane.aggregator is not None,
                config.aggregation_max_size,
                config.aggregation_max_count,
            )
            for kr in krs:
                kr.not_before = max(entry.not_before for entry in kr.entries)
                kr.deadline = max(kr.deadline, kr.not_before)
            out[lane] = krs
        return out

    def _fail(self, entry: Entry, out: list[Resolution]) -> None:
        entry.outcome = UserRecordResult(False, entry.attempts)
        out.append(entry)
        self._finish(entry)

    def _finish(self, entry: Entry) -> None:
        release(entry, self._streams[entry.stream].last_by_key)
        self.outstanding_records -= 1
        self.outstanding_bytes -= entry.size
        self._streams[entry.stream].finished += 1

    # -- expiry -----------------------------------------------------------------------------------

    def _expire(self, now: float, out: list[Resolution]) -> None:
        for kr in self._expiry.pop_due(now):
            if kr.state != kr_mod.READY:
                continue  # the same record was pushed twice (sent again whole)
            stream = self._streams[kr.lane.stream]
            alive = [entry for entry in kr.entries if entry.expires_at > now]
            expired = [entry for entry in kr.entries if entry.expires_at <= now]
            for entry in expired:
                entry.add_attempt(now, now, EXPIRED, "Record has reached expiration")
                self._fail(entry, out)
            self.metrics.put_many(
                "UserRecordExpired", len(expired), len(expired), 1, 1, stream.name
            )
            if not alive:
                stream.queue.remove(kr)
                kr.discard()
                continue
            replacements = pack(
                alive,
                kr.lane,
                kr.map_version,
                kr.lane.aggregator is not None,
                self.config.aggregation_max_size,
                self.config.aggregation_max_count,
            )
            for new in replacements:
                new.not_before = kr.not_before
                self._expiry.push(new.expires_at, new)
            stream.queue.replace(kr, replacements)
            kr.discard()
