"""The exception a checkpoint raises when the daemon answers with an error name."""

from __future__ import annotations


class CheckpointError(Exception):
    """A checkpoint failed; ``value`` is the daemon's error name.

    The names come from the Java KCL's checkpoint exceptions:
    ``IllegalArgumentException``, ``ShutdownException``,
    ``ThrottlingException``, ``KinesisClientLibDependencyException``,
    ``InvalidStateException``. Processors compare ``value`` against them
    (``if error.value == "ThrottlingException": retry``), so it carries the
    bare name, exactly as received.
    """

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return repr(self.value)
