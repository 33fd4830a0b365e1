"""One shard's consumer: the multilang exchange with its child, and its lifecycle.

Owns, for one leased shard: the child process (started, restarted, stopped),
the record fetcher, the protocol exchange (one action, checkpoints served
while waiting, then the matching ``status``) and the walk through
``daemon.consumer_states``. It never touches another shard: every failure of
the child (exit, hang past ``timeoutInSeconds``, protocol violation) ends in a
restart of this child only, from the last checkpoint, with back-off; past the
restart budget the lease is released and the failure logged loudly.

Collaborators are injected (lease coordinator, fetcher factory, child
launcher, restart policy) so the exchange can be driven by tests with real
child processes and no Kinesis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.checkpointer import resolve_checkpoint
from daemon.child import ChildExited, ChildProcess, OversizedLine
from daemon.consumer_states import ConsumerState, ShutdownReason, check_transition
from daemon.dead_letter import DeadLetter, DeadLetterSink
from daemon.errors import (
    CheckpointRangeError,
    DependencyError,
    InvalidStateError,
    KclDaemonError,
    LeaseLostError,
    ProtocolViolation,
    checkpoint_error_name,
)
from daemon.leases.model import Lease
from daemon.log_budget import LogBudget
from daemon.logs import get_logger
from daemon.poison import BatchBisector, FailureCounter
from daemon.restart_policy import RestartPolicy
from daemon.retrieval import Batch
from daemon.sequence import ExtendedSequenceNumber
from protocol.messages import (
    CheckpointReply,
    CheckpointRequest,
    DecodeProblem,
    Initialize,
    LeaseLost,
    Problem,
    ProcessRecords,
    ShardEnded,
    ShutdownRequested,
    Status,
    decode_child_line,
)
from protocol.records import WireRecord


class Fetcher(Protocol):
    def start(self) -> None: ...
    async def next_batch(self) -> Batch: ...
    async def close(self) -> None: ...


class Leases(Protocol):
    def lease(self, key: str) -> Lease | None: ...
    def holds(self, key: str) -> bool: ...
    async def get_lease(self, key: str) -> Lease | None: ...
    async def checkpoint(self, key: str, position: ExtendedSequenceNumber) -> Lease: ...
    async def prepare_checkpoint(self, key: str, position: ExtendedSequenceNumber) -> Lease: ...
    async def release(self, key: str) -> None: ...
    async def forget(self, key: str) -> None: ...


# (shard id, where to start, whether the child asked for recordColumns) -> a fetcher
FetcherFactory = Callable[[str, ExtendedSequenceNumber, bool], Fetcher]
ChildLauncher = Callable[[str], Awaitable[ChildProcess]]
ShardEndHook = Callable[[str, "list[dict[str, Any]] | None"], Awaitable[None]]


class ChildFailed(KclDaemonError):
    """This child must be replaced (it died, hung or broke the protocol)."""


class FetchFatal(KclDaemonError):
    """Records cannot be read for this shard (stream gone, access denied)."""


@dataclass
class ConsumerSettings:
    initial_position: ExtendedSequenceNumber
    action_timeout_s: float | None
    shutdown_grace_s: float
    call_process_records_even_for_empty: bool = False
    parent_poll_interval_s: float = 10.0
    task_backoff_s: float = 0.5
    poison: PoisonSettings | None = None


@dataclass
class PoisonSettings:
    """poisonRecordPolicy = DEAD_LETTER: bisect a failing batch, dead-letter its poison."""

    max_attempts: int
    sink: DeadLetterSink
    application: str


@dataclass
class ConsumerStats:
    records: int = 0
    bytes: int = 0
    batches: int = 0
    restarts: int = 0
    millis_behind_latest: int | None = None
    process_records_seconds: float = 0.0
    checkpoint_failures: int = 0
    dead_lettered: int = 0
    recent: list[float] = field(default_factory=list)


class ShardConsumer:
    def __init__(
        self,
        shard_id: str,
        *,
        leases: Leases,
        make_fetcher: FetcherFactory,
        launch_child: ChildLauncher,
        restart_policy: RestartPolicy,
        settings: ConsumerSettings,
        on_shard_end: ShardEndHook,
        parent_shard_ids: frozenset[str] = frozenset(),
    ) -> None:
        self.shard_id = shard_id
        self._leases = leases
        self._make_fetcher = make_fetcher
        self._launch_child = launch_child
        self._restart_policy = restart_policy
        self._settings = settings
        self._on_shard_end = on_shard_end
        self._parents = parent_shard_ids
        self.state = (
            ConsumerState.WAITING_ON_PARENTS if parent_shard_ids else ConsumerState.INITIALIZING
        )
        self.stats = ConsumerStats()
        self._log = get_logger(shard_id=shard_id)
        self._lease_lost = asyncio.Event()
        self._stop = asyncio.Event()
        self._parents_changed = asyncio.Event()
        self._shard_closed = asyncio.Event()
        self._reason: ShutdownReason | None = None
        self._child: ChildProcess | None = None
        self._record_columns = False  # the child asked for recordColumns (protocol.records)
        # Warnings for lines a child writes that are not messages (daemon.log_budget).
        self._skipped_lines = LogBudget()
        self._fetcher: Fetcher | None = None
        self._largest_delivered: ExtendedSequenceNumber | None = None
        # Poison-record handling: the records of the processRecords in flight,
        # failures of the batch that keeps failing, and the bisection, if any.
        self._delivering: Sequence[WireRecord] | None = None
        poison = settings.poison
        self._failures = FailureCounter(poison.max_attempts) if poison else None
        self._bisector: BatchBisector[WireRecord] | None = None
        self._start = settings.initial_position
        self._current_action: str | None = None

    # -- signals from the scheduler -------------------------------------------

    def lease_lost(self) -> None:
        self._rank(ShutdownReason.LEASE_LOST)
        self._lease_lost.set()

    def request_shutdown(self) -> None:
        """Graceful stop (daemon shutdown or a balancing hand-off): shutdownRequested,
        the child's checkpoint, then the lease is released."""
        self._rank(ShutdownReason.REQUESTED)
        self._stop.set()

    def recheck_parents(self) -> None:
        """A parent may have finished: check now instead of at the next poll."""
        self._parents_changed.set()

    def shard_closed(self) -> None:
        """Shard sync found this shard closed after its fetcher started.

        On backends whose iterator never runs out for a closed shard (moto)
        the fetcher only sees the end when it knows the ending sequence
        number, so it is rebuilt (from the last record delivered) with it.
        """
        self._shard_closed.set()

    def _rank(self, reason: ShutdownReason) -> None:
        if self._reason is None or reason > self._reason:
            self._reason = reason

    def _to(self, new: ConsumerState) -> None:
        if new is self.state:
            return
        check_transition(self.state, new)
        self._log.info("consumer state", old=self.state.value, new=new.value)
        self.state = new

    def kill_child(self) -> None:
        """SIGKILL the child now (the daemon is being forced down)."""
        if self._child is not None:
            self._child.kill()

    @property
    def child_pid(self) -> int | None:
        return self._child.pid if self._child else None

    @property
    def parent_shard_ids(self) -> frozenset[str]:
        return self._parents

    # -- the lifecycle ------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self._parents and not await self._wait_for_parents():
                return
            while not self._finished():
                try:
                    await self._run_child_once()
                except FetchFatal as fatal:
                    self._log.error("cannot read this shard; releasing its lease", error=str(fatal))
                    await self._discard_child(None)
                    await self._end_without_child()
                except ChildFailed as failure:
                    await self._note_failure(str(failure))
                    await self._discard_child(str(failure))
                    if self._finished() or not await self._back_off():
                        break
        finally:
            await self._discard_child(None)
            self._to_done()

    def _finished(self) -> bool:
        return self.state is ConsumerState.DONE

    def _to_done(self) -> None:
        if self.state is not ConsumerState.DONE:
            self._to(ConsumerState.DONE)

    async def _wait_for_parents(self) -> bool:
        """Hold off until every parent lease still present has reached SHARD_END."""
        while True:
            pending = []
            for parent in sorted(self._parents):
                lease = await self._leases.get_lease(parent)
                if lease is not None and not (lease.checkpoint and lease.checkpoint.is_shard_end):
                    pending.append(parent)
            if not pending:
                self._to(ConsumerState.INITIALIZING)
                return True
            self._log.info("waiting on parent shards", parents=pending)
            self._parents_changed.clear()
            if await self._interrupted(
                self._settings.parent_poll_interval_s, also=self._parents_changed
            ):
                if self._parents_changed.is_set() and not self._stopping():
                    continue
                await self._end_without_child()
                return False

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._lease_lost.is_set()

    async def _end_without_child(self) -> None:
        """Stop while no child runs: release the lease unless it is already gone."""
        if self._lease_lost.is_set():
            self._to(ConsumerState.LEASE_LOST)
        else:
            await self._leases.release(self.shard_id)
        self._to_done()

    async def _interrupted(self, seconds: float, also: asyncio.Event | None = None) -> bool:
        """Sleep, but wake at once (returning True) on shutdown or lease loss (or ``also``)."""
        events = [self._stop, self._lease_lost] + ([also] if also is not None else [])
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            done, _ = await asyncio.wait(waiters, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waiters:
                waiter.cancel()
        return bool(done)

    async def _back_off(self) -> bool:
        """Wait before the next child; False when the budget is spent or we must stop."""
        uptime = self._child_uptime
        if self._bisector is not None:
            self._restart_policy.reset()  # each failure while bisecting is progress
        decision = self._restart_policy.record_exit(uptime)
        if decision.give_up:
            self._log.error(
                "child keeps failing; releasing the lease so the shard is not stuck here",
                restarts=self.stats.restarts,
                budget=self._restart_policy.budget,
            )
            await self._leases.release(self.shard_id)
            self._to_done()
            return False
        self.stats.restarts += 1
        self._log.info("restarting child", delay_s=round(decision.delay_s, 3))
        if await self._interrupted(decision.delay_s):
            await self._end_without_child()
            return False
        self._to(ConsumerState.INITIALIZING)
        return True

    _child_uptime: float = 0.0

    async def _discard_child(self, why: str | None) -> None:
        if self._fetcher is not None:
            await self._fetcher.close()
            self._fetcher = None
        child, self._child = self._child, None
        if child is None:
            return
        self._child_uptime = child.uptime
        if self._skipped_lines.held_back:
            self._log.warning(
                "skipped lines from the child that were not logged one by one",
                pid=child.pid,
                count=self._skipped_lines.held_back,
            )
        if why is not None:
            self._log.warning("child failed", pid=child.pid, reason=why)
            child.kill()
            await child.wait()
            if self.state is not ConsumerState.DONE and self.state is not ConsumerState.LEASE_LOST:
                self._to(ConsumerState.RESTARTING)
        else:
            await child.stop(self._settings.shutdown_grace_s)

    async def _run_child_once(self) -> None:
        lease = self._leases.lease(self.shard_id)
        if lease is None or self._lease_lost.is_set():
            self._to(ConsumerState.LEASE_LOST)
            self._to_done()
            return
        start = lease.checkpoint or self._settings.initial_position
        if start.is_shard_end:
            await self._leases.forget(self.shard_id)
            self._to_done()
            return
        if self._stop.is_set():  # handed off or shut down before a child was needed
            await self._end_without_child()
            return
        # The checkpoint itself counts as delivered: a child restarted after
        # checkpointing a closed shard's last record may name it again at
        # shardEnded, and that must still count as SHARD_END.
        self._largest_delivered = start if not start.is_sentinel else None
        self._start = start
        self._shard_closed.clear()
        try:
            self._child = await self._launch_child(self.shard_id)
            self._skipped_lines = LogBudget()
        except KclDaemonError as error:
            raise ChildFailed(f"could not start: {error}") from error
        pending = lease.pending_checkpoint
        answer = await self._exchange(
            Initialize(
                self.shard_id,
                start.sequence_number,
                start.sub_sequence_number,
                pending.sequence_number if pending else None,
                pending.sub_sequence_number if pending else None,
            ).encode(),
            "initialize",
        )
        # The record-columns extension (protocol.records), for this child's life.
        self._record_columns = answer.record_columns
        if self._bisector is not None:
            start = await self._bisect(start)
        self._fetcher = self._make_fetcher(self.shard_id, start, self._record_columns)
        self._fetcher.start()
        self._to(ConsumerState.PROCESSING)
        await self._process_until_done()

    async def _process_until_done(self) -> None:
        assert self._fetcher is not None
        while True:
            batch = await self._next_batch_or_signal()
            if batch is None:
                await self._finish_on_signal()
                return
            if batch.records or self._settings.call_process_records_even_for_empty:
                await self._deliver(batch)
            elif batch.millis_behind_latest is not None:
                self.stats.millis_behind_latest = batch.millis_behind_latest
            if batch.shard_end:
                await self._shard_end(batch)
                return

    async def _next_batch_or_signal(self) -> Batch | None:
        while True:
            assert self._fetcher is not None
            fetch = asyncio.ensure_future(self._fetcher.next_batch())
            events = (self._stop, self._lease_lost, self._shard_closed)
            signals = [asyncio.ensure_future(e.wait()) for e in events]
            # A child can die between batches (a crash, the memory limit): on an
            # idle shard nobody would notice until the next record arrives.
            assert self._child is not None
            exited = asyncio.ensure_future(self._child.wait())
            try:
                done, _ = await asyncio.wait(
                    [fetch, exited, *signals], return_when="FIRST_COMPLETED"
                )
            finally:
                for signal in (*signals, exited):
                    signal.cancel()
            # A stop or a lost lease wins over a ready batch: on a busy shard a
            # batch is always ready, and the child must still get its
            # shutdownRequested (and final checkpoint) within the grace time.
            if self._stopping():
                fetch.cancel()
                return None
            if fetch in done:
                break
            fetch.cancel()
            if exited in done:
                raise ChildFailed(f"exited between batches: {exited.result().description}")
            await self._refetch_closed_shard()
        try:
            return fetch.result()
        except DependencyError as error:
            # Retriable: start again from the checkpoint, with back-off.
            raise ChildFailed(f"reading records failed: {error}") from error
        except KclDaemonError as error:
            raise FetchFatal(str(error)) from error

    async def _refetch_closed_shard(self) -> None:
        """A new fetcher that knows the shard's end, from the last record delivered."""
        self._shard_closed.clear()
        assert self._fetcher is not None
        await self._fetcher.close()
        resume = self._largest_delivered or self._start
        self._log.info("shard closed; reading on to its end", resume_after=str(resume))
        self._fetcher = self._make_fetcher(self.shard_id, resume, self._record_columns)
        self._fetcher.start()

    async def _deliver(self, batch: Batch) -> None:
        started = time.monotonic()
        if batch.last_position is not None:
            self._largest_delivered = batch.last_position
        self._delivering = batch.records
        await self._exchange(
            ProcessRecords(
                batch.records, batch.millis_behind_latest, self._record_columns
            ).encode(),
            "processRecords",
        )
        self._delivering = None
        if self._failures is not None:
            self._failures.succeeded()
        stats = self.stats
        stats.process_records_seconds += time.monotonic() - started
        stats.records += len(batch.records)
        stats.bytes += batch.byte_size
        stats.batches += 1
        stats.millis_behind_latest = batch.millis_behind_latest

    # -- poison records (poisonRecordPolicy = DEAD_LETTER) ------------------------

    async def _note_failure(self, reason: str) -> None:
        """Count a failure against the batch in flight; start or advance a bisection."""
        records, self._delivering = self._delivering, None
        poison = self._settings.poison
        if poison is None or not records:
            return
        if self._bisector is None:
            assert self._failures is not None
            if self._failures.failed(_position(records[0])):
                self._log.warning(
                    "batch keeps failing; narrowing it down to the failing records",
                    records=len(records),
                    attempts=self._failures.failures,
                )
                self._bisector = BatchBisector(list(records), poison.max_attempts)
            return
        verdict = self._bisector.failed()
        if verdict.poison is None:
            return
        record = verdict.poison
        letter = DeadLetter.from_wire_record(
            poison.application, self.shard_id, dict(record), reason, verdict.attempts
        )
        try:
            await asyncio.to_thread(poison.sink.write, letter)
        except KclDaemonError as error:
            # Not written, so not skipped: start the narrowing again later.
            self._log.error("dead-letter write failed; the record is retried", error=str(error))
            self._bisector = None
            return
        self.stats.dead_lettered += 1
        self._log.error(
            "poison record dead-lettered",
            sequence_number=record["sequenceNumber"],
            sub_sequence_number=record["subSequenceNumber"],
            attempts=verdict.attempts,
            failure=reason,
        )

    async def _bisect(self, start: ExtendedSequenceNumber) -> ExtendedSequenceNumber:
        """Deliver the failing batch segment by segment; then checkpoint past it."""
        bisector = self._bisector
        assert bisector is not None
        while not bisector.done:
            segment = bisector.current()
            self._delivering = segment
            self._largest_delivered = _position(segment[-1])
            await self._exchange(
                ProcessRecords(segment, None, self._record_columns).encode(), "processRecords"
            )
            self._delivering = None
            bisector.succeeded()
        last = _position(bisector.records[-1])
        self._bisector = None
        if self._failures is not None:
            self._failures.succeeded()
        # Every record of the batch was processed or dead-lettered.
        if start < last:
            try:
                await self._leases.checkpoint(self.shard_id, last)
            except KclDaemonError as error:
                self._log.warning("checkpoint past a poison batch failed", error=str(error))
                return start
        self._largest_delivered = last
        return last

    async def _finish_on_signal(self) -> None:
        if self._lease_lost.is_set():
            await self._send_lease_lost()
            return
        self._to(ConsumerState.SHUTTING_DOWN)
        try:
            await self._exchange(
                ShutdownRequested().encode(),
                "shutdownRequested",
                timeout=self._settings.shutdown_grace_s,
            )
        except ChildFailed as failure:
            self._log.warning("child did not finish shutdownRequested", reason=str(failure))
        await self._discard_child(None)
        if self._lease_lost.is_set():
            self._to(ConsumerState.LEASE_LOST)
        else:
            await self._leases.release(self.shard_id)
        self._to_done()

    async def _send_lease_lost(self) -> None:
        self._to(ConsumerState.LEASE_LOST)
        try:
            await self._exchange(
                LeaseLost().encode(), "leaseLost", timeout=self._settings.shutdown_grace_s
            )
        except ChildFailed as failure:
            self._log.warning("child did not finish leaseLost", reason=str(failure))
        await self._discard_child(None)
        self._to_done()

    async def _shard_end(self, batch: Batch) -> None:
        self._to(ConsumerState.SHARD_ENDING)
        self._log.info("shard ended", children=[c.get("ShardId") for c in batch.child_shards or []])
        await self._on_shard_end(self.shard_id, batch.child_shards)
        if not self._leases.holds(self.shard_id):
            await self._send_lease_lost()
            return
        await self._exchange(ShardEnded().encode(), "shardEnded")
        lease = self._leases.lease(self.shard_id)
        if lease is None:
            await self._send_lease_lost()
            return
        if not (lease.checkpoint and lease.checkpoint.is_shard_end):
            raise ChildFailed("the processor did not checkpoint at shard end")
        await self._discard_child(None)
        await self._leases.forget(self.shard_id)
        self._to_done()

    # -- the exchange -------------------------------------------------------------

    async def _exchange(self, line: bytes, action: str, timeout: float | None = None) -> Status:
        """Send one action and serve checkpoints until its ``status`` comes back; that status."""
        child = self._child
        assert child is not None
        self._current_action = action
        limit = timeout if timeout is not None else self._settings.action_timeout_s
        try:
            # A hung child stops reading stdin too: the send is bounded as well.
            try:
                await child.send(line, timeout=limit)
            except asyncio.TimeoutError as error:
                raise ChildFailed(f"{action} not read within {limit} s") from error
            while True:
                try:
                    raw = await child.read_line(limit)
                except asyncio.TimeoutError as error:
                    raise ChildFailed(f"no answer to {action} within {limit} s") from error
                if isinstance(raw, OversizedLine):
                    raise ChildFailed(
                        f"a line of {raw.length} bytes on stdout (protocol violation)"
                    )
                message = decode_child_line(raw)
                if isinstance(message, Status):
                    if message.response_for != action:
                        raise ChildFailed(
                            f"status for {message.response_for!r} while waiting for {action!r}"
                        )
                    return message
                if isinstance(message, CheckpointRequest):
                    reply = await self._serve_checkpoint(message, action)
                    await child.send(reply.encode())
                    continue
                await self._problem_line(message, raw, child)
        except ChildExited as exited:
            raise ChildFailed(f"exited during {action}: {exited}") from exited
        except ProtocolViolation as violation:
            raise ChildFailed(str(violation)) from violation
        finally:
            self._current_action = None

    async def _problem_line(self, problem: DecodeProblem, raw: bytes, child: ChildProcess) -> None:
        if problem.problem is Problem.BLANK:
            return
        if problem.action == "checkpoint":
            # Answer it, or the child would wait forever for a reply.
            await child.send(CheckpointReply(None, None, "IllegalArgumentException").encode())
            self._log.warning("malformed checkpoint request", problem=problem.describe())
            return
        if problem.action == "status":
            raise ChildFailed(f"malformed status: {problem.describe()}")
        log, held_back = self._skipped_lines.take(time.monotonic())
        if log:
            fields = {"not_logged_before": held_back} if held_back else {}
            self._log.warning("skipped a line from the child", problem=problem.describe(), **fields)

    async def _serve_checkpoint(self, request: CheckpointRequest, action: str) -> CheckpointReply:
        try:
            if action not in ("processRecords", "shardEnded", "shutdownRequested"):
                raise InvalidStateError(f"no checkpointer during {action}")
            if self._lease_lost.is_set() or not self._leases.holds(self.shard_id):
                raise LeaseLostError("this worker no longer holds the lease")
            lease = self._leases.lease(self.shard_id)
            position = resolve_checkpoint(
                request.sequence_number,
                request.sub_sequence_number,
                current=lease.checkpoint if lease else None,
                largest_delivered=self._largest_delivered,
                shard_ending=action == "shardEnded",
            )
            if request.prepare:
                await self._leases.prepare_checkpoint(self.shard_id, position)
            else:
                await self._leases.checkpoint(self.shard_id, position)
            error = None
        except (CheckpointRangeError, InvalidStateError, KclDaemonError) as failure:
            error = checkpoint_error_name(failure)
            self.stats.checkpoint_failures += 1
            self._log.warning(
                "checkpoint refused",
                sequence_number=request.sequence_number,
                sub_sequence_number=request.sub_sequence_number,
                error=error,
                reason=str(failure),
            )
        return CheckpointReply(
            request.sequence_number, request.sub_sequence_number, error, request.prepare
        )


def _position(record: WireRecord) -> ExtendedSequenceNumber:
    return ExtendedSequenceNumber(record["sequenceNumber"], record["subSequenceNumber"])
