"""The host's share of a batch's set-up per photo (issue 13), before and after the copies made ahead were used by
batches: what the slot thread did for each photo between "job started" and the first step, at the pool bench's
photos (the 512 px samples, which bench/pool.py drops) and sizes. The network's parts (content target, the two
first evaluations) are the device's and are left out: a daemon log's setup_ms shows them (bench/daemon_log.py).

A third table (``targets``): the batch's content targets (conv4_2 features of each photo's working copy), before
= one forward a photo, one after another, as a batch made them until issue 13's set-up work; after = one forward
of the stacked batch (engine/content_target.py), the two alternated in each round, on whatever device is here.

    .venv/bin/python bench/setup_parts.py            # 1 torch thread, median of 15
    .venv/bin/python bench/setup_parts.py --only targets --batch 7 --sizes 256,512 --rounds 5
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def old_to_tensor(img):
    """images.to_tensor before it was split into to_bytes / from_bytes: float32 on the host, then copied."""
    import numpy as np
    import torch

    array = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0)


def ms(work, repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("host", "records", "targets", "runs"), default=None,
                        help="one table alone")
    parser.add_argument("--batch", type=int, default=7, help="targets: photos in the batch (the H200's were 4-7)")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[256, 512])
    parser.add_argument("--rounds", type=int, default=5, help="targets: rounds, before and after alternated")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only in (None, "host"):
        host()
    if args.only in (None, "records"):
        records()
    if args.only in (None, "targets"):
        targets(args.batch, args.sizes, args.rounds)
    if args.only in (None, "runs"):
        runs_made(args.batch, args.rounds)


def host() -> None:
    from pipeline.engine import Settings, images
    from pipeline.engine.prepared import prepare

    rows = []
    for name in ("rocket", "astronaut"):
        photo = images.load(ROOT / "pipeline" / "assets" / "samples" / f"{name}.jpg")
        for size in (512, 1024):
            ahead = prepare(photo, Settings(size=size))
            before = ms(lambda: old_to_tensor(images.resize_once(photo, ahead.hw)))
            after = ms(lambda: images.from_bytes(ahead.values))
            moved = ms(lambda: prepare(photo, Settings(size=size)))
            rows.append([f"{name} {photo.size[0]}x{photo.size[1]}", f"{ahead.hw[1]}x{ahead.hw[0]}",
                         f"{before:.1f}", f"{after:.2f}", f"{before / after:.0f}x", f"{moved:.1f}"])
    head = ["photo", "working shape", "slot, before: resize + to_tensor, ms", "slot, after: from_bytes, ms",
            "ratio", "prefetch thread now: prepare(), ms"]
    print(f"# bench/setup_parts.py: per photo of a batch, host only, 1 torch thread, median of 15\n")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def records(batch: int = 7) -> None:
    """A batch's job records (each write fsynced, as Spool.save): the batch's tries begun (pool.Slot._open_together)
    and its results' "not running" (Slot._not_running_together), one after another as before, side by side now."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.fsio import write_json

    folder = Path(tempfile.mkdtemp(prefix="setup-parts-"))
    paths = [folder / f"job{i}" / "job.json" for i in range(batch)]
    for path in paths:
        path.parent.mkdir()

    def save(path: Path) -> None:
        write_json(path, {"id": path.parent.name, "running": True, "note": "x" * 800}, indent=1)

    def together() -> None:
        with ThreadPoolExecutor(batch) as pool:
            list(pool.map(save, paths))
    before, after = ms(lambda: [save(path) for path in paths]), ms(together)
    print(f"\n| {batch} job records, fsynced | one after another, ms | side by side, ms | ratio |\n|---|---|---|---|")
    print(f"| {folder.parent} | {before:.1f} | {after:.1f} | {before / after:.1f}x |")


