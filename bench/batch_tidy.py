"""What the batch tidy (issue 13) saves, measured side by side in one run:

1. A photo's preparation (the run the engine builds for it: RGB copy, fit, pyramid plan, fingerprint, monitor),
   which stylize_batch used to build for every photo before grouping, so a photo that then ran alone was prepared
   twice; against grouping from its size alone (batch.working_levels), which is all it pays now. The fingerprint
   (hashing the full-size pictures, for checkpoints) and the fit (a resize made only for its size) are shown apart:
   every run pays them, batched or not.
2. Taking a batch from the daemon's queue: the old take ran batch_key (a picture header opened) for every queued
   job, under the queue's lock, on every take; now each job's key is worked out once as it is queued and a take
   compares stored keys.

    .venv/bin/python bench/batch_tidy.py            # a 2400x1655 photo at 512 and 1024 px; a queue of 16
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from bench.bench_outputs import median_time as timed  # noqa: E402
from bench.common import ASSETS, machine, table  # noqa: E402

PHOTO = (2400, 1655)
QUEUED = 16


def preparation_rows(repeats: int = 5) -> list[list]:
    from pipeline.engine import Settings, StyleTransfer, images
    from pipeline.engine.batch import working_levels
    from pipeline.engine.transfer import _Run

    engine = StyleTransfer(device="cpu")
    photo = images.load(ASSETS / "samples" / "astronaut.jpg").resize(PHOTO)
    style = images.load(ASSETS / "styles" / "starry_night.jpg")
    rows = []
    for size in (512, 1024):
        settings = Settings(size=size)
        run = _Run(engine, photo, [style], settings, None, None, None)
        prepare = timed(lambda: _Run(engine, photo, [style], settings, None, None, None), repeats)
        fingerprint = timed(lambda: type(run).fingerprints.func(run), repeats)  # made only for a checkpoint now
        fit = timed(lambda: images.fit(photo, size), repeats)
        group = timed(lambda: working_levels(photo, settings), repeats)
        rows.append([f"{PHOTO[0]}x{PHOTO[1]} at {size} px", prepare, fingerprint, fit, group])
    return rows


def queue_rows(repeats: int = 20) -> list[list]:
    from daemon_helpers import make_config
    from PIL import Image

    from pipeline.daemon import config as config_module
    from pipeline.daemon.batching import JobQueue, batch_key
    from pipeline.daemon.spool import Job

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = config_module.load(make_config(folder, defaults={"size": 512}))
        picture = Image.open(ASSETS / "samples" / "astronaut.jpg").convert("RGB").resize(PHOTO)
        jobs = []
        for i in range(QUEUED):
            (folder / f"job{i}").mkdir()
            picture.save(folder / f"job{i}" / "p.jpg", quality=90)
            jobs.append(Job(str(i), "p.jpg", f"p{i}.jpg", str(folder / f"job{i}"), ""))
        queue = JobQueue(lambda job: batch_key(job, config))
        enqueue = timed(lambda: [queue.put(job) for job in jobs] and [queue.get_nowait() for _ in jobs], 3) / QUEUED
        for job in jobs:
            queue.put(job)
        other = ("scream", (512, 353))  # a key no queued job has: a take looks at every one and takes none
        old = timed(lambda: [batch_key(job, config) == other for job in jobs], repeats)
        new = timed(lambda: queue.take(other, 15), repeats)
    return [[f"take from {QUEUED} queued ({PHOTO[0]}x{PHOTO[1]} JPEGs)", old, QUEUED, new, 0, enqueue, old / new]]


def main() -> None:
    torch.set_num_threads(1)
    print(f"Machine: {machine(with_load=True)}\n")
    print("A photo's preparation, which stylize_batch no longer makes for a photo that runs alone (medians, s)\n")
    print(table(["photo", "prepared run", "fingerprint (only for a checkpoint)", "fit (a resize)",
                 "grouping by size (now)"],
                preparation_rows()))
    print("\nTaking a batch from the daemon's queue (medians, s)\n")
    print(table(["queue", "old take (batch_key of each)", "headers opened", "new take (stored keys)",
                 "headers opened", "key at enqueue, per job", "ratio"], queue_rows()))


if __name__ == "__main__":
    main()
