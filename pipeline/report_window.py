"""The scheduled report's window: from where the last one ended to now, so consecutive pages neither miss nor repeat.

The report timer fires daily with RandomizedDelaySec=60 and Persistent=true (a box that was off runs it at boot). A
window of `--since 24h` counted back from each run's own start leaves a gap whenever a morning's delay is longer than
the day before's (an output finishing in between was on neither page), an overlap when shorter, and a catch-up run
after a boot a gap of hours (rev7d). So `report --since-last` (the timer's run only; an interactive `--since` keeps
its meaning) starts at the marker the last such run left in outbox/reports/ and ends SETTLE before its own start;
the marker then moves to that end. The first run, or one after the marker was lost or damaged, falls back on
`--since`.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from .daemon.spool import unique_names  # the spool's -1, -2 naming: one rule for every taken name
from .fsio import write_atomic
from .report import parse_time

MARKER = ".covered_until"  # hidden: the report never lists it, the daemon never claims it
# finished_at is stamped a moment before the log is written (the image is encoded and fsync'd in between): a window
# ending a minute ago has every one of its logs on disk, so none lands behind the marker unseen.
SETTLE = timedelta(seconds=60)


def scheduled_window(reports: Path, fallback: timedelta | None,
                     now: datetime) -> tuple[timedelta | None, datetime, datetime]:
    """(since, until, covered) for collect and mark_covered: back from `now` to the last run's marker (else
    `fallback`), up to SETTLE ago; `covered`, the marker's next place, never behind where it was (two runs inside a
    minute: the second's window is empty and the first's end stands)."""
    until = now - SETTLE
    start = covered_until(reports)
    if start is None or start > now:  # none yet, damaged, or from a clock that ran ahead: start as --since says
        return fallback, until, until
    return now - min(start, until), until, max(start, until)


def covered_until(reports: Path) -> datetime | None:
    """The end of the last scheduled report's window; None when there is none or it cannot be read."""
    try:
        return parse_time((reports / MARKER).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def mark_covered(reports: Path, until: datetime) -> Path:
    """Written atomically after the pages: a run that failed before them leaves the marker where it was, so the
    next run covers its window too."""
    return write_atomic(until.isoformat().encode(), reports / MARKER)


def dated_page(reports: Path, now: datetime, scheduled: bool) -> Path:
    """reports/<local date>.html for the day's first scheduled page (`--since-last`, the timer's); a run by hand, or
    a later scheduled run that day, gets <date>-<HHMM>.html (then -<HHMM>-1, -2 within one minute). Why: the dated
    page was written with replace, so a second run the same day (`systemctl start style-pipeline-report` for the late
    photos, or any `report --since`) rewrote the night's page with its own few hours, and `--since-last` then kept
    the night off every later page (rev8c finding 4); and while the first run of the day took the plain name, a look
    by hand after midnight took it and the morning's page became <date>-0715.html (left9). report.html is still the
    latest."""
    local = now.astimezone()
    first = reports / f"{local:%Y-%m-%d}.html"
    if scheduled and not first.exists():
        return first
    return next(page for page in unique_names(reports, f"{local:%Y-%m-%d-%H%M}.html") if not page.exists())
