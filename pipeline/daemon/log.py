"""structlog set-up: JSON lines for journald and files, a readable console for a person at a TTY.

Under systemd (stderr is the journal's stream) each line starts with ``<N>``, the syslog priority, which journald
reads and strips (sd-daemon(3)): without it every line is priority 6 and ``journalctl -p warning`` shows no failed job.
"""
from __future__ import annotations

import logging
import os
import sys

import structlog

# sd-daemon(3) / syslog(3) priorities for structlog's method names.
PRIORITY = {"debug": 7, "info": 6, "msg": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2,
            "fatal": 2}


def stderr_is_journal(stream=None) -> bool:
    """True when stderr is the journal's stream: systemd sets JOURNAL_STREAM to its device:inode
    (systemd.exec(5)); comparing them ignores a variable inherited by a process whose stderr was redirected."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, inode = (int(part) for part in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, inode)


def _priority_prefix(_logger, method: str, line: str) -> str:
    return f"<{PRIORITY.get(method, 6)}>{line}"


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
    journal = stderr_is_journal()
    console = sys.stderr.isatty() and not journal if fmt == "auto" else fmt == "console"
    renderer = structlog.dev.ConsoleRenderer(colors=not journal) if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # job_id on every line of a job
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
            *([_priority_prefix] if journal else []),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=SafePrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str = "style-pipeline"):
    return structlog.get_logger(name)
