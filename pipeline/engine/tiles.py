"""Tiled evaluation of the Gram loss with exact gradients (issue 14): memory bounded by one tile, no seams.

A Gram matrix is a sum over positions, so it can be summed tile by tile; and once the whole picture's Grams are
known, the loss's gradient at one feature position only needs that position's features. So one evaluation is:

1. no grad, tile by tile: sum each style layer's Gram over the tile's *core* positions (and the content term);
2. with grad, tile by tile: back-propagate the loss against those global Grams through the core positions only,
   adding the tile's pixel gradient into the whole picture's.

Each tile is its core plus a halo of ``halo`` pixels on each side, at least the reach of conv5_1 (measured from
the network by :func:`reach`), and every tile starts on a multiple of VGG's total stride (16), so the poolings see
the same grid as on the whole picture. Core features are then computed exactly as untiled, and (loss, gradient)
equals the untiled one up to float rounding (tests/test_tiles.py keeps the tolerance). Unlike hand-cut tiles
styled one by one and blended (neural-style's scripts, Neural-Tile), there is one loss over the whole picture:
no style drift from tile to tile, no seam to blend.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterable

import torch
from torch import nn

from .losses import TVLoss, gram, style_term
from .settings import CONTENT_LAYER, STYLE_LAYERS

ALIGN = 16  # conv5_1 sits after four 2x2 poolings: tiles start on this grid so each pooling sees the same pairs


def reach(features: nn.Sequential, last: int) -> tuple[int, int]:
    """(left, right) pixels beyond its own stride block that one output of ``features[:last + 1]`` depends on.

    Walked from the layers themselves: a 3x3 conv (padding 1) widens the dependency by one step of the current
    stride each side; a 2x2/2 pooling widens it by one step on the right and doubles the stride."""
    lo, hi, stride = 0, 0, 1
    for layer in list(features)[: last + 1]:
        if isinstance(layer, nn.Conv2d):
            k, p = layer.kernel_size[0], layer.padding[0]
            lo, hi = lo - p * stride, hi + (k - 1 - p) * stride
        elif isinstance(layer, nn.MaxPool2d):
            hi += (layer.kernel_size - 1) * stride
            stride *= layer.stride
    return -lo, hi - (stride - 1)


_HALOS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # network -> {last layer: halo}


def halo_for(features: nn.Sequential, last: int) -> int:
    """The halo each tile needs: the larger reach, rounded up to the stride grid (70 px -> 80 px for VGG19).

    Walked once per network (and per last layer): a level's plan and each tiled painting's Grams ask again. Held
    weakly, so a dropped engine's network is not kept alive by the cache."""
    known = _HALOS.setdefault(features, {})
    if last not in known:
        known[last] = ALIGN * math.ceil(max(reach(features, last)) / ALIGN)
    return known[last]


@dataclass(frozen=True)
class Tile:
    """One tile in picture coordinates: ``outer`` (what the network sees) and ``core`` (whose positions count)."""

    rows: tuple[int, int]
    cols: tuple[int, int]
    core_rows: tuple[int, int]
    core_cols: tuple[int, int]

    def outer(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels[..., self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]]

    def core_of(self, feats: torch.Tensor, stride: int, full_hw: tuple[int, int]) -> torch.Tensor:
        """The core positions of a layer's tile features (layer stride ``stride``; the picture is ``full_hw``)."""
        r0, r1 = _core_span(self.rows[0], self.core_rows, stride, full_hw[0])
        c0, c1 = _core_span(self.cols[0], self.core_cols, stride, full_hw[1])
        return feats[..., r0:r1, c0:c1]

    def global_span(self, stride: int, full_hw: tuple[int, int]) -> tuple[slice, slice]:
        """Where the core's positions of a stride-``stride`` layer sit in the whole picture's layer."""
        return (slice(*_core_span(0, self.core_rows, stride, full_hw[0])),
                slice(*_core_span(0, self.core_cols, stride, full_hw[1])))


def _core_span(origin: int, core: tuple[int, int], stride: int, full: int) -> tuple[int, int]:
    """A core's index range at one layer, relative to a tile starting at ``origin``; the last core takes the
    positions a floor-dividing pooling leaves at the picture's end."""
    end = full // stride if core[1] == full else core[1] // stride
    return core[0] // stride - origin // stride, end - origin // stride


