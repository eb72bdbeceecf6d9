#!/usr/bin/env python
"""What the morning notice's count from disk costs (daemon/tally.py), on the notice thread, once a drained queue:

- a busy outbox of N older outputs (before the last summary: a stat each, never opened) and the night's M;
- the worst case, every one of the N+M logs inside the window (each opened and parsed).

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
    finally:
        shutil.rmtree(root)
    print(f"machine: {platform.node()} ({os.cpu_count()} CPUs), medians of {args.repeat}")
    print(f"| count | {args.old} older outputs + {args.new} of the night | all {args.old + args.new} in the window |")
    print("|---|---|---|")
    print(f"| tally.count() | {night * 1e3:.0f} ms | {every * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
