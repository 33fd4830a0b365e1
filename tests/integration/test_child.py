"""ChildProcess against real child processes (small scripts in fixtures/)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import daemon.child as child_module
from daemon.child import (
    ChildExited,
    ChildProcess,
    ChildStartError,
    ChildTimeout,
    OversizedLine,
)
from daemon.errors import InvalidStateError, KclDaemonError

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures"
MIB = 1024 * 1024


def fixture(name: str, *args: str) -> list[str]:
    return [sys.executable, str(FIXTURES / name), *args]


def run(test: Callable[[], Awaitable[None]], timeout: float = 60.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(test(), timeout)

    asyncio.run(bounded())


async def poll(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class RecordingLogger:
    """A structlog-like logger that keeps every event with its bound context."""

    def __init__(self, entries: list[dict[str, Any]] | None = None, **context: Any) -> None:
        self.entries = entries if entries is not None else []
        self.context = context

    def bind(self, **more: Any) -> RecordingLogger:
        return RecordingLogger(self.entries, **{**self.context, **more})

    def _record(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.entries.append({"level": level, "event": event, **self.context, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._record("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._record("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._record("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._record("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._record("critical", event, fields)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.entries if entry["event"] == name]


def is_dead(pid: int) -> bool:
    """Gone, or a zombie: an orphan is reaped by init, whenever init gets to it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def start(*argv: str, **kwargs: Any) -> ChildProcess:
    kwargs.setdefault("logger", RecordingLogger())
    return await ChildProcess.start(list(argv), shard_id="shardId-000000000001", **kwargs)


async def read_bytes(child: ChildProcess) -> bytes:
    line = await child.read_line(timeout=10)
    assert isinstance(line, bytes)
    return line


async def read_until_exit(child: ChildProcess) -> tuple[list[Any], ChildExited]:
    lines: list[Any] = []
    while True:
        try:
            lines.append(await child.read_line(timeout=30))
        except ChildExited as exited:
            return lines, exited


def test_echoes_lines_in_order_and_skips_blank_lines() -> None:
    async def body() -> None:
        child = await start(*fixture("echo.py"))
        await child.send(b'{"action":"initialize"}')
        await child.send(b"second\n")
        assert await child.read_line(timeout=10) == b'{"action":"initialize"}'
        assert await child.read_line(timeout=10) == b"second"
        info = await child.stop(grace=10)
        assert info.exit_code == 0

    run(body)


def test_child_runs_in_its_own_session_and_process_group() -> None:
    async def body() -> None:
        child = await start(*fixture("echo.py"))
        assert os.getsid(child.pid) == child.pid
        assert os.getpgid(child.pid) == child.pid
        await child.stop(grace=10)

    run(body)


def test_closing_stdin_lets_child_exit_cleanly_and_counts_as_requested() -> None:
    async def body() -> None:
        child = await start(*fixture("echo.py"))
        info = await child.stop(grace=10)
        assert (info.exit_code, info.signal, info.requested, info.signal_sent) == (
            0,
            None,
            True,
            None,
        )
        assert info.description == "exited with code 0 after the daemon closed its stdin"
        assert child.returncode == 0 and not child.running
        with pytest.raises(ChildExited) as exited:
            await child.read_line(timeout=10)
        assert exited.value.exit_info == info

    run(body)


def test_read_line_timeout_raises_child_timeout_and_leaves_child_running() -> None:
    async def body() -> None:
        child = await start(*fixture("echo.py"))
        with pytest.raises(ChildTimeout) as timed_out:
            await child.read_line(timeout=0.05)
        assert isinstance(timed_out.value, asyncio.TimeoutError)
        assert isinstance(timed_out.value, KclDaemonError)
        assert child.running
        await child.send(b"still there")
        assert await child.read_line(timeout=10) == b"still there"
        await child.stop(grace=10)

    run(body)


def test_exit_code_of_a_crashing_child_is_reported_on_read() -> None:
    async def body() -> None:
        child = await start(*fixture("echo.py"))
        await child.send(b"exit 3")
        with pytest.raises(ChildExited) as exited:
            await child.read_line(timeout=10)
        info = exited.value.exit_info
        assert info is not None
        assert (info.exit_code, info.requested) == (3, False)
        assert info.description == "exited with code 3"
        assert await child.stop(grace=10) is info

    run(body)


