"""The shard consumer's states and the only edges allowed between them.

::

    WAITING_ON_PARENTS --> INITIALIZING --> PROCESSING --> SHARD_ENDING --+
            |                  |  ^             |  |                       |
            |                  |  +--RESTARTING-+  |                       v
            |                  |        |          +--> SHUTTING_DOWN --> DONE
            +------------------+--------+--> LEASE_LOST ----------------> DONE

* RESTARTING: the child died, hung or broke the protocol; a new one starts
  from the last checkpoint after a back-off.
* SHUTTING_DOWN: a graceful stop or hand-off: the child gets
  shutdownRequested and may checkpoint before its lease is released.
* LEASE_LOST: another worker owns the shard now; the child gets leaseLost
  and every checkpoint it asks for is refused.

Like KCL's ConsumerStates, written down once; every change goes through
:func:`check_transition`, so an impossible edge is a bug that is caught.
"""

from __future__ import annotations

import enum


class ConsumerState(enum.Enum):
    WAITING_ON_PARENTS = "waiting_on_parents"
    INITIALIZING = "initializing"
    PROCESSING = "processing"
    RESTARTING = "restarting"
    SHARD_ENDING = "shard_ending"
    SHUTTING_DOWN = "shutting_down"
    LEASE_LOST = "lease_lost"
    DONE = "done"


_S = ConsumerState
ALLOWED: dict[ConsumerState, frozenset[ConsumerState]] = {
    _S.WAITING_ON_PARENTS: frozenset({_S.INITIALIZING, _S.LEASE_LOST, _S.SHUTTING_DOWN, _S.DONE}),
    _S.INITIALIZING: frozenset(
        {_S.PROCESSING, _S.RESTARTING, _S.LEASE_LOST, _S.SHUTTING_DOWN, _S.DONE}
    ),
    _S.PROCESSING: frozenset(
        {_S.RESTARTING, _S.SHARD_ENDING, _S.SHUTTING_DOWN, _S.LEASE_LOST, _S.DONE}
    ),
    _S.RESTARTING: frozenset({_S.INITIALIZING, _S.LEASE_LOST, _S.SHUTTING_DOWN, _S.DONE}),
    _S.SHARD_ENDING: frozenset({_S.DONE, _S.RESTARTING, _S.LEASE_LOST, _S.SHUTTING_DOWN}),
    _S.SHUTTING_DOWN: frozenset({_S.DONE, _S.LEASE_LOST}),
    _S.LEASE_LOST: frozenset({_S.DONE}),
    _S.DONE: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the table does not allow: a bug in the consumer."""


def check_transition(old: ConsumerState, new: ConsumerState) -> None:
    if new not in ALLOWED[old]:
        raise IllegalTransition(f"{old.value} -> {new.value} is not an allowed transition")


class ShutdownReason(enum.IntEnum):
    """Why a consumer stops, ranked as KCL ranks them: a higher one wins."""

    REQUESTED = 1
    SHARD_END = 2
    LEASE_LOST = 3