@dataclass(frozen=True)
class TilePlan:
    """How a picture of ``hw`` is cut: square cores of ``core`` px (a multiple of 16), ``halo`` px around each."""

    hw: tuple[int, int]
    core: int
    halo: int
    history: int | None = None
    """The L-BFGS history the budget leaves room for, where it is less than asked (None: as asked)."""

    def tiles(self) -> tuple[Tile, ...]:
        """The tiles, row by row; cut once per plan (a plan is frozen) rather than on each of a level's
        evaluations, which walk them twice."""
        return self._tiles

    @cached_property
    def _tiles(self) -> tuple[Tile, ...]:
        rows, cols = self._spans(self.hw[0]), self._spans(self.hw[1])
        return tuple(Tile(self._outer(r, self.hw[0]), self._outer(c, self.hw[1]), r, c) for r in rows for c in cols)

    def borders(self) -> tuple[list[int], list[int]]:
        """The inner core borders (rows, cols): the first row/column of each core but the first (where a seam would
        show; bench/print.py's seams measure reads them here, so a merged last sliver is not counted)."""
        return ([a for a, _ in self._spans(self.hw[0])[1:]], [a for a, _ in self._spans(self.hw[1])[1:]])

    def _spans(self, n: int) -> list[tuple[int, int]]:
        starts = list(range(0, n, self.core))
        if len(starts) > 1 and n - starts[-1] < ALIGN:
            starts.pop()  # a sliver of a last core joins the one before
        return [(a, starts[i + 1] if i + 1 < len(starts) else n) for i, a in enumerate(starts)]

    def _outer(self, core: tuple[int, int], n: int) -> tuple[int, int]:
        return max(0, core[0] - self.halo), min(n, core[1] + self.halo)

    @property
    def count(self) -> int:
        return len(self.tiles())

    def to_dict(self) -> dict:
        found = {"hw": list(self.hw), "core": self.core, "halo": self.halo, "tiles": self.count}
        return found if self.history is None else {**found, "history": self.history}

    @staticmethod
    def from_dict(data: dict) -> "TilePlan":
        return TilePlan((int(data["hw"][0]), int(data["hw"][1])), int(data["core"]), int(data["halo"]),
                        data.get("history"))


LAYER_STRIDE = {"conv1_1": 1, "conv2_1": 2, "conv3_1": 4, "conv4_1": 8, "conv4_2": 8, "conv5_1": 16}