def test_chatty_child_is_drained_while_nobody_reads() -> None:
    async def body() -> None:
        logger = RecordingLogger()
        child = await start(*fixture("flood.py", "50"), logger=logger, max_queued_bytes=128 * MIB)
        # Not reading: if stdout or stderr were not drained, the child would
        # block on a full pipe and never exit.
        info = await child.wait()
        assert info.exit_code == 0
        lines, _ = await read_until_exit(child)
        assert len(lines) == 50 * 16 + 1
        assert lines[-1] == b"done"
        assert all(len(line) == 64 * 1024 - 1 for line in lines[:-1])
        await poll(lambda: len(logger.events("child stderr")) == 50 * 16)

    run(body)


def test_line_over_the_limit_becomes_oversized_line_and_later_lines_arrive() -> None:
    async def body() -> None:
        child = await start(*fixture("oversized.py", str(20 * MIB)))
        assert await child.read_line(timeout=30) == b"before"
        oversized = await child.read_line(timeout=30)
        assert oversized == OversizedLine(length=20 * MIB, head=b"x" * 1024)
        assert await child.read_line(timeout=30) == b"after"
        await child.stop(grace=10)

    run(body)


def test_line_just_under_the_limit_is_delivered_whole() -> None:
    async def body() -> None:
        child = await start(*fixture("oversized.py", str(300_000)), max_line_bytes=300_000)
        lines, _ = await read_until_exit(child)
        assert lines == [b"before", b"x" * 300_000, b"after"]
        await child.stop(grace=10)

    run(body)


def test_child_ignoring_stdin_close_and_sigterm_is_sigkilled() -> None:
    async def body() -> None:
        child = await start(*fixture("stubborn.py"))
        assert await child.read_line(timeout=10) == b"ready"
        info = await child.stop(grace=0.2, term_grace=0.2)
        assert (info.signal, info.signal_sent, info.requested) == (
            signal.SIGKILL,
            signal.SIGKILL,
            True,
        )
        assert info.description == "killed by SIGKILL (sent by the daemon)"
        assert not info.oom_suspected

    run(body)


def test_child_honouring_sigterm_is_terminated_by_it() -> None:
    async def body() -> None:
        child = await start(*fixture("stubborn.py", "--honour-term"))
        assert await child.read_line(timeout=10) == b"ready"
        info = await child.stop(grace=0.1, term_grace=30)
        assert (info.signal, info.signal_sent) == (signal.SIGTERM, signal.SIGTERM)
        assert info.description == "terminated by SIGTERM (sent by the daemon)"

    run(body)


def test_kill_9_from_outside_raises_child_exited_classified_as_possible_oom() -> None:
    async def body() -> None:
        child = await start(*fixture("echo.py"))
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(ChildExited) as exited:
            await child.read_line(timeout=10)
        info = exited.value.exit_info
        assert info is not None
        assert (info.signal, info.signal_sent, info.requested) == (signal.SIGKILL, None, False)
        assert info.oom_suspected
        assert "possibly out of memory" in info.description or "probably" in info.description
        assert "SIGKILL" in str(exited.value)
        assert await child.stop(grace=10) is info

    run(body)


def test_stop_is_idempotent_and_shared_by_concurrent_callers() -> None:
    async def body() -> None:
        child = await start(*fixture("echo.py"))
        first, second = await asyncio.gather(child.stop(grace=10), child.stop(grace=10))
        assert first is second
        assert await child.stop(grace=10) is first
        assert await child.wait() is first

    run(body)


def test_kill_sigkills_at_once() -> None:
    async def body() -> None:
        child = await start(*fixture("stubborn.py"))
        child.kill()
        info = await child.wait()
        assert (info.signal, info.signal_sent, info.requested) == (
            signal.SIGKILL,
            signal.SIGKILL,
            True,
        )

    run(body)


def test_send_after_the_child_exited_raises_child_exited() -> None:
    async def body() -> None:
        child = await start(*fixture("echo.py"))
        await child.send(b"exit 0")
        await child.wait()
        with pytest.raises(ChildExited):
            await child.send(b"anyone there?")
        await child.stop(grace=10)

    run(body)


def test_send_after_close_stdin_is_an_invalid_state() -> None:
    async def body() -> None:
        child = await start(*fixture("echo.py"))
        await child.close_stdin()
        with pytest.raises(InvalidStateError):
            await child.send(b"late")
        info = await child.wait()
        assert info.exit_code == 0 and info.requested

    run(body)


def test_send_to_a_child_that_does_not_read_times_out() -> None:
    async def body() -> None:
        child = await start(*fixture("stubborn.py"))
        # 8 MiB cannot fit in a pipe buffer plus asyncio's write buffer limit.
        with pytest.raises(ChildTimeout):
            await child.send(b"z" * (8 * MIB), timeout=0.2)
        assert child.running
        await child.stop(grace=0, term_grace=0)

    run(body)


