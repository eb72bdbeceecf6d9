"""What the report reads from disk: the logs inside its window, each read once.

Apart from report.py (at its 400-line limit) because the reading has its own rules: a log whose file last changed
before the window opened is skipped by one stat, never opened nor parsed (fsio.written_before, shared with the
daemon's tally). A year of outputs then costs the morning a stat each, and a log damaged last week is not listed
among the problems of every page after (rev8c findings 2 and 3).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from .fsio import written_before


def parse_time(value: object) -> datetime | None:
    """ISO-8601 to an aware UTC datetime; junk or missing -> None."""
    try:
        return as_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


def as_utc(when: datetime) -> datetime:
    """Naive means UTC: the daemon writes UTC, and aware and naive datetimes do not compare."""
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def read_json(path: Path, problems: list[str]) -> dict | None:
    """The log as a dict, or None with "<name>: <why>" in `problems`."""
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
        problems.append(f"{path.name}: not a JSON object")
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name}: {exc}")
    return None


def logs_in_window(paths, time_key: str, cutoff: datetime | None, problems: list[str],
                   until: datetime | None = None):
    """(path, log) for each readable log inside the window; the unreadable ones go to `problems`. A log is written
    after the time it records, so one last changed before `cutoff` is left unread (one stat)."""
    for path in sorted(paths):
        if cutoff is not None and written_before(path, cutoff.timestamp()):
            continue
        log = read_json(path, problems)
        if log is not None and since_ok(parse_time(log.get(time_key)), path, cutoff, until):
            yield path, log


def since_ok(when: datetime | None, path: Path, cutoff: datetime | None, until: datetime | None = None) -> bool:
    """Inside the window [cutoff, until); a log with no usable timestamp is judged by its file's mtime."""
    if when is None and (cutoff is not None or until is not None):
        try:
            when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        except OSError:  # gone since the glob (moved, cleaned up): nothing to show
            return False
    return (cutoff is None or when >= cutoff) and (until is None or when < until)
