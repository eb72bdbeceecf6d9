"""What cutting a tile plan once and walking the halo once per network saves (issue 14's tidy), side by side.

    python -m bench.tiles_cache            # a 64x288 strip in 3 tiles, 5 evaluations each way, 1 torch thread

Before, each tiled evaluation cut its plan's tiles twice (once per pass), and every tile plan (each level, each
tiled painting) re-walked VGG19's layers for the halo. The rows: each piece alone (median of many calls), and one
tiled evaluation with its gradient, rounds interleaved, with the plan cut on each pass (before) and once (now).
"""
from __future__ import annotations

import argparse
import time
import timeit

import torch

from bench.common import load_pair, machine, median, table
from pipeline.engine import Settings, StyleTransfer, images, levels, tiles
from pipeline.engine.tiles import TiledLoss, TilePlan, tiled_content
from pipeline.engine.vgg import LAST_INDEX


class Recut(TilePlan):
    """A plan as it was: its tiles cut again on every call."""

    def tiles(self):
        return TilePlan._tiles.func(self)


def per_call(fn, number: int) -> float:
    """Median microseconds of one call, over 7 repeats of ``number`` calls."""
    return median([t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=7)])


def pieces(engine, hw: tuple[int, int]) -> list[list]:
    """The cut, the halo walk and a level's tile_plan, each before and now, in microseconds."""
    rows = []
    for plan in (TilePlan(hw, 96, 80), TilePlan((8192, 8192), 1600, 80)):
        plan.tiles()
        rows.append([f"plan.tiles(), {plan.count} tiles ({plan.hw[0]}x{plan.hw[1]})",
                     per_call(lambda: TilePlan._tiles.func(plan), 2000), per_call(plan.tiles, 2000), "2 per evaluation"])
    features = engine.vgg.features
    rows.append(["halo_for(VGG19 to conv5_1)", per_call(lambda: tiles.reach(features, LAST_INDEX), 2000),
                 per_call(lambda: tiles.halo_for(features, LAST_INDEX), 2000), "1 per level and tiled painting"])
    s = Settings(max_memory="27MB")
    rows.append(["levels.tile_plan (budget, halo, plan)",
                 per_call(lambda: (tiles._HALOS.clear(), levels.tile_plan(engine, hw, s, "fp32")), 300),
                 per_call(lambda: levels.tile_plan(engine, hw, s, "fp32"), 300), "1 per level and tiled painting"])
    return rows


def evaluations(engine, hw: tuple[int, int], rounds: int) -> tuple[float, float]:
    """Median seconds of one tiled evaluation with its gradient: plan re-cut on each pass, and cut once."""
    photo, painting = load_pair(1)
    problem, _ = engine.build_loss(photo.resize(hw[::-1]), [painting], Settings(size=max(hw), scales=1))
    target = tiled_content(engine.vgg, images.to_tensor(photo.resize(hw[::-1])), TilePlan(hw, 96, 80))
    whole = problem.loss
    losses = {name: TiledLoss(engine.vgg, target, whole.style.targets, Settings().layer_weights, whole.weights,
                              kind(hw, 96, 80)) for name, kind in (("before", Recut), ("now", TilePlan))}
    x = images.to_tensor(photo.resize(hw[::-1]))
    times: dict[str, list[float]] = {"before": [], "now": []}
    for _ in range(rounds):
        for name, loss in losses.items():
            var = x.clone().requires_grad_()
            started = time.perf_counter()
            loss(var)[0].backward()
            times[name].append(time.perf_counter() - started)
    return median(times["before"]), median(times["now"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    engine, hw = StyleTransfer(device="cpu"), (64, 288)
    rows = pieces(engine, hw)
    before, now = evaluations(engine, hw, args.rounds)
    print(f"Machine: {machine(with_load=True)}\n")
    print(table(["what", "before (us)", "now (us)", "calls"], [[a, f"{b:.2f}", f"{c:.2f}", d] for a, b, c, d in rows]))
    print()
    print(table(["one tiled evaluation + gradient, 64x288 px, 3 tiles", "before (s)", "now (s)", "now / before"],
                [[f"median of {args.rounds}, interleaved", f"{before:.3f}", f"{now:.3f}", f"{now / before:.4f}"]]))
    saved = 2 * (rows[0][1] - rows[0][2]) / 1e6
    print(f"\nThe cut saved per evaluation (2 cuts of 3 tiles): {saved * 1e6:.1f} us, {saved / now:.2e} of one.")


if __name__ == "__main__":
    main()
