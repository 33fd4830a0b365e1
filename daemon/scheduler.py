"""The top of the daemon: shard sync, lease coordination, one consumer per lease.

Owns the wiring and the life of the run, not the logic of any part: it makes
sure the lease table exists, keeps leases in step with the stream's shards
(also the children a shard's end names), runs the lease coordinator, starts a
``ShardConsumer`` for every lease taken and tells it when the lease is lost
or handed off to balance the workers, wakes child shards as soon as a scan
or a local shard end shows their parents finished, deletes finished leases
(cleanupLeasesUponShardCompletion), and stops everything gracefully
(shutdownRequested, final checkpoints, leases released) when asked.

Concurrency: one asyncio loop carries every child pipe, timer and signal;
blocking boto3 calls run in one bounded thread pool. A consumer that fails
in an unexpected way is logged and its lease released; nothing a consumer
does can stop the scheduler.
"""

from __future__ import annotations

import asyncio
import os
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from daemon import shard_sync
from daemon.child import ChildProcess
from daemon.config import Config
from daemon.consumer import ConsumerSettings, PoisonSettings, ShardConsumer
from daemon.consumer_states import ConsumerState
from daemon.dead_letter import DeadLetterSink, DynamoDbDeadLetters, KinesisDeadLetters
from daemon.errors import DependencyError, KclDaemonError
from daemon.lease_coordinator import LeaseCoordinator
from daemon.leases.model import Lease
from daemon.leases.store import LeaseStore
from daemon.logs import get_logger
from daemon.restart_policy import RestartPolicy
from daemon.retrieval import ShardFetcher
from daemon.sequence import AT_TIMESTAMP, ExtendedSequenceNumber

# Tries of the start-up calls (table, shard listing, leases) on retriable errors.
_START_ATTEMPTS = 4


def initial_position(config: Config) -> ExtendedSequenceNumber:
    if config.initial_position_in_stream_extended is not None:
        return ExtendedSequenceNumber(AT_TIMESTAMP)
    return ExtendedSequenceNumber(config.initial_position_in_stream)


