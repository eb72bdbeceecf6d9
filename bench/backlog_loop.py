"""What one pass of the daemon's main loop costs as the inbox backlog grows (rev8b: 3,000 small photos dropped at
once, status.json went 4.0 s between updates). In-process, no engine: a Daemon over N real photos in its inbox,
each part of a pass timed on its own (median of repeats, wall ms): the tracker's ready list (every pass with room),
a rescan (every rescan_seconds), the observer thread's look at 1,000 inotify events (a drop raises about three a
file; that thread shares the GIL with the loop), the unpaired-sidecar look (every 5 s) and status.json's facts
(every second). `--raws N` adds N camera RAW files, never claimed (rev11c: a RAW+JPEG card leaves one a photo in the
inbox for good), and a column for status.json's size.

    .venv/bin/python bench/backlog_loop.py --photos 200 1000 3000
    git archive <commit> pipeline | tar -x -C bench/out/tree-old   # then, side by side in one run:
    .venv/bin/python bench/backlog_loop.py --trees bench/out/tree-old . --photos 3000

Each (tree, size) runs in a process of its own (a tree's pipeline is imported once), the trees alternating.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(tree: Path, folder: Path, photos: int, repeats: int, raws: int = 0) -> dict[str, float]:
    sys.path[:0] = [str(tree.resolve()), str(ROOT)]  # the tree's pipeline, this checkout's bench
    from bench.daemon_run import backlog_config
    from pipeline.daemon import status as status_module
    from pipeline.daemon.daemon import Daemon

    shutil.rmtree(folder, ignore_errors=True)
    config = backlog_config(folder, 32, 2, {"settle_seconds": 0})
    sample = ROOT / "pipeline" / "assets" / "samples" / "rocket.jpg"
    for i in range(photos):
        os.link(sample, folder / "inbox" / f"drop{i:04d}.jpg") if i else shutil.copy(sample, folder / "inbox" / "drop0000.jpg")
    for i in range(raws):
        (folder / "inbox" / f"DSC_{i:04d}.NEF").write_bytes(b"II*\x00" + bytes(64))
    daemon = Daemon(config)
    daemon._rescan()
    assert len(daemon.tracker) == photos, len(daemon.tracker)
    from pipeline.daemon.watcher import own_folders, wanted

    found, inbox, own = list(daemon.tracker.entries), daemon.config.inbox, own_folders(daemon.config)
    paths = (found * (1000 // len(found) + 1))[:1000]
    return {"ready": median_ms(daemon.tracker.ready, repeats), "rescan": median_ms(daemon._rescan, repeats),
            "1,000 events": median_ms(lambda: [wanted(p, inbox, own) for p in paths], repeats),
            "unpaired": median_ms(daemon._check_unpaired, repeats),
            "status facts": median_ms(lambda: status_module.snapshot(daemon.reporter.facts()), repeats),
            "status.json kB": len(json.dumps(status_module.snapshot(daemon.reporter.facts()))) / 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, nargs="+", default=[200, 1000, 3000])
    parser.add_argument("--trees", type=Path, nargs="+", default=[ROOT])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--raws", type=int, nargs="+", default=[0], help="camera RAW files beside the photos")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "backlog_loop")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # TREE N: one measurement, as JSON
    args = parser.parse_args()
    if args.one:
        tree, photos = Path(args.one[0]), int(args.one[1])
        print(json.dumps(measure(tree, args.out / str(photos), photos, args.repeats, args.raws[0])))
        return
    rows = []
    for n in args.photos:
        for raws in args.raws:
            for tree in args.trees:
                done = subprocess.run([sys.executable, __file__, "--one", str(tree), str(n), "--repeats",
                                       str(args.repeats), "--out", str(args.out), "--raws", str(raws)],
                                      capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                      check=True)
                rows.append((tree.resolve().name, n, raws, json.loads(done.stdout.strip().splitlines()[-1])))
    parts = list(rows[0][3])
    print(f"# main-loop parts, median wall ms of {args.repeats}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| tree | photos waiting | RAWs left | " + " | ".join(parts) + " |")
    print("|---|---:|---:|" + "---:|" * len(parts))
    for tree, n, raws, row in rows:
        print(f"| {tree} | {n:,} | {raws:,} | " + " | ".join(f"{row[p]:.1f}" for p in parts) + " |")


if __name__ == "__main__":
    main()
