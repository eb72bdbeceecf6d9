"""Large prints (issue 14): where a print's time goes, level by level, and one evaluation taken apart.

    python -m bench.print_levels                              # the CPU analog, three plans side by side
    python -m bench.print_levels --plans 4096                 # the planner's arithmetic at the GPU's sizes

Why: on the H200 (2026-11-28) the 4096 px auto print, 21.8 s before the pyramid Gram loss (pyramid.py), did not
finish in 300 s with it. bench/print.py gave one wall time per print; :class:`Levels` (a listener it now passes)
splits it per level: wall, steps, loss evaluations, tiles, L-BFGS history, and on CUDA the level's peak.

The analog here: auto's thresholds scaled down 16x (SINGLE_MAX 64, COARSE_MAX 48) so that 256 px walks
32-64-128-256 as 4096 px walks 512-1024-2048-4096, under a budget (250 MB) the top level fits whole beside the terms'
gradient but not beside their passes (as the H200's 2048 px auto print was tiled). The halo (80 px) does not
scale, so tiles cost relatively more here than on the GPU. Three runs, one process, side by side:
- ``reserve: terms' passes``: the planner as before this fix (the coarser terms' passes reserved beside the level,
  each term planned with the level's state and its own, floor a quarter of the budget);
- ``reserve: their gradient``: as now (the terms run with their backward first; only their gradient stays);
- ``no pyramid``: the coarser terms off (the print as before issue 14's look fix).
Each row: the level's wall, its steps and evaluations, its tiles and history; then one evaluation at the top level
split into the level's own loss and each coarser term (forward and backward each).
"""
from __future__ import annotations

import argparse
import importlib
import json
import time
from contextlib import ExitStack
from unittest import mock


class Levels:
    """A listener (StyleTransfer.stylize(listeners=...)): per level, its wall (from the previous level's last step to
    its own last: its set-up included), steps, loss evaluations and tiles; on CUDA the level's peak allocation (the
    peak is read and reset at each step, so what comes before a level's first step, its set-up, counts as its own)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._last = (0.0, 0)  # elapsed and evaluations at the previous level's last step

    def __call__(self, info) -> None:
        if not self.rows or self.rows[-1]["scale"] != info.scale:
            if self.rows:
                self._last = self.rows[-1]["_end"]
            self.rows.append({"scale": info.scale, "level": max(info.size), "steps": 0, "tiles": info.tiles})
        row = self.rows[-1]
        row["steps"] += 1
        row["wall_s"] = round(info.elapsed - self._last[0], 2)
        row["evaluations"] = info.evaluations - self._last[1]
        row["_end"] = (info.elapsed, info.evaluations)
        if info.pixels is not None and info.pixels.is_cuda:
            import torch

            row["peak_gib"] = max(row.get("peak_gib", 0.0), round(torch.cuda.max_memory_allocated() / 2 ** 30, 2))
            torch.cuda.reset_peak_memory_stats()

    def report(self) -> list[dict]:
        return [{k: v for k, v in row.items() if k not in ("scale", "_end")} for row in self.rows]


def old_planner():
    """The planner before this fix, for the side-by-side rows: the terms' passes reserved beside the level, and
    each term planned as a level (its own optimiser state counted), beside the level's full-history state."""
    from pipeline.engine import levels, memory

    pyramid = importlib.import_module("pipeline.engine.pyramid")

    def reserve(level_hw):  # what coarser_passes reserved: every coarser level's whole pass
        return sum(memory.pass_bytes(c, "fp32") for c in total_levels if max(c) < max(level_hw))

    total_levels: list = []

    def term_plan(engine, hw, settings, precision, level_hw, level_plan=None):
        kept = memory.state_bytes(level_hw[0] * level_hw[1], settings.optimizer, settings.lbfgs_history)
        return levels.tile_plan(engine, hw, settings, precision, reserve=kept)

    return total_levels, [mock.patch("pipeline.engine.transfer.coarser_reserve", reserve),
                          mock.patch.object(pyramid, "term_plan", term_plan)]


def run(engine, content, style, settings, variant: str) -> dict:
    """One print under ``variant``: its per-level rows and one top-level evaluation split into its parts."""
    from pipeline.engine import levels

    with ExitStack() as stack:
        if variant == "old":
            found, patches = old_planner()
            found.extend(levels.levels((settings.size, settings.size), settings)[0])
            for p in patches:
                stack.enter_context(p)
        if variant == "off":
            stack.enter_context(mock.patch("pipeline.engine.transfer.coarser_terms", lambda *a, **k: []))
        clock = Levels()
        started = time.perf_counter()
        result = engine.stylize(content, [style], settings, listeners=[clock])
        wall = time.perf_counter() - started
        problem, hw = engine.build_loss(content, [style], settings)
        parts = split(problem, result.image.resize(hw[::-1]))
    return {"variant": variant, "wall_s": round(wall, 1), "levels": clock.report(), "tiles": result.tiles,
            "evaluation": parts}


