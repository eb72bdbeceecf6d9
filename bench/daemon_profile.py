"""Where the daemon's per-photo time goes at tiny sizes: `once` over a backlog, in-process, every thread under
cProfile timed by its own CPU clock (the main loop's claims and rescans, the worker, the prefetch and writer threads;
``--wall`` for wall seconds), for a checkout
(``--tree``, e.g. a commit extracted by bench/gap.py) or this one. Prints the top functions by cumulative and by
own time, summed over the threads; start-up (weights, style targets) is in it too, so compare two trees' tables
line by line rather than their totals.

    .venv/bin/python bench/daemon_profile.py --photos 60              # this tree, 32 px, 2 steps
    .venv/bin/python bench/daemon_profile.py --tree bench/out/gap/tree-4b30ce905e --photos 60
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def profiled_threads(timer) -> list[cProfile.Profile]:
    """Every thread started from now on runs under its own profiler (collected in the list returned)."""
    found: list[cProfile.Profile] = []
    plain = threading.Thread._bootstrap_inner  # calls run(): a subclass's own run (the worker's) is profiled too

    def bootstrap(self):
        profile = cProfile.Profile(timer)
        found.append(profile)
        profile.runcall(plain, self)

    threading.Thread._bootstrap_inner = bootstrap  # type: ignore[attr-defined]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--wall", action="store_true", help="wall seconds (default: each thread's CPU seconds, "
                        "which a contended box does not inflate)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "daemon_profile")
    args = parser.parse_args()
    sys.path[:0] = [str(args.tree.resolve()), str(ROOT)]  # the tree's pipeline, this checkout's bench
    import torch

    torch.set_num_threads(1)
    from bench.daemon_run import backlog_config
    from pipeline.daemon.daemon import Daemon

    folder = args.out / args.tree.resolve().name
    shutil.rmtree(folder, ignore_errors=True)
    config = backlog_config(folder, args.size, args.steps)
    samples = sorted((ROOT / "pipeline" / "assets" / "samples").glob("*.jpg"))
    for i in range(args.photos):
        shutil.copy(samples[i % len(samples)], folder / "inbox" / f"drop{i:03d}.jpg")
    timer = time.perf_counter if args.wall else time.thread_time
    threads = profiled_threads(timer)
    main_profile = cProfile.Profile(timer)
    started = time.perf_counter()
    main_profile.runcall(Daemon(config, once=True).run)
    wall = time.perf_counter() - started
    stats = pstats.Stats(main_profile, stream=(text := io.StringIO()))
    for profile in threads:
        stats.add(profile)
    print(f"# {args.tree.resolve().name}: {args.photos} photos at {args.size} px, {args.steps} steps, once, "
          f"{wall:.1f} s wall; {'wall' if args.wall else 'CPU'} seconds; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    stats.dump_stats(folder / "profile.pstats")  # for print_callers and the like
    for order in ("cumulative", "tottime"):
        stats.sort_stats(order).print_stats(args.top)
    print(text.getvalue(), file=sys.stderr)  # stdout holds the daemon's log


if __name__ == "__main__":
    main()
