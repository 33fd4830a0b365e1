"""The daemon's error taxonomy.

Every failure that crosses a module boundary is one of these, so that callers
decide by type (and by ``retriable``) instead of by message text or booleans.
The names a child sees in a checkpoint reply come from ``checkpoint_error_name``.
"""

from __future__ import annotations


class KclDaemonError(Exception):
    """Base of every error the daemon raises on purpose."""

    retriable: bool = False


class ConfigError(KclDaemonError):
    """Bad configuration; the message is one line naming the problem and the fix."""


class LeaseLostError(KclDaemonError):
    """This worker no longer holds the lease (a conditional write failed)."""


class DependencyError(KclDaemonError):
    """A backend (Kinesis, DynamoDB, CloudWatch) could not be reached or failed."""

    retriable = True


class ThrottledError(DependencyError):
    """A backend throttled the call; retry after a back-off."""


class InvalidStateError(KclDaemonError):
    """The operation is not allowed in the current state (no checkpointer now)."""


class CheckpointRangeError(KclDaemonError):
    """A checkpoint outside the allowed range, non-numeric or negative."""


class ProtocolViolation(KclDaemonError):
    """A child broke the multilang protocol (wrong responseFor, closed stdout...)."""


class ShardEndedError(KclDaemonError):
    """The shard has no more records (its iterator ran out)."""


class StreamNotFoundError(KclDaemonError):
    """The configured stream does not exist."""


def checkpoint_error_name(error: BaseException) -> str:
    """The Java exception name the multilang protocol uses for ``error``."""
    if isinstance(error, CheckpointRangeError):
        return "IllegalArgumentException"
    if isinstance(error, LeaseLostError):
        return "ShutdownException"
    if isinstance(error, ThrottledError):
        return "ThrottlingException"
    if isinstance(error, InvalidStateError):
        return "InvalidStateException"
    return "KinesisClientLibDependencyException"