def split(problem, picture) -> dict:
    """One evaluation at the top level, taken apart: the level's own loss and each coarser term, each forward and
    backward, in seconds; and each one's tiles (1: whole)."""
    from pipeline.engine import images

    x = images.to_tensor(picture)
    loss = problem.loss
    pieces = [("level", getattr(loss, "level", loss))] + [
        (f"term {max(term.hw)}", term) for term in getattr(loss, "coarser", [])]
    out = {}
    for name, module in pieces:
        pixels = x.clone().requires_grad_()
        started = time.perf_counter()
        value, _ = module(pixels)
        value.backward()
        plan = getattr(module, "plan", None) or getattr(getattr(module, "loss", None), "plan", None)
        out[name] = {"s": round(time.perf_counter() - started, 2), "tiles": plan.count if plan else 1}
    return out


def table(rows: list[dict]) -> str:
    lines = ["| plan | print wall s | level | level wall s | steps | evaluations | tiles | history |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for i, level in enumerate(r["levels"]):
            plan = next((p for k, p in r["tiles"].items() if int(k) == i), None)
            lines.append(f"| {NAMES[r['variant']]} | {r['wall_s'] if i == 0 else ''} | {level['level']} | "
                         f"{level['wall_s']} | {level['steps']} | {level['evaluations']} | {level['tiles']} | "
                         f"{(plan or {}).get('history', '-') if plan else '-'} |")
    lines += ["", "| plan | one top-level evaluation: " + " / ".join(rows[0]["evaluation"]) + " |", "|---|---|"]
    for r in rows:
        cells = ", ".join(f"{k} {v['s']} s ({v['tiles']} tiles)" for k, v in r["evaluation"].items())
        lines.append(f"| {NAMES[r['variant']]} | {cells} |")
    return "\n".join(lines)


def plans(size: int, budgets_gib: list[float]) -> str:
    """The planner's arithmetic at the GPU's sizes (no tensors): the top level's tiles and history, and each
    coarser term's tiles, before and after this fix, at budgets a 20 GiB cap leaves once the allocator's cache of
    the levels before (counted as taken before this fix: memory.cuda_free) is off it."""
    from types import SimpleNamespace

    import torch

    from pipeline.engine import Settings, levels, tiles

    pyramid = importlib.import_module("pipeline.engine.pyramid")
    engine = SimpleNamespace(device=torch.device("cpu"), vgg=SimpleNamespace(features=None))
    lines = [f"{size} px auto, fp32/tf32 (3.1 KB/px), halo 80 px", "",
             "| budget | plan | top level: tiles, core, history | coarser terms' tiles (px: tiles) |", "|---|---|---|---|"]
    with mock.patch.object(levels, "halo_for", lambda features, last: 80):
        for gib in budgets_gib:
            settings = Settings(size=size, max_memory=f"{int(gib * 2 ** 30)}B")
            found = levels.levels((size, size), settings)[0]
            for variant in ("old", "new"):
                with ExitStack() as stack:
                    term_plan, reserve = pyramid.term_plan, pyramid.coarser_reserve
                    if variant == "old":
                        _, patches = old_planner()
                        _.extend(found)
                        stack.enter_context(patches[1])
                        reserve = patches[0].new
                        term_plan = pyramid.term_plan
                    top = levels.tile_plan(engine, found[-1], settings, "fp32", reserve(found[-1]))
                    terms = [term_plan(engine, hw, settings, "fp32", found[-1], top) for hw in found[:-1]]
                cut = f"{top.count}, {top.core} px, {top.history or settings.lbfgs_history}" if top else "whole"
                cells = ", ".join(f"{max(hw)}: {t.count if t else 1}" for hw, t in zip(found, terms))
                lines.append(f"| {gib:g} GiB | {NAMES[variant]} | {cut} | {cells} |")
    assert tiles  # (the plans are tiles.TilePlan)
    return "\n".join(lines)


NAMES = {"old": "reserve: terms' passes (before)", "new": "reserve: their gradient (now)", "off": "no pyramid"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--max-memory", default="250MB")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["old", "new", "off"], choices=sorted(NAMES))
    parser.add_argument("--plans", type=int, metavar="SIZE", help="only the planner's arithmetic at this size")
    args = parser.parse_args()
    if args.plans:
        print(plans(args.plans, [20, 14, 10, 7]))
        return
    import torch

    from bench.common import ASSETS  # not bench.print's names: print.py imports Levels from here
    from pipeline.engine import Settings, StyleTransfer, images, levels

    torch.set_num_threads(args.threads)
    levels.SINGLE_MAX, levels.COARSE_MAX = 64, 48  # the analog: 4 levels at 256 px, as 4096 px walks
    engine = StyleTransfer(device="cpu")
    photo, painting = ASSETS / "samples" / "astronaut.jpg", ASSETS / "styles" / "starry_night.jpg"  # as bench.print
    content = images.load(photo).resize((args.size, args.size), images.Image.Resampling.BICUBIC)
    settings = Settings(size=args.size, steps=args.steps, max_memory=args.max_memory, early_stop_tol=0)
    rows = []
    for variant in args.variants:
        rows.append(run(engine, content, images.load(painting), settings, variant))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nMachine: CPU, {torch.get_num_threads()} threads; {args.size} px auto (levels "
          f"{'-'.join(str(r['level']) for r in rows[0]['levels'])}), {args.steps} steps, max_memory "
          f"{args.max_memory}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
