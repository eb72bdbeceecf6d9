#!/usr/bin/env python
"""What the morning notice's count from disk costs (daemon/tally.py), on the notice thread, once a drained queue:

- a busy outbox of N older outputs (before the last summary: a stat each, never opened) and the night's M;
- the worst case, every one of the N+M logs inside the window (each opened and parsed);
- the morning report's reading of the same outbox (report.collect, --since 12h), which skips the older logs by the
  same stat (fsio.written_before, rev8c finding 2), against the same call with the skip turned off (as before).

    python bench/bench_tally.py [--old 20000] [--new 200] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_outputs import median_time  # noqa: E402 - the same timing as the other outputs' costs


def fill(outbox: Path, count: int, when: datetime, prefix: str) -> None:
    """`count` output logs as the daemon writes them (a few hundred bytes each), finished and last changed at `when`."""
    folder = outbox / "starry"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"finished_at": when.isoformat(timespec="milliseconds"), "padding": "x" * 600}
    for i in range(count):
        path = folder / f"{prefix}{i}.json"
        path.write_text(json.dumps(record))
        os.utime(path, (when.timestamp(), when.timestamp()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", type=int, default=20000)
    parser.add_argument("--new", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from pipeline.daemon.tally import Tally

    root = Path(tempfile.mkdtemp(prefix="bench-tally-"))
    try:
        now = datetime.now(timezone.utc)
        tally = Tally(root / "spool", root / "outbox", root / "spool" / "failed")
        tally.failed.mkdir(parents=True)
        fill(tally.outbox, args.old, now - timedelta(days=2), "old")
        fill(tally.outbox, args.new, now - timedelta(hours=2), "new")
        since, until = now - timedelta(hours=12), now + timedelta(seconds=1)
        assert tally.count(since, until) == (args.new, 0)
        night = median_time(lambda: tally.count(since, until), args.repeat)
        assert tally.count(now - timedelta(days=3), until) == (args.old + args.new, 0)
        every = median_time(lambda: tally.count(now - timedelta(days=3), until), args.repeat)
        skipped, parsed = report_times(tally, now, args.new, args.repeat)
    finally:
        shutil.rmtree(root)
    print(f"machine: {platform.node()} ({os.cpu_count()} CPUs), medians of {args.repeat}")
    print(f"| count | {args.old} older outputs + {args.new} of the night | all {args.old + args.new} in the window |")
    print("|---|---|---|")
    print(f"| tally.count() | {night * 1e3:.0f} ms | {every * 1e3:.0f} ms |")
    print(f"\n| report.collect(--since 12h) | older logs skipped by a stat | every log parsed (before rev8c) | ratio |")
    print("|---|---|---|---|")
    print(f"| {args.old} older + {args.new} | {skipped * 1e3:.0f} ms | {parsed * 1e3:.0f} ms | {parsed / skipped:.1f}x |")


def report_times(tally, now: datetime, new: int, repeat: int) -> tuple[float, float]:
    """report.collect over the tally's outbox, side by side: as it is, and with the mtime skip turned off."""
    from pipeline import report, report_logs

    def collect() -> None:
        assert report.collect(tally.outbox, tally.failed, since=timedelta(hours=12), now=now).summary.processed == new

    skipped = median_time(collect, repeat)
    real = report_logs.written_before
    report_logs.written_before = lambda entry, moment: False
    try:
        parsed = median_time(collect, repeat)
    finally:
        report_logs.written_before = real
    return skipped, parsed


if __name__ == "__main__":
    main()
