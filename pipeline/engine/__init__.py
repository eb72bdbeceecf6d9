"""The style engine: Gatys et al.'s VGG19 Gram-loss method. Knows nothing of folders.

    engine = StyleTransfer()                     # loads VGG19 once
    result = engine.stylize(content, [style], Settings(size=256), on_step=print)
    images.save(result.image, "out.png", alpha=result.alpha)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from PIL import Image

from . import images
from .optimize import StepInfo
from .settings import PRESETS, Settings, preset
from .transfer import Result, StyleTransfer, pick_device

__all__ = ["PRESETS", "Result", "Settings", "StepInfo", "StyleTransfer", "images", "pick_device", "preset", "stylize"]

_shared: dict[tuple, StyleTransfer] = {}


def stylize(content: Image.Image, styles: Sequence[Image.Image], settings: Settings = Settings(), *,
            on_step: Callable[[StepInfo], None] | None = None, should_stop: Callable[[], bool] | None = None,
            checkpoint: str | Path | None = None, weights: str | Path | None = None) -> Result:
    """One-call form; the network is loaded once per (weights, device) and kept."""
    key = (str(weights) if weights else None, settings.device)
    if key not in _shared:
        _shared[key] = StyleTransfer(weights, settings.device)
    return _shared[key].stylize(content, styles, settings, on_step=on_step, should_stop=should_stop,
                                checkpoint=checkpoint)
