"""Working shapes: the pyramid's levels, and the padding that lets thin pictures through VGG19 (issue 9).

VGG19 halves the picture four times before conv5_1, so a side under 16 px leaves a layer with no rows and
torch fails deep inside a pooling ("Output size is too small"). A thin picture is padded (edge pixels
repeated) up to that minimum, optimised on the padded canvas, and cropped back; one so thin that the canvas
would be mostly padding is refused at once as ``too_thin``, a permanent failure that says the limit.
"""
from __future__ import annotations

import math

import torch

from ..errors import TooThin

MIN_SIDE = 32  # a coarser pyramid level below this has no conv5_1 worth matching: it is dropped
VGG_MIN_SIDE = 16  # 2**4: the four 2x2 poolings before conv5_1 need this many pixels
MIN_PICTURE_SIDE = 4  # a side padded more than 4x leaves the network looking at padding: refuse instead


def pyramid(hw: tuple[int, int], scales: int) -> list[tuple[int, int]]:
    """Coarse to fine, each level half the next; levels smaller than MIN_SIDE are dropped."""
    levels = []
    for i in reversed(range(scales)):
        f = 2 ** i
        level = (max(1, round(hw[0] / f)), max(1, round(hw[1] / f)))
        if min(level) >= MIN_SIDE or i == 0:
            levels.append(level)
    return levels


def check_thin(hw: tuple[int, int], picture_size: tuple[int, int], size: int) -> None:
    """Fail fast, before any work, where padding cannot help: the limit and the fix in words."""
    short = min(hw)
    if short >= MIN_PICTURE_SIDE:
        return
    w, h = picture_size
    aspect = max(w, h) / min(w, h)
    needed = math.ceil(MIN_PICTURE_SIDE * aspect)
    raise TooThin(
        f"the picture ({w}x{h} px, {aspect:.0f}:1) is too thin to stylize at size {size}: its short side would be "
        f"{short} px, and the style network needs at least {MIN_PICTURE_SIDE} px of picture on each side "
        f"(padded to {VGG_MIN_SIDE} px)",
        fix=f"Crop it to at most {size // MIN_PICTURE_SIDE}:1, or give it a size of at least {needed} px")


def canvas(hw: tuple[int, int]) -> tuple[int, int]:
    """The shape the network sees: the picture's, with each side raised to VGG_MIN_SIDE where shorter."""
    return max(hw[0], VGG_MIN_SIDE), max(hw[1], VGG_MIN_SIDE)


def _margins(hw: tuple[int, int], outer: tuple[int, int]) -> tuple[int, int]:
    return (outer[0] - hw[0]) // 2, (outer[1] - hw[1]) // 2


def pad(pixels: torch.Tensor, outer: tuple[int, int]) -> torch.Tensor:
    """Centre the picture on the canvas, repeating its edge pixels (no new colours for the Grams)."""
    hw = tuple(pixels.shape[-2:])
    if hw == tuple(outer):
        return pixels
    top, left = _margins(hw, outer)
    sides = (left, outer[1] - hw[1] - left, top, outer[0] - hw[0] - top)
    return torch.nn.functional.pad(pixels, sides, mode="replicate")


def crop(pixels: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """The picture back out of its canvas."""
    outer = tuple(pixels.shape[-2:])
    if outer == tuple(hw):
        return pixels
    top, left = _margins(hw, outer)
    return pixels[..., top:top + hw[0], left:left + hw[1]]
