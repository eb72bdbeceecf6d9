"""Is style_strength the same balance at every size? The raw founding weight (1e-5) against style_strength 1.0
(size-aware since rev9a #2: 1e-5 x (400 / long side)^2), side by side in one run, at each size.

Per size and mode: the weighted style/content ratio of the engine's own objective at the start, on one fixed picture
(the photo and the painting blended 50/50, as tests/test_style_balance.py measures it); then the unweighted content
and style losses of the saved result after N L-BFGS steps from the photo; and how far apart the two modes' results
are (mean |diff| of the 8-bit pixels). A size-independent balance keeps the start ratio flat across sizes.

    python -m bench.balance [--sizes 64 128 256 384] [--steps 30]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.common import PAIRS, machine  # noqa: E402
from pipeline.engine import Settings, StyleTransfer, images  # noqa: E402

MODES = {"before (raw 1e-5)": dict(style_weight=1e-5), "after (strength 1.0)": dict(style_strength=1.0)}
JITTER = {"raw 1e-5": dict(style_weight=1e-5), "raw 1.01e-5": dict(style_weight=1.01e-5)}  # --jitter's reference


def start_ratio(engine, photo, painting, settings: Settings) -> float:
    """Weighted style/content of the engine's objective on the photo and the painting blended 50/50."""
    problem, hw = engine.build_loss(photo, [painting], settings)
    mix = Image.blend(images.resize_once(photo, hw), images.resize_once(painting, hw), 0.5)
    with torch.no_grad():
        _, parts = problem.loss(images.to_tensor(mix))
    return float(parts[1]) * problem.loss.weights[1] / (float(parts[0]) * problem.loss.weights[0])


def one(engine, photo, painting, size: int, steps: int, mode: dict) -> dict:
    settings = Settings(size=size, steps=steps, scales=1, early_stop_tol=0, **mode)
    ratio = start_ratio(engine, photo, painting, settings)
    result = engine.stylize(photo, [painting], settings)
    return {"ratio": ratio, "weight": result.style_weight, "content": result.losses["content"],
            "style": result.losses["style"], "pixels": np.asarray(result.image, dtype=float)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 384])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--jitter", action="store_true",
                        help="instead: how far a 1%% change of the raw weight moves the result (L-BFGS's own spread)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    engine = StyleTransfer(device="cpu")
    photo_path, painting_path = PAIRS[0]
    photo, painting = images.load(photo_path), images.load(painting_path)
    print(f"machine: {machine()}")
    print(f"{photo_path.name} x {painting_path.name}, L-BFGS {args.steps} steps from the photo, scales 1, 1 thread\n")
    modes = JITTER if args.jitter else MODES
    names = list(modes)
    print("| size | mode | style_weight | weighted style/content at start | content after | style after |"
          " start ratio vs 64 px | mean abs diff of the two results (0-255) |")
    print("|---|---|---|---|---|---|---|---|")
    first: dict[str, float] = {}
    for size in args.sizes:
        runs = {name: one(engine, photo, painting, size, args.steps, modes[name]) for name in names}
        diff = float(np.abs(runs[names[0]]["pixels"] - runs[names[1]]["pixels"]).mean())
        for name in names:
            r = runs[name]
            first.setdefault(name, r["ratio"])
            print(f"| {size} | {name} | {r['weight']:.3g} | {r['ratio']:.3f} | {r['content']:.4g} | {r['style']:.4g} |"
                  f" {r['ratio'] / first[name]:.2f}x | {diff:.2f} |", flush=True)


if __name__ == "__main__":
    main()
