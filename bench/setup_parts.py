"""The host's share of a batch's set-up per photo (issue 13), before and after the copies made ahead were used by
batches: what the slot thread did for each photo between "job started" and the first step, at the pool bench's
photos (the 512 px samples, which bench/pool.py drops) and sizes. The network's parts (content target, the two
first evaluations) are the device's and are left out: a daemon log's setup_ms shows them (bench/daemon_log.py).

    .venv/bin/python bench/setup_parts.py            # 1 torch thread, median of 15
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
    import torch

    from pipeline.engine import Settings, images
    from pipeline.engine.prepared import prepare

    torch.set_num_threads(1)
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
    records()


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


if __name__ == "__main__":
    main()
