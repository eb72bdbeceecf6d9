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

from .losses import StyleLoss

PYRAMID_WEIGHT = 1.0  # each coarser size's style term against the level's own, per unit of style_weight


def shrink(pixels: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The picture at ``hw`` as Pillow's LANCZOS makes it (images.resize_once: how the coarser level's painting
    and photo were resized, and how bench.print looks at a print), differentiable. Why not torch's antialiased
    bilinear: measured (bench/look_levels.py), a print held to the painting's Grams through one filter and judged
    through the other read 0.53x through the first and 4.65x through the second, where the painting has detail at
    the coarser size; the same filter as the targets' leaves nothing between the two to hide in."""
    rows, cols = _taps(pixels.shape[-2], hw[0], pixels.device), _taps(pixels.shape[-1], hw[1], pixels.device)
    across = pixels.float().transpose(-1, -2).contiguous()  # whole rows gathered: 35x faster than along the last dim
    x = _along(across, cols, -2).clamp(0, 255)  # Pillow's order, clipped between its passes (8-bit)
    return _along(x.transpose(-1, -2).contiguous(), rows, -2).clamp(0, 255)


def _along(x: torch.Tensor, taps: tuple[torch.Tensor, torch.Tensor], dim: int) -> torch.Tensor:
    """One axis resampled: each output is its taps' weighted sum (a band, not a dense matrix: 12 taps at 2x)."""
    index, weight = taps
    shape = [1] * x.dim()
    shape[dim] = -1
    out = None
    for k in range(index.shape[1]):
        part = x.index_select(dim, index[:, k]) * weight[:, k].view(shape)
        out = part if out is None else out + part
    return out


def _lanczos(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t.abs() < 3, torch.sinc(t) * torch.sinc(t / 3), torch.zeros_like(t))


def _taps(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's resample coefficients (libImaging/Resample.c, precompute_coeffs) for LANCZOS from n_in to n_out:
    (index, weight), each (n_out, taps); a tap past the edge has weight 0."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = 3.0 * stretch
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    first = (centre - support + 0.5).floor().clamp(min=0)
    last = (centre + support + 0.5).floor().clamp(max=n_in)
    count = int((last - first).max())
    index = first[:, None] + torch.arange(count, dtype=torch.float64)[None, :]
    weight = _lanczos((index - centre[:, None] + 0.5) / stretch) * (index < last[:, None])
    weight = weight / weight.sum(dim=1, keepdim=True)
    return index.clamp(max=n_in - 1).long().to(device), weight.float().to(device)


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
        """Its style part only, as StyleAt's: the tiled loss also reports a content part (against a zero target)
        and a TV part, weighted 0 in the total but added to the level's reported parts, the log's losses."""
        total, parts = self.loss(shrink(pixels, self.hw))
        return total, parts * parts.new_tensor([0.0, 1.0, 0.0])


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


def coarser_passes(coarser: list[tuple[int, int]], precision: str) -> int:
    """The bytes the coarser terms' passes hold beside the finer level's own (their activations live until the
    one backward): the finer level is planned with them reserved, or a print that fitted alone would not."""
    from .memory import pass_bytes

    return sum(pass_bytes(hw, precision) for hw in coarser)


def coarser_terms(engine, coarser: list[tuple[int, int]], targets_at, settings, style_weight: float,
                  precision: str, level_hw: tuple[int, int]) -> list[nn.Module]:
    """One style term per coarser level (its size, its painting Grams from ``targets_at(hw)``: the engine's cache),
    tiled where that size's pass would not fit the budget beside the finer level's whole-picture state."""
    from .levels import tile_plan
    from .memory import state_bytes
    from .tiles import TiledLoss

    weight = PYRAMID_WEIGHT * style_weight
    kept = state_bytes(level_hw[0] * level_hw[1], settings.optimizer, settings.lbfgs_history)
    terms: list[nn.Module] = []
    for hw in coarser:
        targets = targets_at(hw)
        plan = tile_plan(engine, hw, settings, precision, reserve=kept)
        if plan is None:
            terms.append(StyleAt(engine.vgg, StyleLoss(targets, settings.layer_weights), weight, hw))
            continue
        none = torch.zeros(1, 512, hw[0] // 8, hw[1] // 8, device=engine.device)  # content weight 0: unused
        terms.append(Shrunk(TiledLoss(engine.vgg, none, targets.grams, settings.layer_weights,
                                      (0.0, weight, 0.0), plan), hw))
    return terms
