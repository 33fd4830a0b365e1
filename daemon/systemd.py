"""The systemd notify protocol (sd_notify), with the standard library only.

Owns the daemon's side of ``Type=notify``: READY=1 once the lease table is
ready and the first leases are being processed, STATUS= lines (leases held,
records/s), WATCHDOG=1 pings at half of ``WatchdogSec`` while the event loop
runs (a blocked loop stops the pings and systemd restarts the service), and
STOPPING=1 when a stop begins.

A message is one datagram of ``KEY=value`` lines sent to the AF_UNIX socket
named by ``$NOTIFY_SOCKET``: a path, or an abstract-namespace name written
with a leading ``@`` (sent with a leading NUL byte). Without
``$NOTIFY_SOCKET`` (not under systemd) every call is a no-op. A failed send
is logged once and never raised: losing a status line must not stop a
consumer. The watchdog interval comes from ``$WATCHDOG_USEC`` (ignored when
``$WATCHDOG_PID`` names another process). By default the variables are
removed from the environment so the children, which inherit it, cannot
speak for the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from daemon.logs import get_logger

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
#: How often STATUS= is refreshed when systemd asked for no watchdog.
DEFAULT_STATUS_INTERVAL_S = 15.0


def socket_address(value: str) -> str | bytes:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value; ValueError if it is not one."""
    if value.startswith("@"):
        # Linux abstract namespace: the name starts with a NUL byte instead of '@'.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"{NOTIFY_SOCKET}={value!r} is neither a socket path nor an @abstract name")


def watchdog_interval_s(usec: str | None, pid: str | None, my_pid: int) -> float | None:
    """Half the watchdog timeout, as sd_watchdog_enabled advises; None when there is none."""
    if not usec:
        return None
    try:
        timeout = int(usec)
        if pid and int(pid) != my_pid:
            return None
    except ValueError:
        return None
    return timeout / 2 / 1_000_000 if timeout > 0 else None


class Notifier:
    """Sends sd_notify messages; every method is a no-op when not run by systemd."""

    def __init__(
        self, address: str | bytes | None, *, watchdog_s: float | None = None, log: Any = None
    ) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self._socket: socket.socket | None = None
        self._log = log or get_logger()
        self._failed = False

    @classmethod
    def from_env(
        cls,
        environ: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = True,
        pid: int | None = None,
    ) -> Notifier:
        env = os.environ if environ is None else environ
        raw = env.get(NOTIFY_SOCKET)
        watchdog = watchdog_interval_s(
            env.get(WATCHDOG_USEC), env.get(WATCHDOG_PID), os.getpid() if pid is None else pid
        )
        if unset_environment:
            for name in (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID):
                env.pop(name, None)
        log = get_logger()
        address: str | bytes | None = None
        if raw:
            try:
                address = socket_address(raw)
            except ValueError as error:
                log.warning("systemd notifications off", error=str(error))
        return cls(address, watchdog_s=watchdog if address is not None else None, log=log)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True if it was sent."""
        if self.address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # systemd reads at once; a full queue means trouble there, not a reason to block.
                self._socket.setblocking(False)
            self._socket.sendto(message, self.address)
        except OSError as error:
            if not self._failed:
                self._log.warning("systemd notification failed", error=str(error))
                self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping: final checkpoints, releasing leases") -> bool:
        return self.notify("STOPPING=1", f"STATUS={_one_line(status)}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def notify_ready_when(
    notifier: Notifier,
    started: Callable[[], bool],
    *,
    after: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    status: Callable[[], str] | None = None,
    poll_s: float = 0.25,
) -> bool:
    """Send READY=1 once ``after`` is set and then ``started()`` is true; True if sent.

    ``after`` is the lease table being ready (``Scheduler.ready``): polling
    starts only then, so the bound that ``health.started_check`` puts on the
    wait never covers table creation. Returns without READY when ``stop`` is
    set first (the daemon failed to start or was stopped).
    """
    if not notifier.enabled:
        return False
    stopping = stop or asyncio.Event()
    if after is not None and not await _first_of(after, stopping):
        return False
    while not started():
        if stopping.is_set():
            return False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=poll_s)
    return notifier.ready(status() if status else None)


async def _first_of(wanted: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for either event; True if ``wanted`` is set."""
    waiters = [asyncio.ensure_future(wanted.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return wanted.is_set()


async def run_watchdog(
    notifier: Notifier,
    stop: asyncio.Event,
    *,
    healthy: Callable[[], bool] = lambda: True,
    status: Callable[[], str] | None = None,
    status_interval_s: float = DEFAULT_STATUS_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Until ``stop``: WATCHDOG=1 every half watchdog period while ``healthy()``, STATUS= lines.

    A ping comes from this coroutine, so an event loop that stops turning
    stops the pings. ``healthy`` adds what the loop alone cannot show (the
    lease coordinator's task still running). An unhealthy daemon is logged
    and left to systemd's watchdog, which restarts the service.
    """
    if not notifier.enabled:
        return
    wakes = [notifier.watchdog_s, status_interval_s if status is not None else None]
    interval = min((w for w in wakes if w is not None), default=status_interval_s)
    log = get_logger()
    next_status = clock()
    while not stop.is_set():
        if notifier.watchdog_s is not None:
            if healthy():
                notifier.watchdog()
            else:
                log.error("unhealthy: withholding the systemd watchdog ping")
        if status is not None and clock() >= next_status:
            notifier.status(status())
            next_status = clock() + status_interval_s
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
