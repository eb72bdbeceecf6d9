"""rev8b's drop, end to end: N small photos copied into a running daemon's inbox at once, and how long status.json
then goes between two updates (it should be about 1 s; rev8b saw 4.0 s at 3,000) and how many photos are done in
the first seconds. A real daemon in a subprocess per tree (``--trees``: a tree extracted with `git archive`, and
this checkout), the trees one after the other; wall clock, so quote ratios from one run on one box.

    git archive <commit> pipeline | tar -x -C bench/out/tree-old
    .venv/bin/python bench/status_gaps.py --trees bench/out/tree-old . --photos 3000 --seconds 40
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run(tree: Path, folder: Path, photos: int, seconds: float) -> dict[str, float]:
    sys.path[:0] = [str(ROOT)]
    from bench.daemon_run import backlog_config

    shutil.rmtree(folder, ignore_errors=True)
    config = backlog_config(folder, 32, 2, {"rescan_seconds": 5, "settle_seconds": 0.3})
    small = folder / "small.jpg"
    Image.open(ROOT / "pipeline" / "assets" / "samples" / "rocket.jpg").convert("RGB").resize((48, 32)).save(small)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(folder / "daemon.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)],
                                cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while _status(folder).get("state") != "running":
            if proc.poll() is not None:
                raise SystemExit(f"{tree}: the daemon did not start; see {folder / 'daemon.log'}")
            time.sleep(0.1)
        for i in range(photos):
            shutil.copy(small, folder / "inbox" / f"drop{i:04d}.jpg")
        dropped, stamps, last = time.monotonic(), [], None
        while time.monotonic() - dropped < seconds:
            data = _status(folder)
            if data.get("updated_at") != last and data.get("updated_at"):
                last = data["updated_at"]
                stamps.append(datetime.fromisoformat(last).timestamp())
            time.sleep(0.02)
        done = _status(folder).get("done", 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"max gap s": max(gaps), "median gap s": statistics.median(gaps), "done": done}


def _status(folder: Path) -> dict:
    try:
        return json.loads((folder / "spool" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=Path, nargs="+", default=[ROOT])
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "status_gaps")
    args = parser.parse_args()
    rows = [(tree.resolve().name, run(tree.resolve(), args.out / tree.resolve().name, args.photos, args.seconds))
            for tree in args.trees]
    print(f"# {args.photos:,} photos (48x32, 2 steps, rescan 5 s) dropped into a running daemon, status.json for "
          f"{args.seconds:.0f} s after; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| tree | " + " | ".join(rows[0][1]) + " |")
    print("|---|" + "---:|" * len(rows[0][1]))
    for tree, row in rows:
        print(f"| {tree} | " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
