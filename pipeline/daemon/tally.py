"""The morning notice's counts, read from disk: outputs and failures since the last "queue is empty" notice.

Counting in memory lost the night's first part at every restart (a watchdog restart, an upgrade, `systemctl
restart`): six photos, a restart after two, and the morning said "4 styled" (rev7d finding 7). The outbox logs
(``finished_at``) and failed/'s records (``failed_at``) outlive the daemon, so the count is taken from them, from
the moment the last summary was sent, which spool/notice_state.json remembers (written atomically).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import structlog

from ..fsio import write_atomic
from .spool import ERROR_SUFFIX

log = structlog.get_logger("style-pipeline.alerts")
STATE_FILE = "notice_state.json"


@dataclass
class Tally:
    """Where the counts live: the spool (for the state file), the outbox and failed/."""

    spool: Path
    outbox: Path
    failed: Path

    def since(self, fallback: datetime) -> datetime:
        """When the last summary was sent; `fallback` (this daemon's start) when none was, or the file is unreadable.
        The first call writes the fallback down, so a restart before the first summary still counts from it."""
        try:
            return _utc(json.loads((self.spool / STATE_FILE).read_text())["counted_until"])
        except FileNotFoundError:
            self.remember(fallback)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("notice state unreadable; counting from the daemon's start",
                        path=str(self.spool / STATE_FILE), error=str(exc))
        return fallback

    def remember(self, until: datetime) -> None:
        """The next summary counts from `until`. A failed write costs only a wider count next time."""
        data = json.dumps({"counted_until": until.isoformat()}).encode()  # to the microsecond: windows abut
        try:
            write_atomic(data, self.spool / STATE_FILE)
        except OSError as exc:
            log.warning("notice state not written", path=str(self.spool / STATE_FILE), error=str(exc))

    def count(self, since: datetime, until: datetime) -> tuple[int, int]:
        """(styled, failed) with their time inside [since, until): each output and each failure counted once
        across two summaries."""
        logs = (p for p in self.outbox.glob("*/**/*.json")
                if not any(part.startswith(".") for part in p.relative_to(self.outbox).parts))
        records = (p for p in self.failed.glob("*" + ERROR_SUFFIX) if not p.name.startswith("."))
        return (sum(_inside(p, "finished_at", since, until) for p in logs),
                sum(_inside(p, "failed_at", since, until) for p in records))


def _inside(path: Path, key: str, since: datetime, until: datetime) -> bool:
    """The log's time (its file's mtime when it has none) inside the window. A file last changed before `since`
    is not opened: the log is written after its time, so a busy outbox costs a stat per old output."""
    try:
        mtime = datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc)
        if mtime < since:
            return False
        when = json.loads(path.read_text()).get(key)
        when = _utc(when) if when else mtime
    except (OSError, ValueError, AttributeError, TypeError):  # gone since the glob, or not a log: not counted
        return False
    return since <= when < until


def _utc(text: str) -> datetime:
    """ISO-8601 to an aware UTC datetime (naive means UTC: the daemon writes UTC)."""
    when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
