"""The style engine: Gatys et al.'s VGG19 Gram-loss method. Knows nothing of folders.

    engine = StyleTransfer()                     # loads VGG19 once
    result = engine.stylize(content, [style], Settings(size=256), on_step=print)
    images.save(result.image, "out.png", alpha=result.alpha)

Names are imported lazily (PEP 562), so ``pipeline.engine.settings`` can be read without torch.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Sequence

from .settings import PRESETS, Settings, preset

_LAZY = {"StyleTransfer": ".transfer", "Result": ".transfer", "pick_device": ".transfer", "StepInfo": ".optimize",
         "Listener": ".optimize", "images": None}
__all__ = ["Listener", "PRESETS", "Result", "Settings", "StepInfo", "StyleTransfer", "images", "pick_device", "preset",
           "stylize"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(name)
    if _LAZY[name] is None:
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(_LAZY[name], __name__), name)


_shared: dict = {}


def stylize(content, styles: Sequence, settings: Settings = Settings(), *, on_step: Callable | None = None,
            should_stop: Callable[[], bool] | None = None, checkpoint: str | Path | None = None,
            weights: str | Path | None = None):
    """One-call form; the network is loaded once per (weights, device) and kept."""
    from .transfer import StyleTransfer

    key = (str(weights) if weights else None, settings.device)
    if key not in _shared:
        _shared[key] = StyleTransfer(weights, settings.device)
    return _shared[key].stylize(content, styles, settings, on_step=on_step, should_stop=should_stop,
                                checkpoint=checkpoint)
