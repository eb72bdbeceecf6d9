"""A thin picture's style term under the three ways its painting has been sized (rev10c): stretched to the padded
canvas (before cc339fc), raised to a 16 px short side at the picture's aspect (cc339fc), and at the picture's own
shape padded to the canvas as the picture is (now, the method's scale). For each strip: the painting's working
shape, the unweighted style term of the start (the content) against each sizing's targets, and of each sizing's
result after --steps steps, against its own targets and against now's (the method's).

    .venv/bin/python bench/thin_painting_scale.py --steps 30
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRIPS = [(120, 20), (90, 18), (64, 16)]  # (size, aspect): 6x120, 5x90, 4x64 at their size


def raised(hw: tuple[int, int]) -> tuple[int, int]:
    """cc339fc's shapes.raised: scaled up, its aspect kept, until its short side is 16 px."""
    grow = 16 / min(hw)
    return hw if grow <= 1 else (max(16, round(hw[0] * grow)), max(16, round(hw[1] * grow)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    import torch

    from bench.common import ASSETS, machine, table
    from pipeline.engine import Settings, StyleTransfer, images, shapes

    torch.set_num_threads(1)
    engine = StyleTransfer(device="cpu")
    photo = images.load(ASSETS / "samples" / "coffee.jpg")
    painting = images.load(ASSETS / "styles" / "starry_night.jpg")
    sizings = {"canvas (before cc339fc)": shapes.canvas, "raised (cc339fc)": raised, "own, padded (now)": None}

    def style_term(strip, settings, pixels) -> float:
        """The unweighted style term of ``pixels`` (on the canvas) against the engine's targets as now sized."""
        problem, _ = engine.build_loss(strip, [painting], settings)
        with torch.no_grad():
            return float(problem.loss(pixels)[1][1])

    rows = []
    for size, aspect in STRIPS:
        strip = photo.crop((0, 0, photo.width, photo.width // aspect))
        settings = Settings(size=size, steps=args.steps, scales=1, early_stop_tol=0)
        hw = images.fit_size(strip.size, size)[::-1]
        canvas = shapes.canvas(hw)
        start = images.to_tensor(images.resize_once(strip, hw), "cpu")
        for name, sized in sizings.items():
            if sized:  # an earlier sizing, on this instance only
                engine.painting_hw = lambda style, content_hw, scale, sized=sized: sized(content_hw)
            engine.cache.clear()
            made = engine.painting_hw(painting, hw, 1.0)
            at_start = style_term(strip, settings, shapes.pad(start, canvas))
            result = engine.stylize(strip, [painting], settings)
            own = result.losses["style"]
            engine.__dict__.pop("painting_hw", None)
            engine.cache.clear()
            judged = style_term(strip, settings, shapes.pad(images.to_tensor(result.image, "cpu"), canvas))
            scale = f"{made[0] / hw[0]:.2f} x {made[1] / hw[1]:.2f}"
            rows.append([f"{hw[0]}x{hw[1]}", name, f"{made[0]}x{made[1]}", scale, at_start, own, judged])
    print(f"Thin strips of coffee.jpg with The Starry Night, {args.steps} L-BFGS steps, one level; {machine()}\n")
    print(table(["picture", "painting sized", "painting made at", "stroke scale (h x w)", "style term at start",
                 "result's style term (own targets)", "result's style term (now's targets)"], rows))


if __name__ == "__main__":
    main()
