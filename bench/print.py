"""Large prints (issue 14): peak memory, wall time, the look at print scale and seams, as one table.

    python -m bench.print                      # the GPU set (2048, 4096, 8192 under a 24 GB emulated card)
    python -m bench.print --device cpu --sizes 2048 --steps 3 --max-memory 2GiB
    python -m bench.print --seams 40           # tiled (one loss) against hand-cut tiles styled one by one
    python -m bench.print --evaluate 1024 2048 --max-memory 4GiB   # one loss evaluation each (a slow CPU)

Each case runs in its own process, so its peak memory is its own: ru_maxrss on the CPU, and on CUDA
max_memory_allocated under torch.cuda.set_per_process_memory_fraction (a 24 GB card emulated on a bigger one).
The look: the result downscaled to 1024 px, scored by the engine's own Gram loss against the photo and painting
at 1024 px; the ratio is its style term over the 1024 px single-scale result's (target <= 1.3). Seams: the mean
pixel-gradient magnitude on the tiles' core borders over the whole picture's (target <= 1.1). Each row's JSON also
says where its time went, level by level (``per_level``: wall, steps, loss evaluations, tiles; on CUDA the level's
peak), and the table's last column sums it up.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ASSETS
from bench.print_levels import Levels

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ASSETS / "samples" / "astronaut.jpg"
STYLE = ASSETS / "styles" / "starry_night.jpg"
OUT = Path(os.environ.get("BENCH_PRINT_OUT") or ROOT / "bench/out/print")  # the results (children inherit it)
CARD = 24e9  # the emulated card


def one(size: int, scales: str, steps: int, device: str, max_memory: str | None) -> dict:
    """One run, in this process: the numbers of one table row, and the result saved for the look."""
    import torch

    from pipeline.engine import Settings, StyleTransfer, images

    if device == "cuda":
        torch.cuda.set_per_process_memory_fraction(min(1.0, CARD / torch.cuda.get_device_properties(0).total_memory))
        torch.cuda.reset_peak_memory_stats()
    engine = StyleTransfer(device=device)
    content, style = images.load(CONTENT), images.load(STYLE)
    content = content.resize((size, size), images.Image.Resampling.BICUBIC)  # the photo upscaled to print size
    levels, _, coarse = scales.partition("/")  # "auto", "1", or "3/20": 3 levels, 20 steps at each coarser one
    settings = Settings(size=size, steps=steps, scales="auto" if levels == "auto" else int(levels),
                        max_memory=max_memory, early_stop_tol=0,
                        coarse_steps=int(coarse) if coarse else None)  # unset: auto's own rule (rev9a #4)
    clock = Levels()  # where the time went, level by level (bench/print_levels.py)
    started = time.perf_counter()
    result = engine.stylize(content, [style], settings, listeners=[clock])
    wall = time.perf_counter() - started
    if device == "cuda":
        peak = max([torch.cuda.max_memory_allocated() / 2 ** 30] + [r.get("peak_gib", 0) for r in clock.report()])
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{device}-{size}-{scales.replace('/', 'c')}.png"
    result.image.save(path)
    return {"size": size, "scales": scales, "levels": [max(s) for s in result.scales], "steps": result.steps,
            "device": device, "wall_s": round(wall, 1), "peak_gib": round(peak, 2), "tiles": result.tiles,
            "path": str(path), "per_level": clock.report(), "precision": result.precision}


def evaluate(size: int, max_memory: str | None) -> dict:
    """One loss evaluation with its gradient at print size, as a run's level does it (tiled where the budget
    says): for a CPU too slow for whole runs at these sizes. Targets (painting, photo) are made first."""
    import torch

    from pipeline.engine import Settings, StyleTransfer, images

    engine = StyleTransfer(device="cpu")
    content = images.load(CONTENT).resize((size, size), images.Image.Resampling.BICUBIC)
    started = time.perf_counter()
    problem, hw = engine.build_loss(content, [images.load(STYLE)], Settings(size=size, scales=1,
                                                                             max_memory=max_memory))
    built = time.perf_counter() - started
    x = images.to_tensor(content).requires_grad_()
    started = time.perf_counter()
    loss, _ = problem(x)
    loss.backward()
    tiles = getattr(problem.loss, "plan", None)
    return {"size": size, "max_memory": max_memory, "targets_s": round(built, 1),
            "evaluation_s": round(time.perf_counter() - started, 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
            "tiles": tiles.to_dict() if tiles else None, "threads": torch.get_num_threads()}


@functools.lru_cache(maxsize=2)
def judge(size: int):
    """The judge's loss at ``size`` px (photo and painting), built once per run."""
    from pipeline.engine import Settings, StyleTransfer, images

    engine = StyleTransfer(device="cpu")
    return engine.build_loss(images.load(CONTENT), [images.load(STYLE)], Settings(size=size, scales=1))