def core_grams(feats: dict[str, torch.Tensor], tile: Tile, layers: Iterable[str],
               hw: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Each layer's Gram over one tile's core positions: the part of the whole picture's Gram this tile holds."""
    return {layer: gram(tile.core_of(feats[layer], LAYER_STRIDE[layer], hw)) for layer in layers}


def summed_grams(vgg: nn.Module, pixels: torch.Tensor, plan: TilePlan, layers: Iterable[str],
                 on_tile: Callable[[Tile, dict], None] | None = None,
                 wanted: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """``layers``' Grams of the whole picture, summed over the tiles' cores (no grad): the one accumulation loop.
    ``on_tile(tile, feats)`` sees each tile's features (``wanted`` layers; None: all) as they pass."""
    grams: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for tile in plan.tiles():
            feats = vgg(tile.outer(pixels), wanted)
            for layer, g in core_grams(feats, tile, layers, plan.hw).items():
                grams[layer] = g if layer not in grams else grams[layer] + g
            if on_tile is not None:
                on_tile(tile, feats)
    return grams


def tiled_grams(vgg: nn.Module, pixels: torch.Tensor, plan: TilePlan) -> dict[str, torch.Tensor]:
    """Each style layer's Gram of the whole picture (a painting too large for one pass), summed over the tiles."""
    return summed_grams(vgg, pixels, plan, STYLE_LAYERS, wanted=STYLE_LAYERS)


def tiled_content(vgg: nn.Module, pixels: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    """conv4_2 of the whole picture, assembled from the tiles' cores (no grad): the content target."""
    out, stride = None, LAYER_STRIDE[CONTENT_LAYER]
    with torch.no_grad():
        for tile in plan.tiles():
            feats = vgg(tile.outer(pixels), (CONTENT_LAYER,))[CONTENT_LAYER].float()
            core = tile.core_of(feats, stride, plan.hw)
            if out is None:
                out = feats.new_zeros(*feats.shape[:2], plan.hw[0] // stride, plan.hw[1] // stride)
            out[(..., *tile.global_span(stride, plan.hw))] = core
    assert out is not None
    return out


class _Precomputed(torch.autograd.Function):
    """A scalar whose gradient with respect to ``pixels`` is already known: how the tiled value and gradient
    enter the optimisers' ``loss.backward()`` unchanged."""

    @staticmethod
    def forward(ctx, pixels, value, grad):  # type: ignore[override]
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    def backward(ctx, out):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return out * grad, None, None


class TiledLoss(nn.Module):
    """The same objective as :class:`~.losses.TotalLoss` (content + style + tv, returning the parts), evaluated
    tile by tile."""

    def __init__(self, vgg: nn.Module, content_target: torch.Tensor, style_grams: dict[str, torch.Tensor],
                 layer_weights: tuple[float, ...], weights: tuple[float, float, float], plan: TilePlan) -> None:
        super().__init__()
        self.vgg, self.plan, self.weights = vgg, plan, weights
        self.content_target = content_target.detach()
        self.targets = {k: v.detach() for k, v in style_grams.items()}
        self.layer_weights = {k: w for k, w in zip(STYLE_LAYERS, layer_weights) if w != 0}
        self.positions = {k: (plan.hw[0] // LAYER_STRIDE[k]) * (plan.hw[1] // LAYER_STRIDE[k]) for k in STYLE_LAYERS}
        self.tv = TVLoss()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grams, content_sum = self._first_pass(pixels.detach())
        style = self._style(grams)
        content = content_sum / self.content_target.numel()
        cw, sw, tw = self.weights
        tv = self.tv(pixels.float()).sum()  # (b,) per image; one picture here
        value = cw * content + sw * style
        if pixels.requires_grad and torch.is_grad_enabled():
            value = _Precomputed.apply(pixels, value.detach(), self._gradient(pixels.detach(), grams))
        parts = torch.stack([content.detach(), style.detach(), tv.detach()])
        return value + tw * tv, parts

    def _first_pass(self, pixels: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Pass 1 (no grad): the whole picture's Grams and the content term's sum, from the same tile passes."""
        content: list[torch.Tensor] = []
        grams = summed_grams(self.vgg, pixels, self.plan, self.layer_weights,
                             on_tile=lambda tile, feats: content.append(self._content_sum(feats, tile)))
        return grams, sum(content, pixels.new_zeros((), dtype=torch.float32))

    def _content_sum(self, feats: dict[str, torch.Tensor], tile: Tile) -> torch.Tensor:
        core = tile.core_of(feats[CONTENT_LAYER], LAYER_STRIDE[CONTENT_LAYER], self.plan.hw).float()
        target = self.content_target[(..., *tile.global_span(LAYER_STRIDE[CONTENT_LAYER], self.plan.hw))]
        return ((core - target) ** 2).sum()

    def _style(self, grams: dict[str, torch.Tensor]) -> torch.Tensor:
        """StyleLoss's formula (losses.style_term) at the whole picture's Grams and positions, for one picture."""
        return style_term(grams, self.targets, self.layer_weights, self.positions).sum()  # (1,) -> ()

    def _gradient(self, pixels: torch.Tensor, grams: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pass 2: each tile's core positions back-propagate the loss at the global Grams."""
        grad = torch.zeros_like(pixels, dtype=torch.float32)
        cw, sw, _ = self.weights
        for tile in self.plan.tiles():
            part = tile.outer(pixels).detach().requires_grad_()
            feats = self.vgg(part)
            local = {layer: grams[layer] - g.detach() + g  # the global value, this tile's derivative
                     for layer, g in core_grams(feats, tile, self.layer_weights, self.plan.hw).items()}
            loss = sw * self._style(local) + cw * self._content_sum(feats, tile) / self.content_target.numel()
            loss.backward()
            tile.outer(grad).add_(part.grad)
        return grad
