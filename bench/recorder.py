"""Frames out of the engine's loop through its public listener API (``stylize(..., listeners=[...])``).

The engine keeps a listener's time off its clock, so copying each step's 8-bit pixels here costs the measured run
nothing; this side takes its own CPU time off too. Frames are judged later, after the run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from PIL import Image

from pipeline.engine import Settings, StepInfo, StyleTransfer


@dataclass
class Frame:
    step: int
    scale: int
    n_scales: int
    elapsed: float        # wall seconds since the run began, capture time excluded
    cpu: float            # process CPU seconds since the run began, capture time excluded
    raw: float            # the loss the optimiser saw (unclamped for Adam seed)
    evals: int            # loss evaluations so far
    pixels: torch.Tensor | None  # uint8 (1, 3, H, W), clamped + rounded = what would be saved
    eval_s: float = 0.0   # wall seconds in those evaluations (forward + backward)


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """What saving would keep: clamped, rounded, 8-bit, on the CPU."""
    return pixels.detach().float().clamp(0, 255).round().to(torch.uint8).cpu().clone()


@dataclass
class Recorder:
    """A listener: every step's figures, and its pixels at the steps ``want`` picks."""

    every: int = 1
    dense_until: int = 0
    frames: list[Frame] = field(default_factory=list)
    cpu0: float = field(default_factory=time.process_time)
    cpu_off: float = 0.0

    def want(self, step: int) -> bool:
        return step <= self.dense_until or step % self.every == 0

    def cpu(self) -> float:
        return time.process_time() - self.cpu0 - self.cpu_off

    def __call__(self, info: StepInfo) -> None:
        started, cpu = time.process_time(), self.cpu()
        pixels = to_uint8(info.pixels) if self.want(info.step) else None
        self.frames.append(Frame(info.step, info.scale, info.n_scales, info.elapsed, cpu, info.loss,
                                 info.evaluations, pixels, info.eval_seconds))
        self.cpu_off += time.process_time() - started

    @property
    def evals(self) -> int:
        return self.frames[-1].evals if self.frames else 0

    def iterations(self, skip: int = 2) -> list[Iteration]:
        """Between consecutive frames, after ``skip`` warm-up frames."""
        return [Iteration.between(a, b) for a, b in zip(self.frames[skip:], self.frames[skip + 1:])]


@dataclass
class Iteration:
    """What one stretch between two frames cost: wall seconds, loss evaluations, and the optimiser's own share."""

    step: int             # the step it started from
    steps: int
    wall: float
    evals: int
    per_eval: float | None  # seconds per loss evaluation (forward + backward)
    own: float            # wall minus the evaluations: the optimiser's own work (and the monitor's)

    @classmethod
    def between(cls, a: Frame, b: Frame) -> "Iteration":
        n, in_evals = b.evals - a.evals, b.eval_s - a.eval_s
        wall = b.elapsed - a.elapsed
        return cls(a.step, b.step - a.step, wall, n, in_evals / n if n else None, wall - in_evals)


def run_engine(engine: StyleTransfer, content: Image.Image, style: Image.Image, settings: Settings,
               rec: Recorder):
    rec.cpu0 = time.process_time()
    return engine.stylize(content, [style], settings, listeners=[rec])