@functools.lru_cache(maxsize=None)
def style_term(path: str, size: int) -> float:
    """The style term of a result downscaled to ``size`` px (1024: the look at print scale)."""
    import torch

    from pipeline.engine import images

    problem, hw = judge(size)
    with torch.no_grad():
        _, parts = problem.loss(images.to_tensor(images.resize_once(images.load(path), hw)))
    return float(parts[1])


def look(path: str, reference: str | None, size: int = 1024) -> dict:
    """The style terms of a result and of the reference, each downscaled to ``size`` px."""
    return {name: style_term(p, size) for name, p in (("result", path), ("reference", reference)) if p}


def seams(path: str, tiles: dict) -> float | None:
    """Mean |pixel gradient| on the core borders of the finest tiled level, over the picture's mean."""
    if not tiles:
        return None
    import numpy as np
    from PIL import Image

    from pipeline.engine.tiles import TilePlan

    plan = TilePlan.from_dict(tiles[max(tiles, key=int)])  # the plan's own borders: a merged last sliver has none
    px = np.asarray(Image.open(path).convert("RGB").resize(plan.hw[::-1]), dtype=np.float64)
    rows, cols = plan.borders()
    return seams_at(px, cols, rows)


def seams_at(px, cols: list[int], rows: list[int]) -> float:
    """Mean |pixel step| across the given column and row borders, each over the picture's mean step in its own
    direction (a column border against horizontal steps, a row border against vertical ones): a picture with
    stronger vertical than horizontal detail then reads 1.0 at borders that are no seams, in either axis."""
    import numpy as np

    gx = np.abs(np.diff(px, axis=1)).sum(-1)
    gy = np.abs(np.diff(px, axis=0)).sum(-1)
    border = np.concatenate([gx[:, [c - 1 for c in cols]].ravel() / gx.mean(),
                             gy[[r - 1 for r in rows], :].ravel() / gy.mean()])
    return float(border.mean())