class Scheduler:
    def __init__(
        self,
        config: Config,
        child_argv: list[str],
        *,
        kinesis: Any,
        dynamodb: Any,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.config = config
        self._argv = child_argv
        self._kinesis = kinesis
        self._executor = executor
        self.store = LeaseStore(dynamodb, config.table_name)
        self._poison = _poison_settings(config, kinesis=kinesis, dynamodb=dynamodb)
        self.consumers: dict[str, ShardConsumer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._shards: dict[str, dict[str, Any]] = {}
        self._log = get_logger(worker_id=config.worker_id)
        self._stopping = False
        # Shards whose fetcher was built while ListShards still showed them open.
        self._fetching_open: set[str] = set()
        self._housekeeping: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        # Lease writes get threads of their own: behind a queue of slow
        # GetRecords calls on a busy daemon, renewals would miss the failover
        # time and leases would be lost for no reason.
        self._lease_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="leases")
        self.coordinator = LeaseCoordinator(
            self.store,
            config.worker_id,
            failover_s=config.failover_time_millis / 1000,
            max_leases_for_worker=config.max_leases_for_worker,
            max_leases_to_steal=config.max_leases_to_steal_at_one_time,
            executor=self._lease_executor,
            on_taken=self._start_consumer,
            on_lost=self._consumer_lost,
            on_hand_off=self._hand_off,
            on_scan=self._after_scan,
            # Workers starting together then race for different leases.
            rng=random.Random(),
        )

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _stream(self) -> dict[str, str | None]:
        return {"stream_name": self.config.stream_name, "stream_arn": self.config.stream_arn}

    # -- start-up -------------------------------------------------------------

    async def prepare(self) -> None:
        """Table ready and leases in step with the shards; raises on fatal errors.

        A retriable failure (throttling, a 5xx, a reset connection) is retried
        a few times with back-off; one that persists, or any other, is raised
        so that the CLI exits 1 naming it (an unreachable endpoint is reported
        within seconds).
        """
        delay = 0.25
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                created = await self._call(self.store.ensure_table)
                self._log.info("lease table ready", table=self.config.table_name, created=created)
                if self._poison is not None and isinstance(self._poison.sink, DynamoDbDeadLetters):
                    await self._call(self._poison.sink.ensure_table)
                await self.sync_shards()
                return
            except DependencyError as error:
                if not error.retriable or attempt == _START_ATTEMPTS:
                    raise
                self._log.warning(
                    "start-up call failed; retrying",
                    error=str(error),
                    attempt=attempt,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay *= 2

    async def sync_shards(self, child_shards: list[dict[str, Any]] | None = None) -> None:
        """List shards, create missing leases (also for ``child_shards`` of a GetRecords end)."""
        shards = await self._call(lambda: shard_sync.list_all_shards(self._kinesis, **self._stream))
        self._shards = {shard["ShardId"]: shard for shard in shards}
        existing = {lease.lease_key: lease for lease in await self._call(self.store.list_leases)}
        new = shard_sync.plan_new_leases(shards, existing, initial_position(self.config))
        planned = {**existing, **{lease.lease_key: lease for lease in new}}
        new += shard_sync.leases_for_child_shards(child_shards or [], planned)
        for lease in new:
            if await self._call(self.store.create_lease_if_absent, lease):
                self._log.info("lease created", shard_id=lease.lease_key)
        for key in sorted(self._fetching_open):
            if _ending_sequence_number(self._shards.get(key, {})) and key in self.consumers:
                self._fetching_open.discard(key)
                self.consumers[key].shard_closed()

    # -- consumers ----------------------------------------------------------------

    def _consumer_settings(self) -> ConsumerSettings:
        config = self.config
        return ConsumerSettings(
            initial_position=initial_position(config),
            action_timeout_s=config.timeout_in_seconds,
            shutdown_grace_s=config.shutdown_grace_millis / 1000,
            call_process_records_even_for_empty=config.call_process_records_even_for_empty_record_list,
            parent_poll_interval_s=config.parent_shard_poll_interval_millis / 1000,
            task_backoff_s=config.task_backoff_time_millis / 1000,
            poison=self._poison,
        )

    def _make_fetcher(
        self, shard_id: str, start: ExtendedSequenceNumber, record_columns: bool = False
    ) -> ShardFetcher:
        config = self.config
        shard = self._shards.get(shard_id, {})
        hash_range = _hash_range(shard, self.coordinator.lease(shard_id))
        ending = _ending_sequence_number(shard)
        if ending is None:
            self._fetching_open.add(shard_id)
        else:
            self._fetching_open.discard(shard_id)
        return ShardFetcher(
            self._kinesis,
            self._executor,
            shard_id=shard_id,
            start=start,
            stream_name=config.stream_name,
            stream_arn=config.stream_arn,
            at_timestamp=config.initial_position_in_stream_extended,
            max_records=config.max_records,
            idle_time_between_reads_s=config.idle_time_between_reads_millis / 1000,
            prefetch_max_records=config.prefetch_max_records,
            prefetch_max_bytes=config.prefetch_max_bytes,
            hash_range=hash_range,
            record_columns=record_columns,
            ending_sequence_number=ending,
        )

    async def _launch_child(self, shard_id: str) -> ChildProcess:
        return await ChildProcess.start(
            self._argv,
            shard_id=shard_id,
            env=dict(os.environ),
            stderr_level=self.config.child_stderr_log_level.lower(),
        )

    async def _on_shard_end(self, shard_id: str, child_shards: list[dict[str, Any]] | None) -> None:
        """Child leases exist and the parent names them before the child is told."""
        for attempt in range(3):
            try:
                await self.sync_shards(child_shards)
                break
            except DependencyError as error:
                self._log.warning(
                    "shard sync at shard end failed", error=str(error), attempt=attempt
                )
                await asyncio.sleep(self.config.task_backoff_time_millis / 1000)
        children = {c["ShardId"] for c in child_shards or [] if "ShardId" in c}
        children.update(shard_sync.children_of(shard_id, list(self._shards.values())))
        if children and self.coordinator.holds(shard_id):
            try:
                await self.coordinator.set_child_shard_ids(shard_id, sorted(children))
            except KclDaemonError as error:
                self._log.warning("could not record child shards", error=str(error))

    async def _start_consumer(self, lease: Lease) -> None:
        """Start a consumer for a lease just taken (called by the coordinator; never blocks)."""
        key = lease.lease_key
        if self._stopping or key in self._tasks:
            # A consumer of an earlier hold is still finishing; _run_consumer
            # starts a new one when it is done if the lease is held then.
            return
        config = self.config
        consumer = ShardConsumer(
            key,
            leases=self.coordinator,
            make_fetcher=self._make_fetcher,
            launch_child=self._launch_child,
            restart_policy=RestartPolicy(
                initial_backoff_s=config.child_restart_backoff_millis / 1000,
                max_backoff_s=config.child_restart_max_backoff_millis / 1000,
                min_uptime_s=config.child_min_uptime_seconds,
                budget=config.child_restart_budget,
            ),
            settings=self._consumer_settings(),
            on_shard_end=self._on_shard_end,
            parent_shard_ids=lease.parent_shard_ids,
        )
        self.consumers[key] = consumer
        self._tasks[key] = asyncio.create_task(self._run_consumer(consumer), name=f"consumer-{key}")

    async def _run_consumer(self, consumer: ShardConsumer) -> None:
        key = consumer.shard_id
        try:
            if key not in self._shards:
                # A lease for a shard not listed yet (a child created by a peer).
                try:
                    await self.sync_shards()
                except KclDaemonError as error:
                    self._log.warning("shard sync failed", error=str(error))
            await consumer.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug in one consumer must not take the others down: log it with
            # its traceback and give the lease back so it is picked up afresh.
            self._log.exception("consumer failed unexpectedly", shard_id=key)
            await self.coordinator.release(key)
        finally:
            self.consumers.pop(key, None)
            self._tasks.pop(key, None)
            self._fetching_open.discard(key)
        if consumer.state is ConsumerState.DONE and not self._stopping:
            # A parent that just finished here: its children need not wait for a poll.
            self._recheck_waiting_children()
            lease = self.coordinator.lease(key)
            if lease is not None and self.coordinator.holds(key):
                # Taken again while the old consumer was finishing (reclaimed).
                await self._start_consumer(lease)

    async def _consumer_lost(self, key: str, why: str) -> None:
        consumer = self.consumers.get(key)
        if consumer is not None:
            consumer.lease_lost()

    async def _hand_off(self, key: str) -> None:
        """Balance: the consumer stops gracefully and releases the lease itself."""
        consumer = self.consumers.get(key)
        if consumer is None:
            await self.coordinator.release(key)
        else:
            consumer.request_shutdown()

    def _recheck_waiting_children(self) -> None:
        for consumer in self.consumers.values():
            if consumer.state is ConsumerState.WAITING_ON_PARENTS:
                consumer.recheck_parents()

    def _after_scan(self, leases: list[Lease]) -> None:
        """Every lease scan: wake children whose parents finished; clean up finished leases."""
        finished = {lease.lease_key for lease in leases if lease.is_finished}
        present = {lease.lease_key for lease in leases}
        for consumer in self.consumers.values():
            if consumer.state is ConsumerState.WAITING_ON_PARENTS and all(
                parent in finished or parent not in present for parent in consumer.parent_shard_ids
            ):
                consumer.recheck_parents()
        if not self.config.cleanup_leases_upon_shard_completion:
            return
        doomed = shard_sync.leases_to_clean_up(leases, list(self._shards.values()))
        if doomed and (self._housekeeping is None or self._housekeeping.done()):
            self._housekeeping = asyncio.create_task(self._clean_up(doomed), name="lease-cleanup")

    async def _clean_up(self, doomed: list[Lease]) -> None:
        for lease in doomed:
            try:
                await self._call(self.store.delete_lease, lease.lease_key)
                self._log.info(
                    "finished lease deleted",
                    shard_id=lease.lease_key,
                    children=sorted(lease.child_shard_ids),
                )
            except KclDaemonError as error:
                self._log.warning(
                    "finished lease not deleted", shard_id=lease.lease_key, error=str(error)
                )

    # -- the run ----------------------------------------------------------------------

    async def _sync_loop(self, stop: asyncio.Event) -> None:
        interval = self.config.shard_sync_interval_millis / 1000
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.sync_shards()
            except KclDaemonError as error:
                self._log.warning("shard sync failed", error=str(error))

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down gracefully."""
        await self.prepare()
        coordinator_stop = asyncio.Event()
        background = [
            asyncio.create_task(self.coordinator.run(coordinator_stop), name="lease-coordinator"),
            asyncio.create_task(self._sync_loop(coordinator_stop), name="shard-sync"),
        ]
        self.ready.set()
        self._log.info("worker started", stream=self.config.stream_name or self.config.stream_arn)
        try:
            await stop.wait()
        finally:
            await self.shutdown()
            coordinator_stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            self._lease_executor.shutdown(wait=False, cancel_futures=True)

    async def shutdown(self) -> None:
        """shutdownRequested to every child, final checkpoints, leases released."""
        self._stopping = True
        self.coordinator.stop_taking()
        tasks = list(self._tasks.values())
        self._log.info("shutting down", consumers=len(tasks))
        for consumer in list(self.consumers.values()):
            consumer.request_shutdown()
        if tasks:
            # Each consumer bounds its own child's exit by the grace time; the
            # extra margin covers the lease writes that follow.
            grace = self.config.shutdown_grace_millis / 1000 * 2 + 5
            done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for key in self.coordinator.held_keys():
            await self.coordinator.release(key)
        if self._housekeeping is not None:
            await asyncio.gather(self._housekeeping, return_exceptions=True)


def _ending_sequence_number(shard: dict[str, Any]) -> str | None:
    """The closed shard's EndingSequenceNumber, unless it cannot be right.

    kinesis-local reports 2**63-1 for every closed shard, below every real
    sequence number of the shard; handed to the fetcher it would end the shard
    after the first batch. Such a value is dropped: that backend's null
    iterator marks the end anyway.
    """
    numbers = shard.get("SequenceNumberRange", {})
    ending = numbers.get("EndingSequenceNumber")
    starting = numbers.get("StartingSequenceNumber")
    if ending is None or (starting is not None and int(ending) < int(starting)):
        return None
    return str(ending)


def _hash_range(shard: dict[str, Any], lease: Lease | None) -> tuple[int, int] | None:
    """The shard's hash-key range from ListShards, else from its lease (for deaggregation)."""
    hash_range = shard.get("HashKeyRange")
    if hash_range:
        return int(hash_range["StartingHashKey"]), int(hash_range["EndingHashKey"])
    if lease is None or lease.starting_hash_key is None or lease.ending_hash_key is None:
        return None
    return lease.starting_hash_key, lease.ending_hash_key


def _poison_settings(config: Config, *, kinesis: Any, dynamodb: Any) -> PoisonSettings | None:
    """The dead-letter set-up when poisonRecordPolicy = DEAD_LETTER, else None."""
    if config.poison_record_policy != "DEAD_LETTER":
        return None
    sink: DeadLetterSink
    if config.dead_letter_table_name:
        sink = DynamoDbDeadLetters(dynamodb, config.dead_letter_table_name)
    else:
        sink = KinesisDeadLetters(kinesis, config.dead_letter_stream_name)
    return PoisonSettings(config.poison_record_max_attempts, sink, config.application_name)
