"""Polling with a deadline, the tests' replacement for sleeps.

    wait_until(lambda: server.is_running(), timeout=5, message="server never came up")

The predicate is called every `interval` seconds until it returns something truthy, which
wait_until returns; on timeout it raises AssertionError with the message (and the last error
swallowed through `ignore`, if any).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Polls `predicate` until it returns a truthy value and returns that value.

    `message` may be a callable, evaluated only on timeout (to show the state at that moment).
    Exceptions of the types in `ignore` count as "not yet"; any other exception propagates.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
        except ignore as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s: {text}{detail}")
        time.sleep(interval)