def demo_strip(hw: tuple[int, int]):
    """The seams demo's picture: a band across the astronaut photo, at ``hw``."""
    from PIL import Image

    from pipeline.engine import images

    photo = images.load(CONTENT)
    strip = photo.crop((0, photo.height // 3, photo.width, photo.height // 3 + photo.width * hw[0] // hw[1]))
    return strip.resize(hw[::-1], Image.Resampling.LANCZOS)


def photo_seams(hw: tuple[int, int] = (96, 288), pieces: int = 3) -> dict:
    """The demo's strip unstyled, at the hand cut's columns: what the picture's own content reads there."""
    import numpy as np

    columns = [i * hw[1] // pieces for i in range(1, pieces)]
    return {"size": list(hw), "columns": columns,
            "seams_photo": round(seams_at(np.asarray(demo_strip(hw), dtype=np.float64), columns, []), 3)}


def seams_demo(steps: int, hw: tuple[int, int] = (96, 288), pieces: int = 3, budget: str = "94MB") -> dict:
    """A strip styled as one tiled loss, and as hand-cut tiles styled one by one and pasted (neural-style's
    scripts, without their blending): the seams ratio of each, and the picture for the README."""
    import numpy as np
    from PIL import Image

    from pipeline.engine import Settings, StyleTransfer, images
    from pipeline.engine.tiles import TilePlan

    engine = StyleTransfer(device="cpu")
    strip, style = demo_strip(hw), images.load(STYLE)
    base = Settings(size=max(hw), steps=steps, scales=1, early_stop_tol=0)
    ours = engine.stylize(strip, [style], base.replace(max_memory=budget))  # 3 tiles, 96 px cores: the hand cut's
    width = hw[1] // pieces
    hand = Image.new("RGB", hw[::-1])
    for i in range(pieces):
        piece = strip.crop((i * width, 0, (i + 1) * width, hw[0]))
        hand.paste(engine.stylize(piece, [style], base.replace(size=max(width, hw[0]))).image, (i * width, 0))
    plan = ours.tiles[0]
    ours_rows, ours_cols = TilePlan.from_dict(plan).borders()
    hand_cols = [i * width for i in range(1, pieces)]
    picture = Image.new("RGB", (hw[1], 2 * hw[0] + 8), "white")
    picture.paste(ours.image, (0, 0))
    picture.paste(hand, (0, hw[0] + 8))
    OUT.mkdir(parents=True, exist_ok=True)
    picture.save(OUT / "seams.jpg", quality=85)
    as_array = lambda im: np.asarray(im, dtype=np.float64)  # noqa: E731
    return {"steps": steps, "size": list(hw), "tiles": plan, "hand_cut_pieces": pieces,
            "seams_tiled": round(seams_at(as_array(ours.image), ours_cols, ours_rows), 3),
            "seams_tiled_at_hand_cut_borders": round(seams_at(as_array(ours.image), hand_cols, []), 3),
            "seams_hand_cut": round(seams_at(as_array(hand), hand_cols, []), 3),
            "style_tiled": ours.losses["style"]}


def table(rows: list[dict], machine: str) -> str:
    head = ("| size | scales (levels) | steps | device | wall | peak | tiles (finest) | look: style / 1024 px's "
            "| seams | per level: px wall s (evaluations, tiles) |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"Machine: {machine}", "", head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['scales']} | | {r['device']} | failed: {r['error']} | | | | | |")
            continue
        tiles = r["tiles"][max(r["tiles"], key=int)]["tiles"] if r["tiles"] else 1
        ratio = f"{r['look']:.2f}x" if r.get("look") is not None else "-"
        seam = f"{r['seams']:.2f}" if r.get("seams") is not None else "-"
        lines.append(f"| {r['size']} | {r['scales']} ({'-'.join(map(str, r['levels']))}) | {r['steps']} | "
                     f"{r['device']} | {r['wall_s']} s | {r['peak_gib']} GiB | {tiles} | {ratio} | {seam} | "
                     f"{per_level(r.get('per_level'))} |")
    return "\n".join(lines)


def per_level(rows: list[dict] | None) -> str:
    """Where a print's time went: each level's px, wall, evaluations and tiles (bench/print_levels.Levels)."""
    return "; ".join(f"{r['level']}: {r['wall_s']} ({r['evaluations']}, {r['tiles']})" for r in rows or []) or "-"


def child(*args: str) -> dict:
    """One case in its own process; a failed one (out of memory, say) is a row that says so, not the end."""
    out = subprocess.run([sys.executable, "-m", "bench.print", "--one", *args], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]
        return {"size": int(args[0]), "scales": args[1], "device": args[3], "error": last[-200:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def scored(r: dict, ref: dict, size: int) -> dict:
    """The row with its look and seams, printed at once (stderr, one JSON line) so a run cut short keeps it."""
    if "error" not in r and "error" not in ref:
        scores = look(r["path"], ref["path"], size)
        r["look"] = scores["result"] / scores["reference"]
        r["seams"] = seams(r["path"], r["tiles"])
    print(json.dumps(r), file=sys.stderr, flush=True)
    return r


def cases(args) -> list[tuple[int, str, int]]:
    """(size, scales, steps) in the order they run: smallest size first, at each the runs under test before
    today's single scale beside them. A run cut short (a lent GPU's budget) then loses the largest size (8192 px,
    the longest by far), not the single-scale rows the look is compared against."""
    found = [(size, scales, args.steps) for size in args.sizes for scales in args.scales]
    if args.single:
        found += [(size, "1", args.single_steps or args.steps) for size in args.single_sizes or args.sizes]
    return sorted(found, key=lambda case: case[0])  # stable: at each size, the order above


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--max-memory", default=None)
    parser.add_argument("--single", action="store_true", help="also run single scale at each size")
    parser.add_argument("--scales", nargs="+", default=["auto"],
                        help="the runs at each size: auto, a number of levels, or N/C (N levels, C steps at each "
                             "coarser one and --steps at the last: a slow CPU's short schedule)")
    parser.add_argument("--single-steps", type=int, help="single scale's steps (default --steps): equal wall time")
    parser.add_argument("--reference-steps", type=int, help="the 1024 px reference's steps (default --steps)")
    parser.add_argument("--look-size", type=int, default=1024, help="the reference's and the judge's size")
    parser.add_argument("--single-sizes", type=int, nargs="+", help="where --single runs (default: every size)")
    parser.add_argument("--machine", default="")
    parser.add_argument("--evaluate", type=int, nargs="+", metavar="SIZE", help="one evaluation at each size")
    parser.add_argument("--seams", type=int, metavar="STEPS", help="only the seams demo, with this many steps")
    parser.add_argument("--photo-seams", action="store_true", help="only the demo's strip unstyled (seconds)")
    parser.add_argument("--one", nargs=5, metavar=("SIZE", "SCALES", "STEPS", "DEVICE", "MAXMEM"))
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    if args.one:
        size, scales, steps, device, mem = args.one
        print(json.dumps(one(int(size), scales, int(steps), device, None if mem == "-" else mem)))
        return
    if args.evaluate and len(args.evaluate) == 1:  # the child: one size, one process
        print(json.dumps(evaluate(args.evaluate[0], args.max_memory)))
        return
    if args.evaluate:
        for size in args.evaluate:
            extra = ["--max-memory", args.max_memory] if args.max_memory else []
            out = subprocess.run([sys.executable, "-m", "bench.print", "--evaluate", str(size), *extra], cwd=ROOT,
                                 capture_output=True, text=True, check=True)
            print(out.stdout.strip().splitlines()[-1], flush=True)
        return
    if args.photo_seams:
        print(json.dumps(photo_seams()))
        return
    if args.seams:
        print(json.dumps(seams_demo(args.seams)))
        return
    mem = args.max_memory or "-"
    ref = child(str(args.look_size), "1", str(args.reference_steps or args.steps), args.device, "-")
    rows = [scored(ref, ref, args.look_size)]
    for size, scales, steps in cases(args):
        rows.append(scored(child(str(size), scales, str(steps), args.device, mem), ref, args.look_size))
    print(table(rows, args.machine or args.device))


if __name__ == "__main__":
    main()
