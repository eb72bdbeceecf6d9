"""The pyramid walk, coarse to fine: one copy for a lone run (transfer._Run) and for a batch (batch._Batch).

Why one copy: the two loops had drifted apart once already (which level_step a level starts from, when a coarse
level's early stop is forgotten, where a cancel is raised). Here each level is entered, optimised and left the
same way for one photo or many; only the optimising differs, passed in. A photo the optimiser gives up on (a
batch's NaN or blank result: it runs alone after) leaves the walk, and the walk stops when none is left.

A run here is anything with ``levels``, ``level_index``, ``monitor``, ``checkpoint``, ``engine`` and the two
ways to make a level's start (``initial``, ``next_level``): transfer._Run.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import Cancelled

# (level index, the live runs, their pixels at the level's start) -> each one's pixels after it, None: failed
Optimise = Callable[[int, list, list[torch.Tensor]], list[torch.Tensor | None]]


def walk(runs: Sequence, optimise: Optimise, pixels: torch.Tensor | None = None, start: int = 0
         ) -> list[torch.Tensor | None]:
    """Each run's pixels at the last level, or None for one that failed on the way. ``pixels`` and ``start``:
    where a resumed run (one run) picks up, its checkpoint's pixels at its level."""
    now: list[torch.Tensor | None] = [pixels] * len(runs)
    live = list(range(len(runs)))
    for index in range(start, len(runs[0].levels)):
        if not live:
            break  # every photo failed: the levels above would be work for nothing
        starts = [_enter(runs[k], index, now[k]) for k in live]
        for k, out in zip(live, optimise(index, [runs[k] for k in live], starts)):
            now[k] = out
        for k in live:  # before the failed are dropped: the photo whose blank result came with the cancel too
            _cancel_if_asked(runs[k])
        live = [k for k in live if now[k] is not None]
        for k in live:
            _leave(runs[k], index)
    return [now[k] if k in live else None for k in range(len(runs))]


def _enter(run, index: int, pixels: torch.Tensor | None) -> torch.Tensor:
    """The level's starting pixels; the monitor told (a resumed level keeps the steps it had done)."""
    hw = run.levels[index]
    run.level_index = index
    run.monitor.begin_level(index + 1, hw, run.monitor.level_step)
    start = run.initial(hw, run.engine.device) if pixels is None else run.next_level(pixels, index)
    run.monitor.mark("copy")  # the working copy on the device: a set-up part (issue 13)
    return start


def _cancel_if_asked(run) -> None:
    """A cancel ends the run (with its checkpoint) as its level ends, whether or not the level gave pixels."""
    if run.monitor.cancelled:
        raise Cancelled(run.monitor.step_count, str(run.checkpoint) if run.checkpoint else None)


def _leave(run, index: int) -> None:
    """An early stop at a coarse level just moves on (a cancel was raised before, by _cancel_if_asked)."""
    monitor = run.monitor
    if monitor.stop_reason != "steps" and index < len(run.levels) - 1:
        monitor.stop_reason = "steps"
    monitor.level_step = 0