def test_unread_stdout_flood_is_a_protocol_violation_that_kills_the_child() -> None:
    async def body() -> None:
        child = await start(*fixture("spew.py", "1000"), max_queued_lines=100)
        with pytest.raises(ChildExited) as exited:
            await poll(lambda: child.violation is not None)
            await child.read_line(timeout=10)
        assert exited.value.violation == "more than 100 unread stdout lines"
        info = exited.value.exit_info
        assert info is not None
        assert (info.signal, info.signal_sent, info.requested) == (
            signal.SIGKILL,
            signal.SIGKILL,
            True,
        )
        await child.stop(grace=10)

    run(body)


def test_grandchild_holding_stdout_is_killed_when_the_child_exits() -> None:
    async def body() -> None:
        child = await start(*fixture("spawner.py"))
        grandchild = int(await read_bytes(child))
        with pytest.raises(ChildExited) as exited:
            await child.read_line(timeout=30)
        assert exited.value.exit_info is not None
        assert exited.value.exit_info.exit_code == 0

        await poll(lambda: is_dead(grandchild))
        await child.stop(grace=10)

    run(body)


def test_pipes_held_by_an_escaped_process_are_closed_soon_after_the_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(child_module, "PIPE_SETTLE_S", 0.1)

    async def body() -> None:
        child = await start(*fixture("spawner.py", "--setsid"))
        escaped = int(await read_bytes(child))
        try:
            # The escaped process keeps stdout open; the read still ends.
            with pytest.raises(ChildExited):
                await child.read_line(timeout=30)
            info = await child.stop(grace=10)
            assert info.exit_code == 0
            assert not is_dead(escaped)  # out of our reach: only its pipes were closed
        finally:
            os.kill(escaped, signal.SIGKILL)

    run(body)


def test_stderr_lines_are_logged_with_shard_pid_and_configured_level() -> None:
    async def body() -> None:
        logger = RecordingLogger()
        child = await start(*fixture("echo.py"), logger=logger, stderr_level="warning")
        await child.send("stderr caf\u00e9 \xff".encode("latin-1"))
        await child.send(b"stderr " + b"e" * 20_000)
        await child.stop(grace=10)
        await poll(lambda: len(logger.events("child stderr")) == 2)
        short, long = logger.events("child stderr")
        assert short["level"] == "warning"
        assert short["shard_id"] == "shardId-000000000001"
        assert short["pid"] == child.pid
        assert short["line"] == "caf\ufffd \ufffd"
        assert long["line"] == "e" * 8192
        assert long["truncated_from"] == 20_000

    run(body)


def test_exit_is_logged_once_with_its_classification() -> None:
    async def body() -> None:
        logger = RecordingLogger()
        child = await start(*fixture("echo.py"), logger=logger)
        await child.send(b"exit 2")
        await child.wait()
        await child.stop(grace=10)
        (line,) = logger.events("child exited")
        assert line["level"] == "warning"
        assert line["exit"] == "exited with code 2"
        assert line["returncode"] == 2
        assert line["pid"] == child.pid
        assert line["shard_id"] == "shardId-000000000001"

    run(body)


def test_missing_command_raises_child_start_error_naming_it() -> None:
    async def body() -> None:
        with pytest.raises(ChildStartError, match="'no-such-processor-x' was not found"):
            await start("no-such-processor-x")

    run(body)


def test_non_executable_file_raises_child_start_error(tmp_path: Path) -> None:
    script = tmp_path / "processor.py"
    script.write_text("print('hi')\n")
    script.chmod(0o644)

    async def body() -> None:
        with pytest.raises(ChildStartError, match="is not executable"):
            await start(str(script))

    run(body)


def test_missing_working_directory_raises_child_start_error(tmp_path: Path) -> None:
    async def body() -> None:
        with pytest.raises(ChildStartError, match="working directory"):
            await start(*fixture("echo.py"), cwd=str(tmp_path / "gone"))

    run(body)


def test_twenty_children_leave_no_file_descriptors_behind() -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def body() -> None:
        # Warm up whatever the loop creates once (child watcher, self-pipe).
        await (await start(*fixture("echo.py"))).stop(grace=10)
        before = open_fds()
        children = [await start(*fixture("echo.py")) for _ in range(20)]
        assert open_fds() > before
        for child in children:
            await child.send(b"ping")
        assert [await child.read_line(timeout=10) for child in children] == [b"ping"] * 20
        infos = await asyncio.gather(*(child.stop(grace=10) for child in children))
        assert all(info.exit_code == 0 for info in infos)
        await poll(lambda: open_fds() == before)

    run(body)
