"""How many lines of one kind a source may log per window, and how many it did not.

Pure logic. A child that writes garbage on stdout in a loop would otherwise
turn each of its lines into one warning in the daemon's log: the log grows
as fast as the child can write, and the lines that matter scroll away. The
budget lets the first ``per_window`` lines of a window through; the first
line let through after some were held back reports how many (so nothing is
skipped silently, it is only counted).

No clock is held: the caller passes ``now`` (``time.monotonic()``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LogBudget:
    """``per_window`` lines every ``window_s`` seconds; ``take`` says whether to log one."""

    per_window: int = 20
    window_s: float = 60.0
    _window_start: float | None = None
    _used: int = 0
    _held_back: int = 0

    def __post_init__(self) -> None:
        if self.per_window < 1 or self.window_s <= 0:
            raise ValueError(
                f"need per_window >= 1 and window_s > 0, got {self.per_window}, {self.window_s}"
            )

    def take(self, now: float) -> tuple[bool, int]:
        """(log this line?, lines held back since the last one logged; 0 unless logging)."""
        if self._window_start is None or now - self._window_start >= self.window_s:
            self._window_start = now
            self._used = 0
        if self._used >= self.per_window:
            self._held_back += 1
            return False, 0
        self._used += 1
        held_back, self._held_back = self._held_back, 0
        return True, held_back

    @property
    def held_back(self) -> int:
        """Lines not logged since the last one that was."""
        return self._held_back
