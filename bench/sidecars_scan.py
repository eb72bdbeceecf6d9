"""The unpaired-sidecars check (pipeline/daemon/sidecars.py, run on the daemon's main loop every UNPAIRED_TICK_S)
on one folder of N photos each with its sidecar (rev10c): seconds a call, per tree. Two kinds of folder: each photo
with its own sidecar spelt as it is ("own"), and a Mac's photos (NFD) with sidecars typed here (NFC, "mac"), which
takes sidecar_for's folder-spellings fallback. Each tree runs in its own subprocess (a tree extracted with
`git archive`, and this checkout), one after the other; wall clock, so quote ratios from one run on one box.

    git archive <commit> pipeline | tar -x -C bench/out/tree-old
    .venv/bin/python -m bench.sidecars_scan --trees bench/out/tree-old . --photos 2000 3000
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"own": ("Фото_{i:04d}.jpg", "Фото_{i:04d}.yaml"),
         "mac": (unicodedata.normalize("NFD", "Café_{i:04d}.jpg"), "Café_{i:04d}.yaml")}
TIMED = """
import json, sys, time
from pathlib import Path
from pipeline.daemon.sidecars import unpaired_sidecars
folder, repeat = Path(sys.argv[1]), int(sys.argv[2])
times = []
for _ in range(repeat):
    start = time.perf_counter()
    found = unpaired_sidecars(folder)
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": sorted(times)[len(times) // 2], "unpaired": len(found)}))
"""


def make_folder(folder: Path, kind: str, photos: int) -> None:
    """``photos`` empty photos, each with its sidecar, all older than UNPAIRED_AFTER_S, and one sidecar unpaired."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    old = time.time() - 100
    photo, sidecar = KINDS[kind]
    for name in [n.format(i=i) for i in range(photos) for n in (photo, sidecar)] + ["lost.yaml"]:
        (folder / name).write_bytes(b"recipe: scream\n")
        os.utime(folder / name, (old, old))


def timed(tree: Path, folder: Path, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", TIMED, str(folder), str(repeat)], cwd=tree, env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=Path, nargs="+", default=[ROOT])
    parser.add_argument("--photos", type=int, nargs="+", default=[2000, 3000])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--repeat", type=int, default=3, help="calls per row; the median is shown")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "sidecars_scan")
    args = parser.parse_args()
    rows = []
    for kind in args.kinds:
        for photos in args.photos:
            make_folder(args.out / f"{kind}-{photos}", kind, photos)
            for tree in args.trees:
                got = timed(tree.resolve(), args.out / f"{kind}-{photos}", args.repeat)
                assert got["unpaired"] == 1, f"{tree}: {got['unpaired']} unpaired, not lost.yaml alone"
                rows.append((tree.resolve().name, kind, photos, got["seconds"]))
    print(f"# unpaired_sidecars on one folder of N photos each with its sidecar (and one lost.yaml), median of "
          f"{args.repeat} calls; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| tree | kind | photos | seconds a call |")
    print("|---|---|---:|---:|")
    for tree, kind, photos, seconds in rows:
        print(f"| {tree} | {kind} | {photos:,} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
