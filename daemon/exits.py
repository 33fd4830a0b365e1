"""How a child processor ended (or why it never started), in one human sentence.

Owns the classification of a child's exit: its exit code or killing signal,
whether the daemon asked for the stop (closed stdin, sent SIGTERM or SIGKILL),
and an out-of-memory hint. The reap path in ``daemon.child`` builds one
:class:`ExitInfo` per child and logs it as one line; the consumer decides
what to do next from the same value.

The OOM hint: the kernel's OOM killer uses SIGKILL, so a SIGKILL the daemon
did not send is "possibly out of memory"; if the kernel's ``oom_kill``
counter in /proc/vmstat grew during the child's life, it is "probably".
A start failure gets the same treatment: the OS error turned into the
problem and its fix (:func:`describe_start_failure`).
"""

from __future__ import annotations

import errno
import os
import signal as _signal
from dataclasses import dataclass
from typing import Any

_VMSTAT = "/proc/vmstat"


@dataclass(frozen=True)
class ExitInfo:
    """One child's end. ``returncode`` follows asyncio: negative means killed by -returncode."""

    returncode: int
    exit_code: int | None
    signal: int | None
    requested: bool
    """True when the daemon asked the child to stop (stdin close, SIGTERM, SIGKILL)."""
    signal_sent: int | None
    """The strongest signal the daemon sent (SIGTERM or SIGKILL), None if none."""
    oom_suspected: bool
    uptime_s: float | None
    description: str

    @property
    def signal_name(self) -> str | None:
        return None if self.signal is None else signal_name(self.signal)

    @property
    def clean(self) -> bool:
        """Exited by itself with code 0."""
        return self.exit_code == 0

    def log_fields(self) -> dict[str, Any]:
        """The fields of the one reap log line."""
        fields: dict[str, Any] = {
            "returncode": self.returncode,
            "exit": self.description,
            "requested": self.requested,
        }
        if self.signal is not None:
            fields["signal"] = self.signal_name
        if self.signal_sent is not None:
            fields["signal_sent"] = signal_name(self.signal_sent)
        if self.oom_suspected:
            fields["oom_suspected"] = True
        if self.uptime_s is not None:
            fields["uptime_s"] = round(self.uptime_s, 3)
        return fields


def signal_name(signum: int) -> str:
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def classify_exit(
    returncode: int,
    *,
    requested: bool = False,
    signal_sent: int | None = None,
    uptime_s: float | None = None,
    oom_kills: int | None = None,
) -> ExitInfo:
    """Classify ``returncode`` (asyncio's: ``-N`` for signal N).

    ``requested``: the daemon asked the child to stop; ``signal_sent``: the
    strongest signal it sent; ``oom_kills``: how many OOM kills the kernel
    counted during the child's life (None when unknown).
    """
    if returncode < 0:
        signum = -returncode
        exit_code = None
        oom = signum == _signal.SIGKILL and signal_sent != _signal.SIGKILL
        description = _describe_signal(signum, signal_sent, oom_kills)
    else:
        signum = None
        exit_code = returncode
        oom = False
        description = _describe_code(returncode, requested, signal_sent)
    return ExitInfo(
        returncode=returncode,
        exit_code=exit_code,
        signal=signum,
        requested=requested or signal_sent is not None,
        signal_sent=signal_sent,
        oom_suspected=oom,
        uptime_s=uptime_s,
        description=description,
    )


def _describe_signal(signum: int, signal_sent: int | None, oom_kills: int | None) -> str:
    name = signal_name(signum)
    verb = "terminated" if signum == _signal.SIGTERM else "killed"
    if signum == signal_sent or (signum == _signal.SIGTERM and signal_sent == _signal.SIGKILL):
        return f"{verb} by {name} (sent by the daemon)"
    if signum == _signal.SIGKILL:
        if oom_kills:
            return f"{verb} by SIGKILL (probably out of memory: the kernel OOM-killed {oom_kills} process(es) meanwhile)"
        return f"{verb} by SIGKILL (not sent by the daemon: possibly out of memory)"
    return f"{verb} by {name} (not sent by the daemon)"


def _describe_code(code: int, requested: bool, signal_sent: int | None) -> str:
    text = f"exited with code {code}"
    # Shells report a child killed by signal N as 128+N; a wrapper script
    # exiting 137 usually means its real worker was SIGKILLed (OOM).
    if 128 < code <= 128 + 64:
        text += f" (128+{signal_name(code - 128)}: a process it ran was probably killed)"
    if signal_sent is not None:
        text += f" after the daemon sent {signal_name(signal_sent)}"
    elif requested:
        text += " after the daemon closed its stdin"
    return text


def read_oom_kill_count(path: str = _VMSTAT) -> int | None:
    """The kernel's OOM-kill counter (Linux 4.13+), or None where it is not available.

    It is host-wide: an increase during a child's life is a hint, not proof,
    that the child was the one killed; the SIGKILL it died of makes it likely.
    """
    try:
        with open(path, "rb") as stats:
            for line in stats:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def describe_start_failure(executable: str, cwd: str | None, error: OSError) -> str:
    """Why ``executable`` could not be started, and the fix, from the OSError of the spawn."""
    if cwd is not None and error.filename == cwd and executable != cwd:
        return f"its working directory {cwd!r} does not exist or is not accessible"
    if isinstance(error, FileNotFoundError):
        where = "check the path" if os.sep in executable else "not on PATH: give its full path"
        return f"command {executable!r} was not found ({where})"
    if isinstance(error, PermissionError):
        return (
            f"{executable!r} is not executable (chmod +x it, or name its interpreter "
            f"first, e.g. 'python3 {executable}')"
        )
    if error.errno == errno.ENOEXEC:
        return f"{executable!r} is not a program the kernel can run (a script needs a '#!' line)"
    return f"{executable!r}: {error.strerror or error}"
