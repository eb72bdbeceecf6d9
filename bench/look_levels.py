"""The look at print scale (issue 14), level by level, at a reduced scale a 2-core CPU can run.

    python -m bench.look_levels --judge 256 --assets small     # the GPU's 2048 px case, scaled by 1/4
    python -m bench.look_levels --judge 256 --assets native

The GPU's `bench.print` judges a 2048 px print downscaled to 1024 px against a 1024 px single-scale result (150
steps), and auto walks 512-1024-2048 with 150/75/37 steps. Here everything is divided by 1024/J: the judge and the
reference at J px, the print at 2J px through J/2-J-2J with the same steps (auto's rule, its size thresholds
scaled). ``--assets small`` also shrinks the photo and the painting by the same factor, so each is upsampled as much
at each level as on the GPU (the painting is 512x320: 4x at a 2048 px print); ``native`` keeps them whole.

Printed: the look (the style term at J px over the reference's) after each level (the finest downscaled to J with
LANCZOS, as bench.print does), with each VGG layer's share, beside controls that need no run: the photo unstyled,
and the reference itself upscaled to 2J and back (what the measure's two resizes alone cost).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.common import ASSETS, ROOT

OUT = ROOT / "bench" / "out" / "look"
CONTENT = ASSETS / "samples" / "astronaut.jpg"
STYLE = ASSETS / "styles" / "starry_night.jpg"


def pictures(assets: str, judge: int):
    """(photo, painting): whole, or shrunk by judge/1024 (each then upsampled as much as on the GPU)."""
    from pipeline.engine import images

    photo, painting = images.load(CONTENT), images.load(STYLE)
    if assets == "small":
        f = judge / 1024
        photo, painting = (p.resize((round(p.width * f), round(p.height * f)), images.Image.Resampling.LANCZOS)
                           for p in (photo, painting))
    return photo, painting


class Judge:
    """The engine's own style term at ``size`` px against the photo and painting, split by layer."""

    def __init__(self, engine, photo, painting, size: int) -> None:
        from pipeline.engine import Settings

        self.engine = engine
        problem, self.hw = engine.build_loss(photo, [painting], Settings(size=size, scales=1))
        self.style = problem.loss.style

    def __call__(self, picture) -> dict[str, float]:
        from pipeline.engine import images
        from pipeline.engine.losses import gram, style_term

        x = images.to_tensor(images.resize_once(picture, self.hw))
        with torch.no_grad():
            feats = self.engine.vgg(x, tuple(self.style.used))
            parts = {k: float(style_term({k: gram(f)}, self.style.targets, {k: self.style.used[k]},
                                         {k: f.shape[-2] * f.shape[-1]})) for k, f in feats.items()}
        return {"style": sum(parts.values()), **parts}


def stylize(engine, photo, painting, size: int, steps: int, scales, keep: bool = False):
    """A result, and (keep) each level's last pixels as pictures."""
    from pipeline.engine import Settings, images

    seen: dict[int, torch.Tensor] = {}

    def listener(info) -> None:
        seen[info.scale] = info.pixels.detach().clone()

    result = engine.stylize(photo.resize((size, size), images.Image.Resampling.BICUBIC), [painting],
                            Settings(size=size, steps=steps, scales=scales, early_stop_tol=0),
                            listeners=[listener] if keep else [])
    return result, {k: images.to_image(v) for k, v in sorted(seen.items())}


def auto_like(judge: int):
    """auto's rule with its thresholds scaled by judge/1024: levels J/2-J-2J for a 2J print."""
    from pipeline.engine import levels

    levels.SINGLE_MAX, levels.COARSE_MAX = judge // 2, judge * 3 // 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", type=int, default=256)
    parser.add_argument("--assets", choices=["native", "small"], default="small")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--pyramid", choices=["on", "off"], default="on",
                        help="off: the finer levels without the coarser sizes' style terms (before the fix)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from pipeline.engine import StyleTransfer, images

    engine = StyleTransfer(device="cpu")
    photo, painting = pictures(args.assets, args.judge)
    judge = Judge(engine, photo, painting, args.judge)
    OUT.mkdir(parents=True, exist_ok=True)
    ref_path = OUT / f"ref-{args.assets}-{args.judge}-{args.steps}.png"
    if not ref_path.exists():
        stylize(engine, photo, painting, args.judge, args.steps, 1)[0].image.save(ref_path)
    reference = images.load(ref_path)
    base = judge(reference)["style"]

    def row(name: str, picture) -> None:
        scores = judge(picture)
        print(json.dumps({"what": name, "look": round(scores["style"] / base, 3),
                          **{k: round(v / base, 3) for k, v in scores.items() if k != "style"}}), flush=True)

    row("reference", reference)
    row("photo unstyled", photo.resize((args.judge, args.judge), images.Image.Resampling.BICUBIC))
    up = reference.resize((2 * args.judge,) * 2, images.Image.Resampling.BICUBIC)
    row("reference up 2x and back", up)
    auto_like(args.judge)
    if args.pyramid == "off":
        from pipeline.engine import transfer

        transfer.coarser_terms = lambda *a, **k: []
    started = time.perf_counter()
    result, levels = stylize(engine, photo, painting, 2 * args.judge, args.steps, "auto", keep=True)
    for index, picture in levels.items():
        row(f"print after level {index} ({picture.width} px)", picture)
    print(json.dumps({"levels": [max(s) for s in result.scales], "steps": result.steps,
                      "wall_s": round(time.perf_counter() - started, 1)}), flush=True)
    result.image.save(OUT / f"print-{args.assets}-{args.judge}-{args.steps}-{args.pyramid}.png")


if __name__ == "__main__":
    main()
