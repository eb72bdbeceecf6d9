"""style_strength means the same style/content balance at every size of a given shape (rev9a #2; per shape: rev9g #2).

Before the fix it grew ~4x per doubling of the size.

The style term is sum_l w_l mean((G_T - G_S)^2) / (C*H*W) with G = F F^T a SUM over the H*W positions: G grows
with H*W, its squared error with (H*W)^2, so the term grows linearly with the pixel count, while the content term
(a mean) does not. style_strength 1.0 maps to a fixed 1e-5 at every size (settings.py says it was measured at
192 px; the notebook ran at 400 px), so the same recipe weighs the painting ~7x more at 1024 px than at the shipped
384 px, and a sidecar's `size:` silently changes the look's balance.

Measured on one fixed picture (the photo and the painting blended 50/50), the weighted style/content ratio of the
engine's own objective at 64 px and at 128 px: 0.15 and 0.48 (2-core box); 2.23 at 256 px. A calibrated balance
keeps it (within 1.5x here). Now style_strength's weight is 1e-5 x (400 / long side)^2 (settings.CALIBRATION_SIDE),
and a raw style_weight stays the founding formula's, unscaled (so it keeps the old growth: checked below, so that the
measure is known to see it).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.engine import Settings, images
from pipeline.engine.settings import preset

pytestmark = pytest.mark.usefixtures("torch_threads")

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "assets" / "samples"


def _balance(engine, photo, painting, size: int, **settings) -> float:
    problem, hw = engine.build_loss(photo, [painting], Settings(size=size, **settings))
    mix = Image.blend(images.resize_once(photo, hw), images.resize_once(painting, hw), 0.5)
    with torch.no_grad():
        _, parts = problem.loss(images.to_tensor(mix))
    return float(parts[1]) * problem.loss.weights[1] / (float(parts[0]) * problem.loss.weights[0])


def test_style_strength_means_the_same_balance_at_64_and_128_px(engine, style):
    photo = images.load(SAMPLES / "coffee.jpg")
    small, large = _balance(engine, photo, style, 64), _balance(engine, photo, style, 128)
    print(f"weighted style/content on the same 50/50 picture: 64 px {small:.3f}, 128 px {large:.3f} "
          f"({large / small:.2f}x)")
    assert large / small < 1.5, (f"doubling the size made the style term weigh {large / small:.2f}x more against "
                                 "the content at the same style_strength")



def test_a_raw_style_weight_keeps_the_founding_formula_and_the_seed_preset_the_notebooks_weight(engine, style):
    """The raw style_weight is not scaled (its balance still grows with the size: the measure above sees it), and
    at the notebook's 400 px style_strength 1 is exactly 1e-5: `--preset seed` (400 px, one level) is the notebook."""
    photo = images.load(SAMPLES / "coffee.jpg")
    small, large = (_balance(engine, photo, style, size, style_weight=1e-5) for size in (64, 128))
    assert large / small > 2.5, f"a raw style_weight's balance is the founding formula's: {large / small:.2f}x"
    seed = engine.stylize(photo, [style], preset("seed", steps=1))
    assert max(seed.image.size) == 400 and seed.style_weight == 1e-5 and seed.log()["style_weights"] == [1e-5]
    shipped = Settings(size=384).resolved_style_weight("caffe", 384)
    assert shipped == pytest.approx(1e-5 * 1.085, rel=1e-3)  # the shipped 384 px default barely moves


def _tiled(tile: Image.Image, across: int, down: int) -> Image.Image:
    """``across`` x ``down`` copies of ``tile``: every part of it has the tile's own statistics."""
    out = Image.new("RGB", (across * tile.width, down * tile.height))
    for k in range(across * down):
        out.paste(tile, ((k % across) * tile.width, (k // across) * tile.height))
    return out


def test_per_shape_a_4_to_1_strip_weighs_the_painting_a_quarter_of_a_square_of_the_same_long_side(engine, style):
    """README "Balance": the balance is the same at every size FOR A GIVEN SHAPE. The weight follows the long side
    (1.0 is exactly the notebook's 1e-5 at its 400 px, whatever the aspect), while the style term grows with the pixel
    count, so, as in the notebook, a wider picture of the same long side has a lighter style term (rev9g #2, kept by
    the lead's decision). Clean comparison: a 32 px square of the photo and of the painting, tiled 4x4 (128x128) and
    4x1 (128x32): the same per-position statistics, a quarter of the pixels, the same long side, so the same weight.
    Pixel-count scaling (neural-style's shape-independence) would give ~1 here; the long-side rule gives ~0.25."""
    photo = images.load(SAMPLES / "coffee.jpg")
    tiles = [images.resize_once(_square(picture), (32, 32)) for picture in (photo, style)]
    square = _balance(engine, *(_tiled(t, 4, 4) for t in tiles), 128)
    strip = _balance(engine, *(_tiled(t, 4, 1) for t in tiles), 128)
    print(f"weighted style/content at 128 px long side: square {square:.3f}, 4:1 strip {strip:.3f} "
          f"({strip / square:.2f}x)")
    assert 0.17 < strip / square < 0.35, f"a 4:1 strip against a square of the same long side: {strip / square:.2f}x"


def _square(img: Image.Image) -> Image.Image:
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))
