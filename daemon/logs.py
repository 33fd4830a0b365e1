"""Logging setup: structlog, JSON when not on a terminal, console on one.

Global logging state lives here only; ``configure`` may be called again
(tests do). Records carry ``shard_id`` and ``pid`` through bound loggers.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

LEVELS = ("debug", "info", "warning", "error")


def configure(level: str = "info", fmt: str | None = None, stream: Any = None) -> None:
    """Route structlog (and stdlib logging, for botocore) to ``stream``.

    ``fmt`` is "json" or "console"; None picks console on a terminal, else JSON.
    The daemon's stdout is free for the user, but logs go to stderr so that a
    systemd journal or a pipe sees one stream.
    """
    stream = stream or sys.stderr
    if fmt is None:
        fmt = "console" if stream.isatty() else "json"
    numeric = getattr(logging, level.upper())
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # botocore logs credentials-adjacent details at DEBUG; keep it at WARNING.
    logging.basicConfig(stream=stream, level=logging.WARNING, force=True)


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("kcl-daemon").bind(**bound)
