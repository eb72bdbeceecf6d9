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
    """G = F F^T per image, in fp32 even under autocast: the Gram's 4th-power scale needs the range."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w).float()
    with torch.autocast(features.device.type, enabled=False):
        return flat @ flat.transpose(1, 2)


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

    def to(self, device: torch.device | str) -> "StyleTargets":
        return StyleTargets({k: v.to(device) for k, v in self.grams.items()})


class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("target", target.detach())

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.mean((feats[CONTENT_LAYER].float() - self.target) ** 2)


class StyleLoss(nn.Module):
    def __init__(self, targets: StyleTargets, layer_weights: tuple[float, ...]) -> None:
        super().__init__()
        self.layer_weights = dict(zip(STYLE_LAYERS, layer_weights))
        self.targets = {k: v.detach() for k, v in targets.grams.items()}

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        total = feats[STYLE_LAYERS[0]].new_zeros((), dtype=torch.float32)
        for layer, weight in self.layer_weights.items():
            if weight == 0:
                continue
            _, c, h, w = feats[layer].shape
            g = gram(feats[layer])
            total = total + weight * torch.mean((g - self.targets[layer]) ** 2) / (c * h * w)
        return total


class TVLoss(nn.Module):
    """Mean squared difference of neighbouring pixels: smooths the high-frequency noise L-BFGS can leave."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        dx = pixels[..., :, 1:] - pixels[..., :, :-1]
        dy = pixels[..., 1:, :] - pixels[..., :-1, :]
        return dx.pow(2).mean() + dy.pow(2).mean()


class TotalLoss(nn.Module):
    """content_weight * content + style_weight * style + tv_weight * tv, returning the parts too."""

    def __init__(self, vgg: nn.Module, content: ContentLoss, style: StyleLoss,
                 content_weight: float, style_weight: float, tv_weight: float) -> None:
        super().__init__()
        self.vgg, self.content, self.style, self.tv = vgg, content, style, TVLoss()
        self.weights = (content_weight, style_weight, tv_weight)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.vgg(pixels)
        parts = torch.stack([self.content(feats), self.style(feats), self.tv(pixels.float())])
        weights = parts.new_tensor(self.weights)
        return (parts * weights).sum(), parts.detach()
