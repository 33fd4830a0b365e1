"""The future ``add_user_record`` returns: a ``concurrent.futures.Future``, built cheaper.

Owns :func:`new_future`. A stock ``Future`` wraps a ``threading.Condition`` around an ``RLock``:
with the condition's dict and bound methods that is about a dozen objects per user record, and
a producer holding tens of thousands of records makes the cyclic garbage collector walk all of
them again and again (measured here: a third of the CPU of the whole producer). The future made
here is a real ``Future`` subclass (``isinstance``, ``result``, ``add_done_callback``,
``concurrent.futures.wait`` and ``as_completed`` all work) whose ``_condition`` is a small
condition variable with slots over a C ``RLock``: five objects instead of twelve. (The lock must
be reentrant: ``Future`` formats itself, which takes the lock again, while raising
``InvalidStateError`` under it.)

It starts in the RUNNING state, so ``cancel()`` returns False: the producer resolves every
future it hands out. If the running Python's ``Future`` does not look as expected (it keeps its
state in other attributes), :func:`new_future` falls back to a stock one.
"""

from __future__ import annotations

import concurrent.futures._base as _futures_base
from _thread import RLock, allocate_lock
from concurrent.futures import Future
from typing import Any

__all__ = ["RecordFuture", "new_future"]

_RUNNING = _futures_base.RUNNING
_EXPECTED = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}


class SlimCondition:
    """``threading.Condition`` over a C ``RLock``, as much of it as ``Future`` and
    ``concurrent.futures.wait`` use. Each waiter sleeps on a lock of its own, as in
    ``threading.Condition``; the list of sleepers exists only while someone waits."""

    __slots__ = ("_lock", "_sleepers")

    def __init__(self) -> None:
        self._lock: Any = RLock()
        self._sleepers: list[Any] | None = None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Releases the lock (which the caller holds) until notified or ``timeout`` passes."""
        sleeper = allocate_lock()
        sleeper.acquire()
        if self._sleepers is None:
            self._sleepers = []
        self._sleepers.append(sleeper)
        # Releases every level of the reentrant lock, as threading.Condition does.
        saved = self._lock._release_save()
        woken = False
        try:
            if timeout is None:
                woken = sleeper.acquire()
            elif timeout > 0:
                woken = sleeper.acquire(True, timeout)
            else:
                woken = sleeper.acquire(False)
        finally:
            self._lock._acquire_restore(saved)
            if not woken and self._sleepers is not None and sleeper in self._sleepers:
                self._sleepers.remove(sleeper)
        return woken

    def notify(self, n: int = 1) -> None:
        sleepers = self._sleepers
        if not sleepers:
            return
        for sleeper in sleepers[:n]:
            sleeper.release()
        del sleepers[:n]

    def notify_all(self) -> None:
        sleepers, self._sleepers = self._sleepers, None
        for sleeper in sleepers or ():
            sleeper.release()


class RecordFuture(Future):  # type: ignore[type-arg]
    """A running ``Future`` with a :class:`SlimCondition`; see the module docstring."""

    def __init__(self) -> None:
        # Future.__init__ is skipped on purpose: it builds the heavy condition. These are the
        # attributes it sets (checked against the running Python at import).
        self._condition = SlimCondition()  # type: ignore[assignment]
        self._state = _RUNNING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []


def _stock() -> Future[Any]:
    future: Future[Any] = Future()
    future.set_running_or_notify_cancel()
    return future


def _layout_matches() -> bool:
    probe: Future[Any] = Future()
    return set(vars(probe)) == _EXPECTED and hasattr(_futures_base, "RUNNING")


new_future: Any = RecordFuture if _layout_matches() else _stock
"""A running future for one user record (a :class:`RecordFuture` where possible)."""
