"""A photo's content target (its conv4_2 features), alone or for a batch's photos in one network pass (issue 13).

Why its own module: a lone run makes its target with one forward; a batch's photos, one after another, made one
forward each between the batch's "job started" and its first step, while the GPU ran batches of 1. The batch now
hands each of its runs a share of one batched forward (``share``), made when the first run asks for its target,
which is after its level's tile decision: a tiled level never asks, and makes its targets tile by tile as before.
Both ways run the same network in the same precision (no autocast: fp32, or TF32 where the run's precision set
it), so a photo's target is the same, to float error, alone or in a batch.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .settings import CONTENT_LAYER


def content_targets(engine, contents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each content's conv4_2 features (1, 512, h/8, w/8) in fp32, from ONE forward of the stacked contents (all of
    one canvas shape); a list of one for a lone photo."""
    with torch.no_grad():
        stacked = contents[0] if len(contents) == 1 else torch.cat(list(contents))
        features = engine.vgg(engine.layout(stacked), (CONTENT_LAYER,))[CONTENT_LAYER].float()
    return list(features.split(1))


def share(engine, runs: Sequence, hw: tuple[int, int]) -> None:
    """Give each run (transfer._Run) a way to its content target at ``hw`` that makes all the runs' targets in one
    forward the first time any of them asks (the batch's first run's loss), from each run's working copy (made as
    the level was entered, walk._enter). A run whose objective at ``hw`` is made already is left alone."""
    asking = [run for run in runs if run._problem[0] != hw]
    made: list[torch.Tensor] = []

    def target(k: int) -> Callable[[], torch.Tensor]:
        def one() -> torch.Tensor:
            if not made:
                made.extend(content_targets(engine, [run.content_at(hw, engine.device) for run in asking]))
            return made[k]
        return one

    for k, run in enumerate(asking):
        run.content_targets[hw] = target(k)
