"""The top of the daemon: shard sync, lease coordination, one consumer per lease.

Owns the wiring and the life of the run, not the logic of any part: it makes
sure the lease table exists, keeps leases in step with the stream's shards,
runs the lease coordinator, starts a ``ShardConsumer`` for every lease taken
and tells it when the lease is lost, and stops everything gracefully
(shutdownRequested, final checkpoints, leases released) when asked.

Concurrency: one asyncio loop carries every child pipe, timer and signal;
blocking boto3 calls run in one bounded thread pool. A consumer that fails
in an unexpected way is logged and its lease released; nothing a consumer
does can stop the scheduler.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from daemon import shard_sync
from daemon.child import ChildProcess
from daemon.config import Config
from daemon.consumer import ConsumerSettings, ShardConsumer
from daemon.errors import DependencyError, KclDaemonError
from daemon.lease_coordinator import LeaseCoordinator
from daemon.leases.model import Lease
from daemon.leases.store import LeaseStore
from daemon.logs import get_logger
from daemon.restart_policy import RestartPolicy
from daemon.retrieval import ShardFetcher
from daemon.sequence import AT_TIMESTAMP, ExtendedSequenceNumber


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
        self.consumers: dict[str, ShardConsumer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._shards: dict[str, dict[str, Any]] = {}
        self._log = get_logger(worker_id=config.worker_id)
        self._stopping = False
        self.ready = asyncio.Event()
        self.coordinator = LeaseCoordinator(
            self.store,
            config.worker_id,
            failover_s=config.failover_time_millis / 1000,
            max_leases_for_worker=config.max_leases_for_worker,
            max_leases_to_steal=config.max_leases_to_steal_at_one_time,
            executor=executor,
            on_taken=self._start_consumer,
            on_lost=self._consumer_lost,
        )

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def _stream(self) -> dict[str, str | None]:
        return {"stream_name": self.config.stream_name, "stream_arn": self.config.stream_arn}

    # -- start-up -------------------------------------------------------------

    async def prepare(self) -> None:
        """Table ready and leases in step with the shards; raises on fatal errors."""
        created = await self._call(self.store.ensure_table)
        self._log.info("lease table ready", table=self.config.table_name, created=created)
        await self.sync_shards()

    async def sync_shards(self) -> None:
        shards = await self._call(lambda: shard_sync.list_all_shards(self._kinesis, **self._stream))
        self._shards = {shard["ShardId"]: shard for shard in shards}
        existing = {lease.lease_key: lease for lease in await self._call(self.store.list_leases)}
        new = shard_sync.plan_new_leases(shards, existing, initial_position(self.config))
        for lease in new:
            if await self._call(self.store.create_lease_if_absent, lease):
                self._log.info("lease created", shard_id=lease.lease_key)

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
        )

    def _make_fetcher(self, shard_id: str, start: ExtendedSequenceNumber) -> ShardFetcher:
        config = self.config
        shard = self._shards.get(shard_id, {})
        hash_range = shard.get("HashKeyRange")
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
            hash_range=(
                (int(hash_range["StartingHashKey"]), int(hash_range["EndingHashKey"]))
                if hash_range
                else None
            ),
            ending_sequence_number=shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber"),
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
                await self.sync_shards()
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
        key = lease.lease_key
        if self._stopping or key in self._tasks:
            return
        if key not in self._shards:
            # A lease for a shard we have not listed yet (a child created by a peer).
            try:
                await self.sync_shards()
            except KclDaemonError as error:
                self._log.warning("shard sync failed", error=str(error))
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

    async def _consumer_lost(self, key: str, why: str) -> None:
        consumer = self.consumers.get(key)
        if consumer is not None:
            consumer.lease_lost()

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

    async def shutdown(self) -> None:
        """shutdownRequested to every child, final checkpoints, leases released."""
        self._stopping = True
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
