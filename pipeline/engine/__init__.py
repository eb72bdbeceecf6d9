"""The style engine: Gatys et al.'s VGG19 Gram-loss method. Knows nothing of folders.

    engine = StyleTransfer()                     # loads VGG19 once
    result = engine.stylize(content, [style], Settings(size=256), on_step=print)
    images.save(result.image, "out.png", alpha=result.alpha)

Names are imported lazily (PEP 562), so ``pipeline.engine.settings`` can be read without torch.
"""
from __future__ import annotations

import importlib

from .settings import PRESETS, Settings, preset

_LAZY = {"StyleTransfer": ".transfer", "Result": ".transfer", "pick_device": ".transfer", "StepInfo": ".optimize",
         "Listener": ".optimize", "images": None}
__all__ = ["Listener", "PRESETS", "Result", "Settings", "StepInfo", "StyleTransfer", "images", "pick_device", "preset"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(name)
    if _LAZY[name] is None:
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(_LAZY[name], __name__), name)

