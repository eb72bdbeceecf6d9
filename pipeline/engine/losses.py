"""The Gatys et al. losses as small modules; the maths follows the reference notebook.

content = mean((F_T - F_C)^2) at conv4_2
style   = sum_l w_l * mean((G(F_T) - G(F_S))^2) / (C*H*W),  G = F F^T (unnormalised)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .settings import CONTENT_LAYER, STYLE_LAYERS


def gram(features: torch.Tensor) -> torch.Tensor:
    """G = F F^T per image, in fp32 even under autocast: the Gram's 4th-power scale needs the range.

    Channels-last maps (CUDA) are read through their NHWC view, (b, h*w, c), as G = F^T F: reshaping them to
    (b, c, h*w) copied the whole map (185 MB at conv1_1, 1024 px), and that copy cost 2.4 ms of a 19.4 ms step.
    """
    b, c, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
            rows = features.permute(0, 2, 3, 1).reshape(b, h * w, c).float()  # a view: no copy in fp32
            return rows.transpose(1, 2) @ rows
        flat = features.reshape(b, c, h * w).float()
        return flat @ flat.transpose(1, 2)


def positions(hw: tuple[int, int], layer: str) -> int:
    """Positions in ``layer``'s map for a picture of ``hw``: conv{k}_1 follows k-1 2x2 max-poolings (floor)."""
    k = STYLE_LAYERS.index(layer)
    return max(1, (hw[0] >> k) * (hw[1] >> k))


@dataclass(frozen=True)
class StyleTargets:
    """Gram matrices of one style (or a blend of several) at one size; cacheable across contents."""

    grams: dict[str, torch.Tensor]

    @staticmethod
    def blend(parts: list["StyleTargets"], weights: list[float]) -> "StyleTargets":
        """Σ b_s (G - G_s)^2 = (Σ b_s)(G - Ḡ)^2 + const, so a weighted mean Gram gives the same gradients."""
        total = sum(weights)
        grams = {
            layer: sum(w / total * p.grams[layer] for p, w in zip(parts, weights))  # type: ignore[misc]
            for layer in parts[0].grams
        }
        return StyleTargets(grams)

    def for_picture(self, own_hw: tuple[int, int], picture_hw: tuple[int, int]) -> "StyleTargets":
        """These Grams (of a painting at ``own_hw``) brought to a picture of ``picture_hw``'s number of positions,
        layer by layer. A Gram is a SUM over positions and the loss divides by the picture's only, so at style_scale
        2 the painting's Grams were ~3.3x the picture's reach and over-textured it (0.5: washed out; rev9a #1), and a
        blend leaned to the painting with more positions. The same object where the shapes agree (style_scale 1)."""
        if tuple(own_hw) == tuple(picture_hw):
            return self
        return StyleTargets({layer: g * (positions(picture_hw, layer) / positions(own_hw, layer))
                             for layer, g in self.grams.items()})

    def to(self, device: torch.device | str) -> "StyleTargets":
        return StyleTargets({k: v.to(device) for k, v in self.grams.items()})


class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("target", target.detach())

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per image, (b,): a batch of photos each gets its own loss."""
        return torch.mean((feats[CONTENT_LAYER].float() - self.target) ** 2, dim=(1, 2, 3))


class StyleLoss(nn.Module):
    def __init__(self, targets: StyleTargets, layer_weights: tuple[float, ...]) -> None:
        super().__init__()
        self.layer_weights = dict(zip(STYLE_LAYERS, layer_weights))
        self.used = {layer: w for layer, w in self.layer_weights.items() if w != 0}  # fixed: not per evaluation
        self.targets = {k: v.detach() for k, v in targets.grams.items()}

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per image, (b,); the targets (1, c, c) are shared by the batch."""
        return style_term({k: gram(feats[k]) for k in self.used}, self.targets, self.used,
                          {k: feats[k].shape[-2] * feats[k].shape[-1] for k in self.used},
                          feats[STYLE_LAYERS[0]].shape[0])


def style_term(grams: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], layer_weights: dict[str, float],
               positions: dict[str, int], batch: int = 1) -> torch.Tensor:
    """sum_l w_l mean((G_l - T_l)^2) / (C_l * positions_l), per image (batch,), fp32: the one style formula, shared
    by the whole picture's pass (StyleLoss) and the tiled one (TiledLoss, whose Grams are summed over tiles and
    whose positions are the whole picture's), so the two cannot drift apart. Zeros when no layer has weight."""
    total = next(iter(targets.values())).new_zeros((batch,), dtype=torch.float32)
    for layer, weight in layer_weights.items():
        g = grams[layer]
        error = torch.mean((g - targets[layer]) ** 2, dim=(-2, -1))
        total = total + weight * error / (g.shape[-1] * positions[layer])
    return total


class TVLoss(nn.Module):
    """Mean squared difference of neighbouring pixels: smooths the high-frequency noise L-BFGS can leave."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        dx = pixels[..., :, 1:] - pixels[..., :, :-1]
        dy = pixels[..., 1:, :] - pixels[..., :-1, :]
        return dx.pow(2).mean(dim=(1, 2, 3)) + dy.pow(2).mean(dim=(1, 2, 3))


class TotalLoss(nn.Module):
    """content_weight * content + style_weight * style + tv_weight * tv, returning the parts too."""

    def __init__(self, vgg: nn.Module, content: ContentLoss, style: StyleLoss,
                 content_weight: float, style_weight: float, tv_weight: float) -> None:
        super().__init__()
        self.vgg, self.content, self.style, self.tv = vgg, content, style, TVLoss()
        self.weights = (content_weight, style_weight, tv_weight)
        self._weights: torch.Tensor | None = None  # on the device, made once: a copy per call is a CUDA sync

    def per_image(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's weighted total (b,) and its parts (b, 3): content, style, tv."""
        feats = self.vgg(pixels)
        parts = torch.stack([self.content(feats), self.style(feats), self.tv(pixels.float())], dim=1)
        if self._weights is None or self._weights.device != parts.device:
            self._weights = parts.new_tensor(self.weights)
        return (parts * self._weights).sum(dim=1), parts  # not a matmul: autocast would take the total to bf16

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sum of the images' totals (so each image's gradient is its own) and the parts, (3,) for one image."""
        totals, parts = self.per_image(pixels)
        return totals.sum(), parts.detach().squeeze(0)
