"""Golden transcripts: reading them, and playing the daemon's side over pipes.

A transcript is a whole conversation between the daemon and one child, one
JSON object per line (the format is described in tests/golden/README.md)::

    {"dir": "in", "line": "{\\"action\\":\\"initialize\\",...}"}
    {"dir": "out", "line": "{\\"action\\": \\"status\\", \\"responseFor\\": \\"initialize\\"}"}

``in`` lines go from the daemon to the child (the child's stdin), ``out``
lines from the child to the daemon. ``ChildConversation`` starts a processor
process and plays the ``in`` side while collecting what the child answers,
so a processor (ours, or one built on the official amazon_kclpy) can be
checked against a transcript through real pipes.
"""

from __future__ import annotations

import io
import queue
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from protocol.messages import ACTIONS_NEEDING_STATUS

IN = "in"
OUT = "out"


@dataclass(frozen=True)
class Turn:
    """One line of a conversation: who wrote it, and its exact text."""

    direction: str
    line: str
    note: str | None = None

    @property
    def message(self) -> dict[str, Any]:
        body = orjson.loads(self.line)
        if not isinstance(body, dict):
            raise ValueError(f"transcript line is not a JSON object: {self.line[:100]}")
        return body


class TranscriptError(ValueError):
    """A transcript file that does not follow the format."""


def load_transcript(path: str | Path) -> list[Turn]:
    turns: list[Turn] = []
    for number, text in enumerate(Path(path).read_text("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            entry = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise TranscriptError(f"{path}:{number}: not JSON: {error}") from None
        if not isinstance(entry, dict):
            raise TranscriptError(f"{path}:{number}: expected an object")
        direction, line = entry.get("dir"), entry.get("line")
        if direction not in (IN, OUT) or not isinstance(line, str):
            raise TranscriptError(f'{path}:{number}: needs "dir" ("in" or "out") and "line"')
        turns.append(Turn(direction, line, entry.get("note")))
    return turns


def script_from_transcript(turns: Sequence[Turn]) -> list[list[dict[str, Any]]]:
    """The checkpoint calls a processor must make to produce the transcript.

    One step per action that needs a status (in order), each the list of
    checkpoint requests the child sends while handling that action.
    """
    steps: list[list[dict[str, Any]]] = []
    for turn in turns:
        message = turn.message
        action = message.get("action")
        if turn.direction == IN and action in ACTIONS_NEEDING_STATUS:
            steps.append([])
        elif turn.direction == OUT and action == "checkpoint":
            if not steps:
                raise TranscriptError("a checkpoint request before any action")
            steps[-1].append(
                {
                    "method": "prepare_checkpoint" if message.get("prepare") else "checkpoint",
                    "sequence_number": message.get("sequenceNumber"),
                    "sub_sequence_number": message.get("subSequenceNumber"),
                }
            )
    return steps


def accepts_record_columns(turns: Sequence[Turn]) -> bool:
    """Whether the child in the transcript asks for ``recordColumns`` (protocol.records)."""
    return any(
        turn.direction == OUT
        and turn.message.get("action") == "status"
        and turn.message.get("responseFor") == "initialize"
        and turn.message.get("recordColumns") is True
        for turn in turns
    )


def run_in_process(
    record_processor: Any,
    in_lines: Sequence[str | bytes],
    error_file: IO[str] | None = None,
    record_columns: bool = True,
) -> list[str]:
    """Feed daemon lines to a processor on our SDK, without pipes or processes.

    All lines are queued up front (the SDK reads them in order, checkpoint
    replies included); returns the non-blank lines the SDK wrote.
    """
    from processors.kclpy import kcl  # here: the module is also usable without the SDK

    data = b"".join(
        (line.encode("utf-8") if isinstance(line, str) else line).rstrip(b"\n") + b"\n"
        for line in in_lines
    )
    output = io.BytesIO()
    process = kcl.KCLProcess(
        record_processor, input_file=io.BytesIO(data), output_file=output, error_file=error_file
    )
    process.record_columns = record_columns
    process.run()
    return [line.decode("utf-8") for line in output.getvalue().splitlines() if line.strip()]


_EOF = object()


class ChildConversation:
    """Runs a processor process and talks to it as the daemon does.

    stdout and stderr are drained by threads for the child's whole life (a
    full pipe must never block it); ``receive`` returns the next non-blank
    stdout line, waiting at most ``timeout`` seconds.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.timeout = timeout
        self.process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        self._lines: queue.Queue[object] = queue.Queue()
        self._stderr: list[bytes] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._threads = [
            threading.Thread(target=self._drain_stdout, args=(self.process.stdout,), daemon=True),
            threading.Thread(target=self._drain_stderr, args=(self.process.stderr,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _drain_stdout(self, stream: IO[bytes]) -> None:
        for raw in stream:
            if raw.strip():
                self._lines.put(raw.rstrip(b"\r\n").decode("utf-8"))
        self._lines.put(_EOF)

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._stderr.append(raw)

    @property
    def stderr_text(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def send(self, line: str | bytes) -> None:
        data = line.encode("utf-8") if isinstance(line, str) else line
        assert self.process.stdin is not None
        self.process.stdin.write(data.rstrip(b"\n") + b"\n")
        self.process.stdin.flush()

    def receive(self, timeout: float | None = None) -> str:
        """The child's next non-blank stdout line.

        Raises TimeoutError if none comes in time, EOFError if the child
        closed its stdout.
        """
        try:
            item = self._lines.get(timeout=self.timeout if timeout is None else timeout)
        except queue.Empty:
            raise TimeoutError(
                f"no line from the child within {self.timeout}s; its stderr:\n{self.stderr_text}"
            ) from None
        if item is _EOF:
            self._lines.put(_EOF)
            raise EOFError(f"the child closed its stdout; its stderr:\n{self.stderr_text}")
        assert isinstance(item, str)
        return item

    def play(self, turns: Sequence[Turn]) -> list[str]:
        """Send every ``in`` line, collecting one child line per ``out`` line."""
        received = []
        for turn in turns:
            if turn.direction == IN:
                self.send(turn.line)
            else:
                received.append(self.receive())
        return received

    def close_input(self) -> None:
        assert self.process.stdin is not None
        if not self.process.stdin.closed:
            self.process.stdin.close()

    def finish(self, timeout: float | None = None) -> int:
        """Close the child's stdin and wait for it to exit; its exit code."""
        self.close_input()
        code = self.process.wait(timeout=self.timeout if timeout is None else timeout)
        for thread in self._threads:
            thread.join(timeout=self.timeout)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ChildConversation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        # The drain threads see end of file once the child is gone; close the
        # pipes only after them, so no thread reads from a closed file.
        for thread in self._threads:
            thread.join(timeout=self.timeout)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                stream.close()
