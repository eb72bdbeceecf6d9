"""Shared by the throughput benchmarks (bench.py's daemon run, bench_ray.py): run `style-pipeline once` on a
config with a JSON log, and read back when each job was claimed and done. One parser, so the two tables agree."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(config: Path, log: Path, env: dict, timeout: float, **popen) -> tuple[int, float]:
    """(exit status, wall seconds) of one `once` run, its output into ``log``."""
    started = time.monotonic()
    with open(log, "wb") as handle:
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(config)], cwd=ROOT,
                              env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, **popen)
    return proc.returncode, time.monotonic() - started


def claim_and_done_times(log: Path) -> tuple[list[float], list[float]]:
    """Epoch seconds of each "claimed" and "job done" event in a JSON log (other lines skipped)."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass

    def stamp(event: dict) -> float:
        return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()

    return ([stamp(e) for e in events if e.get("event") == "claimed"],
            [stamp(e) for e in events if e.get("event") == "job done"])
