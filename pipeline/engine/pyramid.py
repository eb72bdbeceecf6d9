"""Large prints (issue 14): the style term at the coarser levels' sizes, kept in each finer level's loss.

Why: a level's Gram loss only sees the painting's statistics at its own scale. Each finer level of ``scales: auto``
started from the coarser result and then, free of the coarser scales, drifted off them: the 2048 px print
downscaled to 1024 px read 6.7x the 1024 px result's style term on the H200 (bench/look_levels.py splits it level
by level). Snelgrove's pyramid Gram loss (2017) is the remedy: the finer level's loss also holds the picture shrunk
to each coarser level's size against that level's painting Grams (the same cached targets), so the look at the
coarse scales is kept while the fine level adds its detail. Each term's pass is a quarter of the one above it, run
with its backward before the level's (PyramidLoss), and tiled like any level's where its budget says so.
"""
from __future__ import annotations

import torch
from torch import nn

from .losses import StyleLoss
from .tiles import _Precomputed

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
    so the total stays content_weight * content + style_weight * style + tv_weight * tv.

    The coarser terms are evaluated first, each with its backward at once (their gradient kept as one
    whole-picture vector, entered as tiles._Precomputed enters a tiled level's): their activations are gone
    before the level's own pass begins, so a print's peak is the larger pass, not the sum. Before, their graphs
    lived until the one backward and their passes (a third of the level's) were reserved beside it: on the H200
    the 4096 px auto print did not finish in 300 s (21.8 s before the pyramid); the planner's arithmetic puts its
    top level at a quarter of the budget, in 32 px cores with 80 px halos (bench/print_levels.py --plans)."""

    def __init__(self, level: nn.Module, coarser: list[nn.Module]) -> None:
        super().__init__()
        self.level, self.coarser = level, nn.ModuleList(coarser)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        more, its, grad = self._coarser(pixels)
        total, parts = self.level(pixels)
        if grad is not None:
            more = _Precomputed.apply(pixels, more, grad)
        return total + more, parts + its

    def _coarser(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The terms' summed value and parts, and their gradient (None where none is asked), each term's
        activations freed by its own backward before the next term's pass."""
        wants = pixels.requires_grad and torch.is_grad_enabled()
        loose = pixels.detach().requires_grad_(wants)
        more, its = pixels.new_zeros((), dtype=torch.float32), pixels.new_zeros(3, dtype=torch.float32)
        for term in self.coarser:
            value, parts = term(loose)
            if wants:  # outside the caller's autocast: its backward would run the fp32 Gram's matmul in bf16
                with torch.autocast(pixels.device.type, enabled=False):
                    value.backward()
            more, its = more + value.detach().float(), its + parts.detach().float()
        return more, its, loose.grad if wants else None


def coarser_reserve(level_hw: tuple[int, int]) -> int:
    """The bytes the coarser terms leave beside the finer level's pass: their summed gradient, one fp32 RGB
    vector of the level's size (their passes end before the level's: PyramidLoss)."""
    from .memory import WHOLE_PICTURE_BYTES

    return level_hw[0] * level_hw[1] * WHOLE_PICTURE_BYTES


SHRINK_VECTORS = 4  # the level's picture as the shrink holds it: its float copy, transposed, and the backward's two


def coarser_terms(engine, coarser: list[tuple[int, int]], targets_at, settings, style_weight: float,
                  precision: str, level_hw: tuple[int, int], level_plan=None) -> list[nn.Module]:
    """One style term per coarser level (its size, its painting Grams from ``targets_at(hw)``: the engine's cache),
    tiled where :func:`term_plan` says."""
    from .tiles import TiledLoss

    weight = PYRAMID_WEIGHT * style_weight
    terms: list[nn.Module] = []
    for hw in coarser:
        targets = targets_at(hw)
        plan = term_plan(engine, hw, settings, precision, level_hw, level_plan)
        if plan is None:
            terms.append(StyleAt(engine.vgg, StyleLoss(targets, settings.layer_weights), weight, hw))
            continue
        none = torch.zeros(1, 512, hw[0] // 8, hw[1] // 8, device=engine.device)  # content weight 0: unused
        terms.append(Shrunk(TiledLoss(engine.vgg, none, targets.grams, settings.layer_weights,
                                      (0.0, weight, 0.0), plan), hw))
    return terms


def term_plan(engine, hw: tuple[int, int], settings, precision: str, level_hw: tuple[int, int], level_plan=None):
    """A coarser term's tiles at ``hw`` (None: whole): its pass alone (a term keeps no optimiser state: memory.plan's
    ``stateless``) in the budget left beside the finer level's whole-picture state (its optimiser's history:
    ``level_plan``'s where the budget capped it) and the shrink's copies of the level's picture."""
    from .levels import tile_plan
    from .memory import WHOLE_PICTURE_BYTES, state_bytes

    pixels = level_hw[0] * level_hw[1]
    history = getattr(level_plan, "history", None) or settings.lbfgs_history
    kept = state_bytes(pixels, settings.optimizer, history) + SHRINK_VECTORS * pixels * WHOLE_PICTURE_BYTES
    return tile_plan(engine, hw, settings, precision, reserve=kept, stateless=True)
