"""Several photos of one recipe through the network as one batch, each with its own L-BFGS (issue 13).

Why: at 512 px and below one photo leaves most of a GPU idle; the loss pass per image at batch 16 cost half of
batch 1 on an H200 (shared/notes/gpu.md). Each photo keeps its own L-BFGS state, step size, line search,
early stop and Result; only the network pass is shared, and one packed host read serves the whole batch. The
batch's loss is the sum of the photos' losses, so each photo's gradient is exactly its own.

Anything unusual sends a photo back to the one-photo path (``StyleTransfer.stylize``), which has the retries:
a lone photo, another optimiser, a NaN or a blank result, an out-of-memory. Photos of different working shapes
are batched by shape. No checkpoints here: a photo that must survive a kill runs alone.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
from PIL import Image

from ..errors import Cancelled
from .lbfgs import ProjectedLBFGS
from .losses import ContentLoss, TotalLoss
from .memory import cuda_free, photo_bytes
from .optimize import NonFinite, Problem, StepInfo, _Stop, is_blank
from .settings import Settings

STEP_ON = Callable[[int, StepInfo], None]


def batch_size_for(device: torch.device, hw: tuple[int, int], limit: int = 16) -> int:
    """How many photos of this working shape fit at once: 1 off CUDA (a CPU gains nothing from batching),
    else what 80% of the free memory holds (within the process's cap, as the tile planner reads it)."""
    if device.type != "cuda":
        return 1
    return max(1, min(limit, int(0.8 * cuda_free(device)) // photo_bytes(hw)))


def stylize_batch(engine, make_run: Callable, contents: Sequence[Image.Image], styles: Sequence[Image.Image],
                  settings: Settings = Settings(), *, on_step: STEP_ON | None = None,
                  should_stop: Callable[[], bool] | None = None) -> list:
    """One Result per photo, in order; photos of the same working shape share each network pass.

    ``make_run(content, styles, settings, on_step, should_stop, checkpoint)`` is the engine's one-photo run
    (its preprocessing, pyramid, targets and Result), passed in so that this module does not import transfer.
    """
    settings.validate()
    results: list = [None] * len(contents)
    runs = [make_run(c, list(styles), settings, _tagged(on_step, i), should_stop, None)
            for i, c in enumerate(contents)]
    groups: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(tuple(run.levels), []).append(i)
    for members in groups.values():
        if len(members) > 1 and settings.optimizer == "lbfgs":
            try:
                done = _Batch(engine, [runs[i] for i in members], settings).run()
                results_of = dict(zip(members, done))
            except torch.OutOfMemoryError:
                if engine.device.type == "cuda":
                    torch.cuda.empty_cache()
                results_of = {}
            for i, result in results_of.items():
                results[i] = result
        for i in members:
            if results[i] is None:  # alone: a lone photo, another optimiser, a failure or an out-of-memory
                results[i] = engine.stylize(contents[i], styles, settings, on_step=_tagged(on_step, i),
                                            should_stop=should_stop)
    return results


def _tagged(on_step: STEP_ON | None, index: int):
    return (lambda info: on_step(index, info)) if on_step else None


class _Batch:
    """The runs of one working shape, level by level, through one batched loss."""

    def __init__(self, engine, runs: list, settings: Settings) -> None:
        self.engine, self.runs, self.settings = engine, runs, settings
        self.failed: set[int] = set()

    def run(self) -> list:
        """Each run's Result, or None for a photo that must run alone."""
        device, levels = self.engine.device, self.runs[0].levels
        if self.engine.fault_hook:
            self.engine.fault_hook(device)
        torch.manual_seed(self.settings.seed)
        pixels: list[torch.Tensor] = []
        for index, hw in enumerate(levels):
            for run in self.runs:
                run.level_index = index
                run.monitor.begin_level(index + 1, hw)
            pixels = [run._initial(hw, device) if index == 0 else run._next_level(pixels[i], index)
                      for i, run in enumerate(self.runs)]
            pixels = self._level(hw, pixels, self.runs[0].steps_per_level[index])
            for run in self.runs:
                if run.monitor.stop_reason != "steps" and index < len(levels) - 1:
                    run.monitor.stop_reason = "steps"  # an early stop at a coarse level just moves on
                run.monitor.level_step = 0
        return [None if i in self.failed else run._result(pixels[i], None) for i, run in enumerate(self.runs)]

    def _level(self, hw, pixels: list[torch.Tensor], steps: int) -> list[torch.Tensor]:
        problems = [run.loss(hw) for run in self.runs]
        if not all(type(p.loss) is TotalLoss for p in problems):  # a tiled print's level: each runs alone
            self.failed.update(range(len(self.runs)))
            return pixels
        history, keep = self.settings.lbfgs_history, self.settings.keep_in_range
        opts = [ProjectedLBFGS(self.engine.layout(p), history, keep) for p in pixels]
        active = [i for i in range(len(opts)) if i not in self.failed] if steps > 0 else []
        joint = JointLoss(problems)
        if active:
            totals, grads, _ = evaluate_batch(joint(active), [opts[i].x for i in active], opts[0].shape)
            for k, i in enumerate(active):
                opts[i].f, opts[i].g = totals[k], grads[k]
        while active:
            totals, grads, parts = evaluate_batch(joint(active), [opts[i].propose() for i in active], opts[0].shape)
            packs = torch.stack([opts[i].pack(totals[k], grads[k], parts[k]) for k, i in enumerate(active)])
            values = packs.tolist()  # the batch's one host read
            active = [i for k, i in enumerate(active) if self._consume(i, opts[i], values[k], steps)]
        for i, opt in enumerate(opts):
            if i not in self.failed and is_blank(opt.pixels()):
                self.failed.add(i)  # the one-photo path retries it, gentler
        return [opt.pixels() for opt in opts]

    def _consume(self, i: int, opt: ProjectedLBFGS, values: list[float], steps: int) -> bool:
        """One photo's half of the step; False when it is done with this level."""
        monitor = self.runs[i].monitor
        try:
            outcome = opt.consume(values)
        except NonFinite:
            self.failed.add(i)
            return False
        if outcome.kind == "converged":
            monitor.stop_reason = "converged"
            return False
        if outcome.kind == "retry":
            return True
        monitor.step_count += 1
        monitor.level_step += 1
        try:
            monitor.step(opt.pixels(), outcome.loss, list(outcome.parts), dict)
        except _Stop:
            if monitor.cancelled:
                raise Cancelled(monitor.step_count, None) from None
            return False
        return monitor.level_step < steps


class JointLoss:
    """One loss over the active photos: their content targets stacked, the shared style targets and weights;
    remade only when a photo leaves the batch."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems, self.active, self.problem = problems, None, None

    def __call__(self, active: list[int]) -> Problem:
        if active != self.active:
            first = self.problems[0].loss
            target = torch.cat([self.problems[i].loss.content.target for i in active])
            total = TotalLoss(first.vgg, ContentLoss(target), first.style, *first.weights)
            self.active, self.problem = list(active), Problem(total, self.problems[0].autocast)
        return self.problem


def evaluate_batch(problem: Problem, flats: list[torch.Tensor], shape: torch.Size):
    """Each photo's loss (b,), flat gradient (b, n) and parts (b, 3), from one forward and backward."""
    started = time.perf_counter()
    x = torch.stack(flats).view(len(flats), *shape[1:]).requires_grad_()
    with torch.autocast(x.device.type, dtype=problem.autocast, enabled=problem.autocast is not None):
        totals, parts = problem.loss.per_image(x)
    totals.sum().backward()
    if problem.on_evaluation:
        problem.on_evaluation(time.perf_counter() - started)
    return totals.detach(), x.grad.reshape(len(flats), -1), parts.detach()
