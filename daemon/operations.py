"""The operational side of a running daemon, started and stopped as one.

Owns the tasks that watch the scheduler from outside: metrics sampling
(CloudWatch publisher and the opt-in Prometheus endpoint), the per-child
memory limit, the health log line, and systemd's notify protocol (READY,
STATUS, WATCHDOG, STOPPING). Each reads the scheduler's state; none of them
changes how records flow, so a failure here never stops processing.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from daemon import health, metrics, metrics_cloudwatch, metrics_prometheus, systemd
from daemon.child_limits import ChildWatcher
from daemon.config import Config


class Operations:
    def __init__(self, config: Config, scheduler: Any, executor: Executor) -> None:
        # First, so NOTIFY_SOCKET is gone from the environment children inherit.
        self.notifier = systemd.Notifier.from_env()
        self._config = config
        self._scheduler = scheduler
        self._executor = executor
        self.registry = metrics.MetricsRegistry(
            metrics.recording_level(config.metrics_level, bool(config.metrics_prometheus_address))
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._prometheus: metrics_prometheus.PrometheusEndpoint | None = None

    def start(self) -> None:
        config, scheduler = self._config, self._scheduler
        publisher = metrics_cloudwatch.publisher_from_config(config, self.registry)
        children = ChildWatcher(
            scheduler, limit_megabytes=config.child_max_rss_megabytes, executor=self._executor
        )
        sampler = metrics.MetricsSampler(
            self.registry, scheduler, worker_id=config.worker_id, children=children
        )
        self._prometheus = metrics_prometheus.start_from_setting(
            self.registry, config.metrics_prometheus_address
        )
        status = health.HealthTracker(scheduler).status_text
        stop = self._stop
        jobs = [
            children.run(stop),
            sampler.run(stop),
            systemd.run_watchdog(self.notifier, stop, status=status),
            systemd.notify_ready_when(
                self.notifier,
                health.started_check(scheduler),
                after=scheduler.ready,
                stop=stop,
                status=status,
            ),
        ]
        if config.health_log_interval_seconds > 0:
            jobs.append(
                health.HealthLogger(scheduler, config.health_log_interval_seconds).run(stop)
            )
        if publisher is not None:
            jobs.append(
                publisher.run(
                    stop,
                    self._executor,
                    config.metrics_buffer_time_millis / 1000,
                    before_final_flush=sampler.sample,
                )
            )
        self._tasks = [asyncio.create_task(job) for job in jobs]

    def stopping(self) -> None:
        self.notifier.stopping()

    async def stop(self) -> None:
        """Final metrics flush included; watchdog pings covered the graceful stop."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._prometheus is not None:
            self._prometheus.stop()
        self.notifier.close()