def targets(batch: int, sizes: list[int], rounds: int) -> None:
    """The batch's content targets made one forward a photo (before) and in one batched forward (after), each
    round both, alternated; the working copies are the engine's own (a _Run's, as a batch's level makes them), the
    samples in turn at one working shape (rocket and coffee: 512x342 and 512x341 give one canvas at these sizes)."""
    import os

    import torch

    from pipeline.engine import Settings, images
    from bench.common import clocked
    from pipeline.engine.content_target import content_targets
    from pipeline.engine.transfer import StyleTransfer, _Run

    engine = StyleTransfer()
    samples = [images.load(ROOT / "pipeline" / "assets" / "samples" / f"{n}.jpg") for n in ("rocket", "coffee")]
    where = torch.cuda.get_device_name(0) if engine.device.type == "cuda" else \
        f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), load average {os.getloadavg()[0]:.1f})"
    print(f"\n# content targets of a batch of {batch} on {where}, median of {rounds} rounds, before and after "
          f"alternated\n")
    head = ["size", "working shape", "before: one forward a photo, ms", "after: one batched forward, ms", "ratio",
            "after, ms a photo", "largest difference / largest value"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head), flush=True)
    for size in sizes:
        settings = Settings(size=size)
        runs = [_Run(engine, samples[i % len(samples)], [samples[0]], settings, None, None, None)
                for i in range(batch)]
        hw = runs[0].levels[-1]
        contents = [run.content_at(hw, engine.device) for run in runs]
        one_by_one = lambda: [content_targets(engine, [c])[0] for c in contents]  # noqa: E731
        together = lambda: content_targets(engine, contents)  # noqa: E731
        before, after = [], []
        one_by_one(), together()  # each shape's first pass (its kernels chosen) off the clock
        for _ in range(rounds):
            before.append(clocked(one_by_one, engine.device))
            after.append(clocked(together, engine.device))
        alone, batched = torch.cat(one_by_one()), torch.cat(together())
        error = float((alone - batched).abs().max() / alone.abs().max())
        b, a = 1000 * statistics.median(before), 1000 * statistics.median(after)
        print(f"| {size} | {hw[1]}x{hw[0]} | {b:.1f} | {a:.1f} | {b / a:.2f}x | {a / batch:.1f} | {error:.1e} |",
              flush=True)



def runs_made(batch: int, rounds: int) -> None:
    """A batch's runs made (stylize_batch's ``runs`` part of setup_ms: 124 ms for a batch of 12 on the H200) from
    issue 13's photo as the daemon hands it (made ahead at 1024 px, engine/prepared.py): before = each run copied
    the RGB photo (PIL's convert to its own mode), kept while the run lived; after = the photo used as it is. The
    two alternated in each round; every run of a round is kept until the round ends, as a batch keeps its runs."""
    from bench.common import issue_photo
    from pipeline.engine import Settings, images
    from pipeline.engine.prepared import prepare
    from pipeline.engine.transfer import StyleTransfer, _Run

    engine, settings = StyleTransfer(device="cpu"), Settings(size=1024)
    photo, style = issue_photo(), images.load(ROOT / "pipeline" / "assets" / "styles" / "starry_night.jpg")
    ahead = prepare(photo, settings)

    def make(copy: bool):
        kept = [(photo.convert("RGB") if copy else None, _Run(engine, ahead, [style], settings, None, None, None))
                for _ in range(batch)]
        return kept

    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for copy in (True, False):
            started = time.perf_counter()
            kept = make(copy)
            times[copy].append(1000 * (time.perf_counter() - started))
            del kept
    before, after = statistics.median(times[True]), statistics.median(times[False])
    print(f"\n# a batch of {batch} runs made from a {photo.size[0]}x{photo.size[1]} photo at 1024 px, host only, "
          f"median of {rounds} rounds, alternated\n")
    print("| photos | before: each run copies the photo, ms | after: used as it is, ms | ratio | saved a photo, ms |")
    print("|---|---|---|---|---|")
    print(f"| {batch} | {before:.1f} | {after:.1f} | {before / max(after, 1e-6):.0f}x | {(before - after) / batch:.1f} |")


if __name__ == "__main__":
    main()
