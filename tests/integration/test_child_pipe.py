"""A child's stdin pipe is grown so that a megabyte processRecords line takes few writes."""

from __future__ import annotations

import asyncio
import fcntl
import sys
from pathlib import Path

import pytest

from daemon.child import STDIN_PIPE_BYTES, ChildProcess

pytestmark = pytest.mark.integration

ECHO = Path(__file__).parent / "fixtures" / "echo.py"
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", None)


@pytest.mark.skipif(F_GETPIPE_SZ is None, reason="pipe sizes are a Linux feature")
def test_child_stdin_pipe_holds_a_mebibyte_and_a_large_line_still_arrives_whole() -> None:
    async def scenario() -> None:
        child = await ChildProcess.start([sys.executable, str(ECHO)], shard_id="shard-1")
        try:
            pipe = child._stdin_pipe()
            assert pipe is not None
            assert F_GETPIPE_SZ is not None
            size = fcntl.fcntl(pipe.get_extra_info("pipe").fileno(), F_GETPIPE_SZ)
            assert size >= STDIN_PIPE_BYTES
            line = b"x" * (3 * STDIN_PIPE_BYTES)
            await child.send(line, timeout=30)
            assert await child.read_line(timeout=30) == line
        finally:
            await child.stop(grace=5)

    asyncio.run(asyncio.wait_for(scenario(), 60))
