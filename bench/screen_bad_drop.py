"""How long a bad drop (a text file named .jpg) waits behind a backlog before it is failed, before and after the
screen at the door (mend12a: settle.DecodeCheck.not_a_picture, Daemon._screen), side by side in one run; and what
the screen costs the main loop.

Part 1: for each tree, one `style-pipeline once` run (a subprocess) over N photos with notes.jpg dropped last:
seconds from the first claim to notes.jpg's "job failed", how many photos were done before it, and the backlog's
last "job done". Part 2 (this tree): the screen's look at one photo, first (the header read) and again (remembered),
against the full decode the claim's settle check makes; and one screen tick over a backlog of waiting photos.

    .venv/bin/python bench/screen_bad_drop.py --before main --photos 6 --size 64 --steps 20
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
from bench.backlog_loop import median_ms  # noqa: E402
from bench.common import events, extract, machine, save_json, table  # noqa: E402
from bench.daemon_run import backlog_config, run_once  # noqa: E402

SAMPLE = ROOT / "pipeline" / "assets" / "samples" / "coffee.jpg"


def backlog_run(tree: Path, folder: Path, photos: int, size: int, steps: int) -> list:
    shutil.rmtree(folder, ignore_errors=True)
    config = backlog_config(folder, size, steps)
    for i in range(photos):
        shutil.copy(SAMPLE, folder / "inbox" / f"drop{i:02d}.jpg")
    (folder / "inbox" / "notes.jpg").write_bytes(b"shopping list: eggs, milk\n" * 40)  # dropped last
    code, _ = run_once(config, folder / "daemon.log", {**os.environ, "OMP_NUM_THREADS": "1"}, 1800, root=tree)
    found = events(folder / "daemon.log")
    first = min(e["t"] for e in found if e.get("event") == "claimed")
    failed = next(e["t"] for e in found if e.get("event") == "job failed" and e.get("file") == "notes.jpg")
    dones = [e["t"] for e in found if e.get("event") == "job done"]
    assert code == 0 and len(dones) == photos, (code, len(dones))
    return [failed - first, sum(t < failed for t in dones), max(dones) - first]


def screen_costs(folder: Path, waiting: int) -> list[list]:
    """The screen's look at a 4000x3000 JPEG (first: header; again: remembered) against the settle check's decode,
    and a screen tick over ``waiting`` photos already looked at (a backlog's every tick)."""
    from PIL import Image

    from pipeline.daemon import settle
    from pipeline.daemon.daemon import Daemon

    shutil.rmtree(folder, ignore_errors=True)
    config = backlog_config(folder, 32, 2, {"settle_seconds": 0})
    big = folder / "big.jpg"
    Image.open(SAMPLE).convert("RGB").resize((4000, 3000)).save(big, quality=90)
    check = settle.DecodeCheck()

    def first_look():
        check.pictures.clear()
        check.not_a_picture(big, 0.1)

    def decode():
        with open(big, "rb") as file:
            settle.decodes(file, 10 ** 9)

    for i in range(waiting):
        os.link(big, folder / "inbox" / f"w{i:04d}.jpg")
    daemon = Daemon(config)
    daemon._rescan()
    daemon.tracker.ready(time.monotonic() + 10)  # quiet by now: every photo is ready
    daemon.tracker.ready = lambda ready=daemon.tracker.ready: ready(time.monotonic() + 10)
    first_tick = median_ms(lambda: daemon._screen(0.0), 1)
    return [["screen: first look at one photo (header)", median_ms(first_look, 21)],
            ["screen: a photo looked at before (remembered)", median_ms(lambda: check.not_a_picture(big, 0.1), 21)],
            ["settle's full decode of that photo (the claim's check, unchanged)", median_ms(decode, 5)],
            [f"screen tick, {waiting:,} photos waiting, first (headers read)", first_tick],
            [f"screen tick, {waiting:,} photos waiting, later (remembered)", median_ms(lambda: daemon._screen(0.0), 11)]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="the commit before the screen (its tree, git archive)")
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "screen_bad_drop")
    args = parser.parse_args()
    print(f"# machine: {machine(with_load=True)}")
    trees = [("before (" + args.before + ")", extract(args.before, args.out)), ("after (this tree)", ROOT)]
    rows = [[name, args.photos, *backlog_run(tree, args.out / f"run{i}", args.photos, args.size, args.steps)]
            for i, (name, tree) in enumerate(trees)]
    print(f"\n## notes.jpg dropped behind {args.photos} photos ({args.size} px, {args.steps} steps), `once`\n")
    print(table(["tree", "photos before it", "first claim -> notes.jpg failed (s)", "photos done before it",
                 "first claim -> last photo done (s)"], rows))
    costs = screen_costs(args.out / "costs", args.waiting)
    print("\n## the screen's cost on the main loop (median wall ms)\n")
    print(table(["what", "ms"], costs))
    save_json(args.out, "screen_bad_drop", {"machine": machine(), "runs": rows, "costs": costs})


if __name__ == "__main__":
    main()
