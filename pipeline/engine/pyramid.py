"""Large prints (issue 14): the style term at the coarser levels' sizes, kept in each finer level's loss.

Why: a level's Gram loss only sees the painting's statistics at its own scale. Each finer level of ``scales: auto``
started from the coarser result and then, free of the coarser scales, drifted off them: the 2048 px print
downscaled to 1024 px read 6.7x the 1024 px result's style term on the H200 (bench/look_levels.py splits it level
by level). Snelgrove's pyramid Gram loss (2017) is the remedy: the finer level's loss also holds the picture shrunk
to each coarser level's size against that level's painting Grams (the same cached targets), so the look at the
coarse scales is kept while the fine level adds its detail. Each term's pass is a quarter of the one above it, and
tiled like any level's where its budget says so.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .losses import StyleLoss

PYRAMID_WEIGHT = 1.0  # each coarser size's style term against the level's own, per unit of style_weight


def shrink(pixels: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The picture at ``hw``, antialiased (as a print is looked at smaller), differentiable."""
    return F.interpolate(pixels.float(), size=hw, mode="bilinear", antialias=True, align_corners=False)


class StyleAt(nn.Module):
    """The style term alone of a picture shrunk to ``hw``: (total, parts) as the levels' losses return them."""

    def __init__(self, vgg: nn.Module, style: StyleLoss, weight: float, hw: tuple[int, int]) -> None:
        super().__init__()
        self.vgg, self.style, self.weight, self.hw = vgg, style, weight, hw

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        style = self.style(self.vgg(shrink(pixels, self.hw), tuple(self.style.used))).sum()
        return self.weight * style, torch.stack([style.new_zeros(()), style.detach(), style.new_zeros(())])


class Shrunk(nn.Module):
    """A tiled loss (tiles.TiledLoss, style only) of the picture shrunk to its plan's size."""

    def __init__(self, loss: nn.Module, hw: tuple[int, int]) -> None:
        super().__init__()
        self.loss, self.hw = loss, hw

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loss(shrink(pixels, self.hw))


class PyramidLoss(nn.Module):
    """The level's own loss plus the style terms at the coarser sizes; their style parts add to its style part,
    so the total stays content_weight * content + style_weight * style + tv_weight * tv."""

    def __init__(self, level: nn.Module, coarser: list[nn.Module]) -> None:
        super().__init__()
        self.level, self.coarser = level, nn.ModuleList(coarser)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total, parts = self.level(pixels)
        for term in self.coarser:
            more, its = term(pixels)
            total, parts = total + more, parts + its
        return total, parts


def coarser_terms(engine, coarser: list[tuple[int, int]], targets_at, settings, style_weight: float,
                  precision: str) -> list[nn.Module]:
    """One style term per coarser level (its size, its painting Grams from ``targets_at(hw)``: the engine's cache),
    tiled where that size's pass would not fit the budget whole."""
    from .levels import tile_plan
    from .tiles import TiledLoss

    weight = PYRAMID_WEIGHT * style_weight
    terms: list[nn.Module] = []
    for hw in coarser:
        targets = targets_at(hw)
        plan = tile_plan(engine, hw, settings, precision)
        if plan is None:
            terms.append(StyleAt(engine.vgg, StyleLoss(targets, settings.layer_weights), weight, hw))
            continue
        none = torch.zeros(1, 512, hw[0] // 8, hw[1] // 8, device=engine.device)  # content weight 0: unused
        terms.append(Shrunk(TiledLoss(engine.vgg, none, targets.grams, settings.layer_weights,
                                      (0.0, weight, 0.0), plan), hw))
    return terms
