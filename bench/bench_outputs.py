#!/usr/bin/env python
"""What issue 11's additions cost the daemon, side by side in one run (prints a table):

- scanning the inbox at any depth (with its own-file check), and `status`'s full read, for N waiting photos;
- the daemon's look for sidecars no photo reads (every 5 s, sidecars.UNPAIRED_TICK_S), with one lonely sidecar
  beside the top third of those photos;
- writing the Prometheus textfile (render + atomic replace);
- save_every: one saved picture, timed inside a real run, and its share of that run.

    python bench/bench_outputs.py [--files 2000] [--size 128] [--steps 30] [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.common import median_time  # noqa: E402


def bench_scan(files: int, repeat: int) -> list[tuple[str, str]]:
    from daemon_helpers import SAMPLES, make_config
    from pipeline.daemon import status
    from pipeline.daemon.config import load
    from pipeline.daemon.sidecars import unpaired_sidecars
    from pipeline.daemon.watcher import own_folders, scan
    from pipeline.report import write_reports

    root = Path(tempfile.mkdtemp(prefix="bench-outputs-"))
    try:
        config = load(make_config(root))
        inbox = config.inbox
        data = (SAMPLES / "rocket.jpg").read_bytes()
        for i in range(files):  # a third at the top, a third in a recipe folder, a third three levels down
            folder = [inbox, inbox / "starry", inbox / "albums" / f"a{i % 10}" / "day"][i % 3]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"p{i}.jpg").write_bytes(data)
        for i in range(files // 40):  # text files the own-file check opens: reports, logs
            write_reports([inbox / f"report{i}.html"], config.outbox, config.failed)
        own = own_folders(config)
        found = sum(1 for _ in scan(inbox, own))
        scan_s = median_time(lambda: sum(1 for _ in scan(inbox, own)), repeat)
        status_s = median_time(lambda: status.read(config), repeat)
        (inbox / "lonely.yaml").write_text("steps: 2\n")
        later = time.time() + 60
        assert list(unpaired_sidecars(inbox, own, now=later)) == ["lonely.yaml"]
        unpaired_s = median_time(lambda: unpaired_sidecars(inbox, own, now=later), repeat)
        return [(f"scan, {found} photos at depths 1-4 (+{files // 40} reports skipped)", f"{scan_s * 1e3:.1f} ms"),
                ("  per photo", f"{scan_s / found * 1e6:.1f} us"),
                ("status.read() on that inbox", f"{status_s * 1e3:.1f} ms"),
                ("unpaired-sidecar look on that inbox (1 lonely sidecar)", f"{unpaired_s * 1e3:.1f} ms")]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_metrics(repeat: int) -> list[tuple[str, str]]:
    from pipeline.daemon.metrics import Metrics

    metrics = Metrics()
    for i in range(100):
        metrics.on_event("done", {"seconds": 60.0, "steps": 100})
        metrics.on_event("failed", {"reason": "bad_image"})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "style_pipeline.prom"
        seconds = median_time(lambda: metrics.maybe_write(path, 0.0, queue=3, in_work=1, busy=True, gpu=False),
                              repeat * 20)
        size = path.stat().st_size
    return [(f"metrics textfile render + atomic write ({size} B)", f"{seconds * 1e3:.2f} ms")]


def bench_save_every(size: int, steps: int, repeat: int) -> list[tuple[str, str]]:
    """The hook is timed from inside the run: on a contended box two whole runs differ by more than a save."""
    import torch

    from pipeline.engine import Settings, StyleTransfer, images

    torch.set_num_threads(1)
    engine = StyleTransfer(device="cpu")
    content = images.load(ROOT / "pipeline" / "assets" / "samples" / "coffee.jpg")
    style = images.load(ROOT / "pipeline" / "assets" / "styles" / "starry_night.jpg")
    settings = Settings(size=size, steps=steps, early_stop_tol=0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-save-"))
    save_times: list[float] = []

    def saving(info) -> None:
        if info.step and info.step % 10 == 0:
            start = time.perf_counter()
            images.write_atomic(images.encode(info.picture(), "png", 92), tmp / f"step-{info.step:05d}.png")
            save_times.append(time.perf_counter() - start)

    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        engine.stylize(content, [style], settings, on_step=saving)
        runs.append(time.perf_counter() - start)
    shutil.rmtree(tmp, ignore_errors=True)
    run, save = statistics.median(runs), statistics.median(save_times)
    share = save * (steps // 10) / run
    return [(f"{size} px x {steps} steps with save_every 10 (run)", f"{run:.2f} s"),
            ("  one saved picture (picture + PNG + atomic write)", f"{save * 1e3:.1f} ms ({share:.2%} of the run)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.steps < 10:  # the save is timed at every 10th step: fewer saved nothing, and the median raised
        parser.exit(2, f"bench_outputs: --steps {args.steps}: at least 10 (a picture is saved every 10 steps)\n")
    rows = bench_scan(args.files, args.repeat) + bench_metrics(args.repeat) + bench_save_every(
        args.size, args.steps, args.repeat)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}; medians of "
          f"{args.repeat}")
    width = max(len(r[0]) for r in rows)
    print(f"| {'what':<{width}} | time |\n|{'-' * (width + 2)}|------|")
    for what, value in rows:
        print(f"| {what:<{width}} | {value} |")


if __name__ == "__main__":
    main()
