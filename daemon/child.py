"""One child processor process: spawn, pipes, lines, stop, reap.

Owns the operating-system side of a shard's child and nothing of the
protocol: it hands the consumer raw stdout lines (bytes, blank lines
dropped) and takes encoded lines to write to stdin. JSON is decoded by the
consumer with ``protocol/messages.py``.

Design notes (why, not what):

* The child runs through ``loop.subprocess_exec`` with a protocol object
  instead of ``asyncio.create_subprocess_exec`` and StreamReader tasks. The
  pipes then push data into callbacks as it arrives, so stdout and stderr are
  drained for the whole life of the child with no reader task per pipe (100+
  children means 200+ fewer tasks), no ``readline`` limit errors to recover
  from (we split lines ourselves and discard an oversized line's tail as it
  streams past), and the exit is seen as soon as the child is reaped. asyncio's
  ``Process.wait()`` instead waits for every pipe to close, which never
  happens while a grandchild holds stdout.
* Stdout lines queue until the consumer reads them. The protocol is call and
  response, so a long queue means a child writing junk; past
  ``max_queued_lines`` or ``max_queued_bytes`` it is a protocol violation: the
  queue is dropped, the child SIGKILLed, and ``read_line`` raises
  :class:`ChildExited` with ``violation`` set.
* The child gets its own session (``start_new_session``): Ctrl+C on the
  daemon's terminal does not reach it; the daemon decides. Signals go to its
  process group, and whatever of the group outlives the child is SIGKILLed
  when the child is reaped, so a grandchild cannot keep a pipe (and the
  shard) alive.
* One reap path: the exit callback classifies the exit once
  (:func:`daemon.exits.classify_exit`) and logs it as one line.
* Cost per child: three pipe descriptors, plus a waiter thread (Python
  3.10/3.11, asyncio's ThreadedChildWatcher) or a pidfd (3.12+).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections import deque
from typing import Any

import structlog

from daemon.errors import InvalidStateError, KclDaemonError
from daemon.exits import ExitInfo, classify_exit, describe_start_failure, read_oom_kill_count
from daemon.lines import LineSplitter, OversizedLine, StdoutLine

DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_QUEUED_LINES = 10_000
OVERSIZED_HEAD_BYTES = 1024
STDERR_MAX_LINE_BYTES = 8 * 1024
DEFAULT_TERM_GRACE_S = 2.0
STDIN_PIPE_BYTES = 1024 * 1024
# After stdout closes or stdin breaks, how long to wait for the exit status so
# that ChildExited can say how the child ended (normally milliseconds).
EXIT_SETTLE_S = 2.0
# After the child is reaped, how long a process outside its group (it called
# setsid) may keep our pipes open before we close them anyway.
PIPE_SETTLE_S = 2.0
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ChildStartError(KclDaemonError):
    """The child could not be started (missing or non-executable command, bad cwd)."""


class ChildExited(KclDaemonError):
    """The child is gone: stdout closed, stdin broken, or killed for a protocol violation.

    ``exit_info`` is None only if the child closed its pipes but had not exited
    within :data:`EXIT_SETTLE_S`; call :meth:`ChildProcess.stop` to end it.
    """

    def __init__(
        self,
        shard_id: str,
        pid: int,
        detail: str,
        exit_info: ExitInfo | None,
        violation: str | None = None,
    ) -> None:
        ending = exit_info.description if exit_info else "it has not exited yet"
        cause = f"protocol violation: {violation}" if violation else detail
        super().__init__(f"child {pid} of {shard_id} is gone ({cause}): {ending}")
        self.shard_id = shard_id
        self.pid = pid
        self.detail = detail
        self.exit_info = exit_info
        self.violation = violation


class ChildTimeout(KclDaemonError, asyncio.TimeoutError):
    """The child did not produce a line (or accept input) in time; it is still running."""


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _size(item: StdoutLine) -> int:
    return len(item.head) if isinstance(item, OversizedLine) else len(item)


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Forwards asyncio's callbacks to the ChildProcess that owns the pipes."""

    def __init__(self, child: ChildProcess) -> None:
        self._child = child

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._child._on_started(transport)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        self._child._on_data(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._child._on_pipe_closed(fd)

    def process_exited(self) -> None:
        self._child._on_exit()

    def pause_writing(self) -> None:
        self._child._on_pause_writing()

    def resume_writing(self) -> None:
        self._child._on_resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._child._on_finished()


class ChildProcess:
    """A running child processor for one shard. Create it with :meth:`start`."""

    def __init__(
        self,
        argv: list[str],
        *,
        shard_id: str,
        logger: Any,
        stderr_level: str,
        max_line_bytes: int,
        max_queued_lines: int,
        max_queued_bytes: int,
    ) -> None:
        self.argv = list(argv)
        self.shard_id = shard_id
        self._loop = asyncio.get_running_loop()
        self._base_log = logger if logger is not None else structlog.get_logger()
        self._log: Any = self._base_log.bind(shard_id=shard_id)
        self._stderr_log: Any = getattr(self._log, stderr_level)
        self._stderr_level = stderr_level
        self._max_queued_lines = max_queued_lines
        self._max_queued_bytes = max_queued_bytes
        self._stdout = LineSplitter(max_line_bytes, OVERSIZED_HEAD_BYTES)
        self._stderr = LineSplitter(STDERR_MAX_LINE_BYTES, STDERR_MAX_LINE_BYTES)
        self._transport: asyncio.SubprocessTransport | None = None
        self._pid = 0
        self.started_at = time.monotonic()
        self._oom_kills_at_start = read_oom_kill_count()
        self._exited_at: float | None = None
        self._lines: deque[StdoutLine] = deque()
        self._queued_bytes = 0
        self._line_waiter: asyncio.Future[None] | None = None
        self._stdout_eof = False
        self._stderr_eof = False
        self._stdin_lost = False
        self._stdin_closed_by_us = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._requested = False
        self._signal_sent: int | None = None
        self._violation: str | None = None
        self._exit_future: asyncio.Future[ExitInfo] = self._loop.create_future()
        self._exit_info: ExitInfo | None = None
        self._finished: asyncio.Future[None] = self._loop.create_future()
        self._stop_task: asyncio.Future[ExitInfo] | None = None
        self._force_close: asyncio.TimerHandle | None = None
        self._closed = False

    @classmethod
    async def start(
        cls,
        argv: list[str],
        *,
        shard_id: str,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        logger: Any = None,
        stderr_level: str = "info",
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_queued_lines: int = DEFAULT_MAX_QUEUED_LINES,
        max_queued_bytes: int | None = None,
    ) -> ChildProcess:
        """Spawn ``argv`` (no shell) with piped stdin/stdout/stderr in a new session.

        ``env`` is the child's whole environment (None: inherit the daemon's).
        ``max_queued_bytes`` defaults to max(64 MiB, 2 * max_line_bytes).
        Raises :class:`ChildStartError` when the command cannot be run.
        """
        if not argv:
            raise ChildStartError(f"cannot start the child processor for {shard_id}: empty command")
        if stderr_level not in LOG_LEVELS:
            raise ValueError(f"stderr_level must be one of {', '.join(LOG_LEVELS)}")
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        if max_queued_bytes is None:
            max_queued_bytes = max(64 * 1024 * 1024, 2 * max_line_bytes)
        child = cls(
            argv,
            shard_id=shard_id,
            logger=logger,
            stderr_level=stderr_level,
            max_line_bytes=max_line_bytes,
            max_queued_lines=max_queued_lines,
            max_queued_bytes=max_queued_bytes,
        )
        try:
            transport, _ = await child._loop.subprocess_exec(
                lambda: _ChildProtocol(child),
                *argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            reason = describe_start_failure(argv[0], cwd, exc)
            raise ChildStartError(
                f"cannot start the child processor for {shard_id}: {reason}"
            ) from exc
        child._on_started(transport)
        child._grow_stdin_pipe()
        child._log.info("child started", executable=argv[0])
        return child

    def _grow_stdin_pipe(self) -> None:
        # A processRecords line is megabytes; through the default 64 KiB pipe
        # it takes dozens of writes, each a loop wake-up that also shifts the
        # rest of asyncio's write buffer. 1 MiB (Linux's default cap for
        # unprivileged processes) cuts that to a few. Elsewhere, or past the
        # per-user limit, the pipe keeps its size.
        pipe = self._stdin_pipe()
        setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
        if pipe is None or setpipe is None:
            return
        stream = pipe.get_extra_info("pipe")
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fcntl.fcntl(stream.fileno(), setpipe, STDIN_PIPE_BYTES)

    # -- properties -------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return None if self._exit_info is None else self._exit_info.returncode

    @property
    def exit_info(self) -> ExitInfo | None:
        return self._exit_info

    @property
    def running(self) -> bool:
        return self._exit_info is None

    @property
    def violation(self) -> str | None:
        return self._violation

    @property
    def uptime(self) -> float:
        """Seconds since start, up to the exit once the child has exited."""
        end = self._exited_at if self._exited_at is not None else time.monotonic()
        return end - self.started_at

    # -- lines ------------------------------------------------------------

    async def read_line(self, timeout: float | None = None) -> StdoutLine:
        """The next non-blank stdout line, without its b"\\n".

        Raises :class:`ChildTimeout` if none comes within ``timeout`` seconds
        (None: wait for ever), :class:`ChildExited` once stdout has closed and
        every queued line was read, or at once after a protocol violation.
        One reader at a time.
        """
        if self._line_waiter is not None:
            raise RuntimeError("read_line is already being awaited for this child")
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            if self._violation is not None:
                raise await self._gone("protocol violation")
            if self._lines:
                item = self._lines.popleft()
                self._queued_bytes -= _size(item)
                return item
            if self._stdout_eof:
                raise await self._gone("stdout closed")
            remaining = None if deadline is None else deadline - self._loop.time()
            if remaining is not None and remaining <= 0:
                raise ChildTimeout(
                    f"no line from child {self._pid} of {self.shard_id} in {timeout}s"
                )
            self._line_waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(self._line_waiter, remaining)
            except asyncio.TimeoutError:
                pass  # the loop re-checks the queue, then raises ChildTimeout
            finally:
                self._line_waiter = None

    async def send(self, line: bytes, timeout: float | None = None) -> None:
        """Write one line to stdin and wait until the pipe accepts it.

        ``line`` is one encoded message with or without its trailing b"\\n" (one
        is added if missing); it must not contain another newline. Raises
        :class:`ChildExited` if the child's stdin is gone, :class:`ChildTimeout`
        if the pipe stays full for ``timeout`` seconds (the child does not
        read), and InvalidStateError after :meth:`close_stdin`.
        """
        if self._stdin_closed_by_us:
            raise InvalidStateError(f"stdin of child {self._pid} of {self.shard_id} is closed")
        pipe = self._stdin_pipe()
        if pipe is None or self._violation is not None:
            raise await self._gone("stdin closed")
        # Two writes rather than line + b"\n": a processRecords line can be
        # megabytes, and the second write is a tiny syscall or buffer append.
        pipe.write(line)
        if not line.endswith(b"\n"):
            pipe.write(b"\n")
        deadline = None if timeout is None else self._loop.time() + timeout
        while self._write_paused and not self._stdin_lost:
            remaining = None if deadline is None else deadline - self._loop.time()
            if remaining is not None and remaining <= 0:
                raise ChildTimeout(f"child {self._pid} of {self.shard_id} is not reading stdin")
            self._drain_waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(self._drain_waiter, remaining)
            except asyncio.TimeoutError:
                pass  # re-checked above
            finally:
                self._drain_waiter = None
        if self._stdin_lost or pipe.is_closing():
            raise await self._gone("stdin broken")

    def _stdin_pipe(self) -> asyncio.WriteTransport | None:
        if self._transport is None or self._stdin_lost:
            return None
        pipe = self._transport.get_pipe_transport(0)
        if pipe is None or pipe.is_closing():
            return None
        assert isinstance(pipe, asyncio.WriteTransport)
        return pipe

    # -- stopping ---------------------------------------------------------

    async def close_stdin(self) -> None:
        """Close the child's stdin (after flushing what was sent): ask it to exit."""
        self._requested = True
        self._stdin_closed_by_us = True
        pipe = self._stdin_pipe()
        if pipe is not None:
            pipe.close()

    async def stop(self, grace: float, term_grace: float = DEFAULT_TERM_GRACE_S) -> ExitInfo:
        """Close stdin, wait ``grace`` s; SIGTERM, wait ``term_grace`` s; SIGKILL.

        Returns, like :meth:`wait`, once the child is reaped and its pipes are
        closed. Idempotent: later or concurrent calls share the first call's
        sequence; cancelling a caller does not interrupt the sequence.
        """
        if self._stop_task is None:
            if self._exit_info is not None:
                return await self.wait()
            self._stop_task = asyncio.ensure_future(self._stop_sequence(grace, term_grace))
        return await asyncio.shield(self._stop_task)

    async def _stop_sequence(self, grace: float, term_grace: float) -> ExitInfo:
        await self.close_stdin()
        if await self._exits_within(grace):
            return await self.wait()
        self._log.info("child still running after stdin close; sending SIGTERM", grace_s=grace)
        self._signal(signal.SIGTERM)
        if await self._exits_within(term_grace):
            return await self.wait()
        self._log.warning("child ignored SIGTERM; sending SIGKILL", term_grace_s=term_grace)
        self._signal(signal.SIGKILL)
        return await self.wait()

    def kill(self) -> None:
        """SIGKILL the child's process group now; :meth:`wait` for the exit."""
        self._requested = True
        self._signal(signal.SIGKILL)

    async def wait(self) -> ExitInfo:
        """Wait until the child is reaped and its pipes are closed; how it ended.

        Pipes held open by a process that escaped the child's group are closed
        :data:`PIPE_SETTLE_S` after the exit.
        """
        info = await asyncio.shield(self._exit_future)
        await asyncio.shield(self._finished)
        return info

    async def _exits_within(self, seconds: float) -> bool:
        if self._exit_future.done() or seconds <= 0:
            return self._exit_future.done()
        try:
            await asyncio.wait_for(asyncio.shield(self._exit_future), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    def _signal(self, signum: int) -> None:
        if self._exit_info is not None or self._pid == 0:
            return
        if self._signal_sent != signal.SIGKILL:
            self._signal_sent = signum
        try:
            os.killpg(self._pid, signum)
        except ProcessLookupError:
            # The child left its own group (setpgid); signal it alone.
            # (Or it has exited and the exit callback is on its way.)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signum)

    async def _gone(self, detail: str) -> ChildExited:
        if not self._exit_future.done():
            await self._exits_within(EXIT_SETTLE_S)
        return ChildExited(self.shard_id, self._pid, detail, self._exit_info, self._violation)

    # -- callbacks from _ChildProtocol -------------------------------------

    def _on_started(self, transport: asyncio.SubprocessTransport) -> None:
        if self._transport is None:
            self._transport = transport
            self._pid = transport.get_pid()
            self._log = self._log.bind(pid=self._pid)
            self._stderr_log = getattr(self._log, self._stderr_level)

    def _on_data(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self._on_stdout(data)
        elif fd == 2:
            for item in self._stderr.feed(data):
                self._log_stderr(item)

    def _on_stdout(self, data: bytes) -> None:
        if self._violation is not None:
            return
        items = self._stdout.feed(data)
        if not items:
            return
        self._lines.extend(items)
        self._queued_bytes += sum(_size(item) for item in items)
        if len(self._lines) > self._max_queued_lines:
            self._violate(f"more than {self._max_queued_lines} unread stdout lines")
        elif self._queued_bytes > self._max_queued_bytes:
            self._violate(f"more than {self._max_queued_bytes} bytes of unread stdout")
        self._wake_reader()

    def _violate(self, reason: str) -> None:
        self._violation = reason
        self._lines.clear()
        self._queued_bytes = 0
        self._log.warning("child broke the protocol; killing it", violation=reason)
        self.kill()

    def _log_stderr(self, item: StdoutLine) -> None:
        if isinstance(item, OversizedLine):
            text = item.head.decode("utf-8", errors="replace")
            self._stderr_log("child stderr", line=text, truncated_from=item.length)
        else:
            self._stderr_log("child stderr", line=item.decode("utf-8", errors="replace").rstrip())

    def _wake_reader(self) -> None:
        _wake(self._line_waiter)

    def _wake_writer(self) -> None:
        _wake(self._drain_waiter)

    def _on_pause_writing(self) -> None:
        self._write_paused = True

    def _on_resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    def _on_pipe_closed(self, fd: int) -> None:
        if fd == 0:
            self._stdin_lost = True
            self._wake_writer()
        elif fd == 1:
            if self._violation is None:
                for item in self._stdout.finish():
                    self._lines.append(item)
                    self._queued_bytes += _size(item)
            self._stdout_eof = True
            self._wake_reader()
        elif fd == 2:
            for item in self._stderr.finish():
                self._log_stderr(item)
            self._stderr_eof = True
        self._close_when_done()

    def _on_exit(self) -> None:
        assert self._transport is not None
        returncode = self._transport.get_returncode()
        assert returncode is not None
        self._exited_at = time.monotonic()
        oom_kills = None
        if returncode == -signal.SIGKILL and self._signal_sent != signal.SIGKILL:
            now = read_oom_kill_count()
            if now is not None and self._oom_kills_at_start is not None:
                oom_kills = now - self._oom_kills_at_start
        info = classify_exit(
            returncode,
            requested=self._requested,
            signal_sent=self._signal_sent,
            uptime_s=self.uptime,
            oom_kills=oom_kills,
        )
        self._exit_info = info
        self._exit_future.set_result(info)
        fields = info.log_fields()
        if self._violation is not None:
            fields["violation"] = self._violation
        level = "info" if info.requested or info.clean else "warning"
        getattr(self._log, level)("child exited", **fields)
        self._kill_leftovers()
        self._wake_reader()
        self._wake_writer()
        if not self._close_when_done():
            self._force_close = self._loop.call_later(PIPE_SETTLE_S, self._close)

    def _kill_leftovers(self) -> None:
        # The leader is reaped, but its group (pgid == its pid) lives on while
        # any member does, so the id cannot have been reused by another group.
        try:
            os.killpg(self._pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except PermissionError as exc:
            self._log.warning("cannot kill what the child left in its group", error=str(exc))
            return
        self._log.warning("child left processes in its process group; killed them")

    def _close_when_done(self) -> bool:
        if self._exit_info is not None and self._stdout_eof and self._stderr_eof:
            self._close()
            return True
        return False

    def _close(self) -> None:
        # Closing the transport closes every pipe still open; their
        # pipe_connection_lost callbacks then mark stdout and stderr at EOF.
        if self._force_close is not None:
            self._force_close.cancel()
            self._force_close = None
        if not self._closed and self._transport is not None:
            self._closed = True
            stdin = self._transport.get_pipe_transport(0)
            # Unsent input is moot now, and close() would wait to flush it (for
            # ever if an escaped process holds the pipe and does not read).
            # A pipe with buffered data is still connected, so abort is safe.
            if isinstance(stdin, asyncio.WriteTransport) and stdin.get_write_buffer_size():
                stdin.abort()
            self._transport.close()

    def _on_finished(self) -> None:
        # The transport's last callback: every pipe's descriptor is closed.
        if not self._finished.done():
            self._finished.set_result(None)
