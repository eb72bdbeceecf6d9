"""What the report reads from disk: the logs inside its window, each read once, and the pictures they name, each
shown only while it is still the file the log hashed.

Apart from report.py (at its 400-line limit) because the reading has its own rules: a log whose file last changed
before the window opened is skipped by one stat, never opened nor parsed (fsio.written_before, shared with the
daemon's tally). A year of outputs then costs the morning a stat each, and a log damaged last week is not listed
among the problems of every page after (rev8c findings 2 and 3). A card's content and style pictures are found by
name, and names are reused (a painting replaced under its name, a pruned done/ refilled by the next night's
IMG_0001.jpg): one is shown only when its sha256 is the one the log recorded (rev8c finding 5).
"""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from .fsio import NO_WAIT, open_regular, written_before

_DIGESTS: dict[tuple, str] = {}  # (path, mtime_ns, size, inode) -> sha256: a painting on 200 cards is hashed once
DIGESTS_KEPT = 4096  # a bound for a long-lived caller; a page names far fewer files


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


def recorded_file(paths, recorded: object) -> tuple[Path | None, bool]:
    """(the first of ``paths`` that is a file still holding what the log hashed, else None; whether a file was
    found under one of those names that is another picture now: the card says "changed since" for it)."""
    changed = False
    for path in paths:
        if path.is_file():
            if is_recorded(path, recorded):
                return path, False
            changed = True
    return None, changed


def is_recorded(path: Path, recorded: object) -> bool:
    """The file's sha256 is ``recorded``; a log that recorded none (hand-made, a foreign tool) is taken at its
    word. Read through open_regular (never a link's target, never a FIFO's wait); unreadable: not shown."""
    if not isinstance(recorded, str) or not recorded:
        return True
    try:
        with open_regular(path, NO_WAIT) as handle:
            info = os.fstat(handle.fileno())
            key = (str(path), info.st_mtime_ns, info.st_size, info.st_ino)
            if key not in _DIGESTS:
                if len(_DIGESTS) >= DIGESTS_KEPT:
                    _DIGESTS.clear()
                _DIGESTS[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return False
    return _DIGESTS[key] == recorded.lower()
