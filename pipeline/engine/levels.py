"""Large prints (issue 14): which pyramid levels a run takes, how many steps each, and whether it is tiled.

``scales: auto`` (the default) keeps one level up to SINGLE_MAX px, today's behaviour. Above it, the run starts
at a coarse level of COARSE_MAX px or less, where VGG19's receptive field (156 px at conv5_1) sees the composition
rather than a patch of it, and doubles up to the requested size, each level starting from the previous one's
result upsampled. The painting is resized with each level (style_scale relative to the level, as at the coarse
one), so its strokes keep their size relative to the picture: at a single 4096 px level they shrink to a speckle.
The coarse level forms the strokes and gets the full ``steps``; each finer level refines and gets half the one
before (never under FINE_MIN_STEPS), and keeps the coarser levels' style terms in its loss (pyramid.py): without
them it drifted off the look the coarse levels had formed. A panorama keeps only the levels whose short side is
at least shapes.MIN_SIDE (a 4096x64 print starts at 2048x32, a 4096x40 one is one level): a coarser strip would be
mostly the thin-picture canvas's padding to the network (README, "Large prints"; rev7b).
"""
from __future__ import annotations

import math

import torch

from . import images, memory, shapes
from .losses import StyleTargets
from .optimize import Problem
from .settings import CONTENT_LAYER, Settings
from .tiles import TiledLoss, TilePlan, halo_for, tiled_content, tiled_grams
from .vgg import LAST_INDEX

SINGLE_MAX = 1024  # up to this, auto is one level: the size the README's pictures and the look's judge use
COARSE_MAX = 768  # auto's coarsest level is at most this long side (and more than half of it)
FINE_MIN_STEPS = 20
COARSE_STEPS = 100  # a number of scales' coarser levels each, where coarse_steps is unset


def auto_count(hw: tuple[int, int]) -> int:
    """How many levels ``scales: auto`` takes for a result of ``hw``: 1 up to SINGLE_MAX, else enough halvings
    to bring the long side to COARSE_MAX or under (2048 px: 3 levels, 512-1024-2048; 4096 px: 4; 8192 px: 5)."""
    long_side = max(hw)
    if long_side <= SINGLE_MAX:
        return 1
    return 1 + math.ceil(math.log2(long_side / COARSE_MAX))


def levels(final_hw: tuple[int, int], settings: Settings) -> tuple[list[tuple[int, int]], list[int]]:
    """The levels (coarse to fine) and the steps of each. A number of scales, or a coarse_steps set under auto:
    coarse_steps at every coarser level, steps at the last. auto with coarse_steps unset: the coarsest gets steps,
    each finer one half the one before. Before, a coarse_steps set under auto was recorded and never read (rev9a #4);
    now the one written is the one run."""
    count = auto_count(final_hw) if settings.scales == "auto" else int(settings.scales)
    found = shapes.pyramid(final_hw, count)
    if settings.scales != "auto" or settings.coarse_steps is not None:
        coarse = COARSE_STEPS if settings.coarse_steps is None else settings.coarse_steps
        return found, [coarse] * (len(found) - 1) + [settings.steps]
    floor = min(settings.steps, FINE_MIN_STEPS)
    return found, [max(settings.steps >> k, floor) for k in range(len(found))]


def for_size(size: tuple[int, int], settings: Settings) -> tuple[tuple[int, int], list[tuple[int, int]], list[int]]:
    """A photo of ``size`` (width, height): its final (height, width), its levels and their steps. The one rule for
    its run (transfer._Run) and for the batcher, which groups photos by their levels from their sizes alone."""
    final_hw = images.fit_size(size, settings.size)[::-1]
    return (final_hw, *levels(final_hw, settings))


def tile_plan(engine, hw: tuple[int, int], settings: Settings, precision: str, reserve: int = 0,
              stateless: bool = False) -> TilePlan | None:
    """None when this level's loss pass fits the memory budget whole (the usual case); else its tiles.
    ``precision`` is the run's resolved one (fp32, tf32, bf16), not the setting: ``auto`` is read once per run.
    ``reserve``: bytes held beside this pass (pyramid.py: the coarser terms' gradient beside a finer level, that
    level's state beside the coarser terms), taken off the budget, never below a quarter of it. ``stateless``: a
    pass with no optimiser of its own (memory.plan)."""
    budget = memory.budget(settings.max_memory, engine.device)
    budget = max(budget - reserve, budget // 4)
    precision = "bf16" if engine.device.type == "cuda" and precision == "bf16" else "fp32"
    return memory.plan(shapes.canvas(hw), budget, halo=halo_for(engine.vgg.features, LAST_INDEX),
                       optimizer=settings.optimizer, history=settings.lbfgs_history, precision=precision,
                       stateless=stateless)


def style_grams(engine, pixels: torch.Tensor, settings: Settings) -> dict[str, torch.Tensor] | None:
    """A painting's Grams summed over tiles when its pass would not fit the budget; None: the usual whole pass."""
    plan = tile_plan(engine, tuple(pixels.shape[-2:]), settings, engine.precision(settings.precision))
    return None if plan is None else tiled_grams(engine.vgg, engine.layout(pixels), plan)


def tiled_problem(engine, content: torch.Tensor, targets: StyleTargets, settings: Settings, style_weight: float,
                  plan: TilePlan, precision: str) -> Problem:
    """The level's objective evaluated tile by tile: the same value and gradient as the untiled TotalLoss, in the
    run's resolved ``precision`` (as its untiled levels)."""
    content_target = tiled_content(engine.vgg, engine.layout(content), plan)
    assert content_target.shape[1] == 512, CONTENT_LAYER
    loss = TiledLoss(engine.vgg, content_target, targets.grams, settings.layer_weights,
                     (settings.content_weight, style_weight, settings.tv_weight), plan)
    return Problem(loss, engine.autocast(precision))  # type: ignore[arg-type]
