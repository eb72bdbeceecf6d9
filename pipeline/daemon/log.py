"""structlog set-up: JSON lines for journald and files, a readable console for a person at a TTY."""
from __future__ import annotations

import logging
import sys

import structlog


class SafePrintLogger(structlog.PrintLogger):
    """A log line that cannot be written (full disk under a redirected stderr, a closed pipe) is dropped:
    no write of logs may kill the daemon (issue 9)."""

    def msg(self, message: str) -> None:
        try:
            super().msg(message)
        except (OSError, ValueError):
            pass

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


class SafePrintLoggerFactory(structlog.PrintLoggerFactory):
    def __call__(self, *args) -> SafePrintLogger:
        return SafePrintLogger(self._file)


def configure(fmt: str = "auto", level: str = "info") -> None:
    console = sys.stderr.isatty() if fmt == "auto" else fmt == "console"
    renderer = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # job_id on every line of a job
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=SafePrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str = "style-pipeline"):
    return structlog.get_logger(name)
