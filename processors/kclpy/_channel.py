"""The child's end of the protocol pipes: reading daemon lines, writing ours.

Also owns the stdout guard. The protocol runs over the child's stdout, which
processor code (and any C library it loads) also writes to by habit. When the
guard is on, the real stdout is moved to a private descriptor used only for
protocol lines, and fd 1 and ``sys.stdout`` are pointed at stderr, so stray
output lands in the daemon's log instead of corrupting the conversation.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from processors.kclpy.dispatch import MalformedAction

_STDOUT_FD = 1
_STDERR_FD = 2


class StdoutGuard:
    """Moves the real stdout aside for the protocol; undone by ``restore``."""

    def __init__(self) -> None:
        _flush(sys.stdout)
        self.protocol_fd = os.dup(_STDOUT_FD)  # non-inheritable: children never get it
        self._saved_stdout = sys.stdout
        try:
            os.dup2(_STDERR_FD, _STDOUT_FD)
        except OSError:
            # No usable stderr (closed by the parent): discard stray output
            # rather than let it reach the protocol stream.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, _STDOUT_FD)
            os.close(devnull)
        sys.stdout = sys.stderr

    def restore(self) -> None:
        _flush(sys.stdout)
        os.dup2(self.protocol_fd, _STDOUT_FD)
        os.close(self.protocol_fd)
        sys.stdout = self._saved_stdout


def _flush(stream: IO[Any] | None) -> None:
    if stream is not None:
        # A closed or broken stream has nothing left that could be flushed.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def is_real_stdout(output_file: object) -> bool:
    """True when ``output_file`` writes to fd 1 (so the guard applies)."""
    fileno = getattr(output_file, "fileno", None)
    if fileno is None:
        return False
    try:
        return bool(fileno() == _STDOUT_FD)
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside the block.

    Decoding a batch creates tens of thousands of dicts and wrappers at once,
    which would trigger a dozen collections that scan them all (and the whole
    heap, for the oldest generation) although none can be part of a cycle.
    Pausing the collector there makes decoding about a quarter faster.
    """
    if not gc.isenabled():
        yield  # the program disabled it itself; leave that alone
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def fd_writer(fd: int) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


def file_writer(output_file: IO[Any]) -> Callable[[bytes], None]:
    """A writer for a file object given by the caller (tests, embedding)."""
    binary = isinstance(output_file, (io.BufferedIOBase, io.RawIOBase))

    def write(data: bytes) -> None:
        output_file.write(data if binary else data.decode("utf-8"))
        output_file.flush()

    return write


class ProtocolChannel:
    """Line I/O with the daemon.

    ``read_line`` returns one line (bytes or str), empty at end of input;
    ``write`` receives one encoded message without its newline.
    """

    def __init__(
        self, read_line: Callable[[], bytes | str], write: Callable[[bytes], None]
    ) -> None:
        self._read_line = read_line
        self._write = write
        #: The daemon is gone: end of input, or our output pipe is broken.
        self.closed = False

    def read(self) -> dict[str, Any] | None:
        """The next message as a dict, or None at end of input.

        Blank lines are skipped; anything else that is not a JSON object with
        an ``action`` raises MalformedAction (the daemon never sends it).
        """
        while True:
            line = self._read_line()
            if not line:
                self.closed = True
                return None
            try:
                with paused_gc():
                    body = orjson.loads(line)
            except orjson.JSONDecodeError as error:
                # Checked only on failure, so the hot path never copies a
                # megabyte-long line just to strip it.
                if not line.strip():
                    continue
                raise MalformedAction(
                    f"daemon line is not JSON ({error}): {line[:200]!r}"
                ) from None
            if not isinstance(body, dict) or "action" not in body:
                raise MalformedAction(f"daemon line is not an action: {line[:200]!r}")
            return body

    def write(self, payload: bytes) -> None:
        if self.closed:
            return
        try:
            self._write(payload + b"\n")
        except BrokenPipeError:
            # The daemon closed our stdout: nobody is listening any more.
            self.closed = True
