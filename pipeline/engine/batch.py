"""Several photos of one recipe through the network as one batch, each with its own L-BFGS (issue 13).

Why: at 512 px and below one photo leaves most of a GPU idle; the loss pass per image at batch 16 cost half of
batch 1 on an H200 (shared/notes/gpu.md). Each photo keeps its own L-BFGS state, step size, line search,
early stop and Result; only the network pass is shared, and one packed host read serves the whole batch. The
batch's loss is the sum of the photos' losses, so each photo's gradient is exactly its own.

Anything unusual sends a photo back to the one-photo path (``StyleTransfer.stylize``), which has the retries:
a lone photo, another optimiser, a NaN or a blank result, an out-of-memory. Photos of different working shapes
are batched by shape. No checkpoints here: a photo that must survive a kill runs alone. Two kinds of stop: the
batch's (``should_stop``: the daemon stops, the run window closes) ends the call with Cancelled, as a lone run's
does, or, where some photos had finished, with their Results and Cancelled in the other slots; one photo's
(``should_stop_one(i)``: that photo was cancelled) drops that photo alone, whose result is then Cancelled at its
step, and the others go on to theirs.
"""
from __future__ import annotations

import time
from functools import partial
from typing import Callable, Sequence

import torch
from PIL import Image

from ..errors import Cancelled, NonFinite, PipelineError
from . import content_target
from .device import out_of_memory
from .lbfgs import ProjectedLBFGS, advance
from .levels import for_size
from .losses import ContentLoss, TotalLoss
from .memory import cuda_free, photo_bytes
from .optimize import Problem, StepInfo, is_blank
from .precision import resolve
from .result import close
from .settings import Settings
from .walk import walk

STEP_ON = Callable[[int, StepInfo], None]
STOP_ONE = Callable[[int], bool]  # photo index -> this photo alone is to stop


def batch_size_for(device: torch.device, hw: tuple[int, int], settings: Settings = Settings(), limit: int = 16) -> int:
    """How many photos of this working shape (height, width) fit at once in ``settings`` (its optimiser, history
    and precision change a photo's cost): 1 off CUDA (a CPU gains nothing from batching), else what 80% of the
    free memory holds (within the process's cap, as the tile planner reads it)."""
    if device.type != "cuda":
        return 1
    cost = photo_bytes(hw, settings.optimizer, settings.lbfgs_history, resolve(device, settings.precision))
    return max(1, min(limit, int(0.8 * cuda_free(device)) // cost))


def stylize_batch(engine, make_run: Callable, contents: Sequence[Image.Image], styles: Sequence[Image.Image],
                  settings: Settings = Settings(), *, on_step: STEP_ON | None = None,
                  should_stop: Callable[[], bool] | None = None, should_stop_one: STOP_ONE | None = None) -> list:
    """One Result per photo, in order, or the photo's own error (see _alone), Cancelled for a photo that
    ``should_stop_one`` stopped (the batch's stop or error, for the photos not finished: _finished_or_raise); photos of the same working shape share each network pass.

    ``make_run(content, styles, settings, on_step, should_stop, checkpoint)`` is the engine's one-photo run
    (its preprocessing, pyramid, targets and Result), passed in so that this module does not import transfer.
    The photos are grouped from their sizes first, so a photo that runs alone is prepared once, by stylize.
    """
    settings.validate()
    settings.check_blend(len(styles))  # the batch's only blend check: its runs build targets without one
    results: list = [None] * len(contents)
    stop_one = should_stop_one or _never

    def prepare(i: int):
        return make_run(contents[i], list(styles), settings, _tagged(on_step, i), should_stop, None)

    try:
        for members in _groups(contents, settings):
            batched = len(members) > 1 and batchable(working_levels(contents[members[0]], settings), settings)
            started = time.perf_counter()
            runs = _alone(lambda: [prepare(i) for i in members]) if batched else None
            if isinstance(runs, list):  # not when preparing failed (too thin): each then runs alone, for its error
                _share_marks(runs, started)
                for i, result in _batched(engine, runs, members, settings, lambda k: stop_one(members[k])).items():
                    results[i] = result
            for i in members:
                if results[i] is None:  # alone: a lone photo, another optimiser, a failure or an out-of-memory
                    own = _own(should_stop, stop_one, i)
                    results[i] = _alone(lambda: engine.stylize(contents[i], styles, settings,
                                                               on_step=_tagged(on_step, i),
                                                               should_stop=lambda: bool(should_stop and should_stop())
                                                               or stop_one(i)), own)
    except Exception as exc:  # the batch's stop, or an error without a Reason (a device fault) in a lone rerun
        return _finished_or_raise(results, exc)
    return results


def _finished_or_raise(results: list, stop: Exception) -> list:
    """The batch's stop or its unreasoned error: photos already finished (an earlier shape group's, or a photo run
    alone before it) keep their Results, the others get the error; their Results were lost with the call's
    Cancelled (rev6b), and with a lone rerun's device fault the daemon gave every photo that error (rev6f B1).
    None finished: the call ends with the error, as a lone run's."""
    if all(result is None for result in results):
        raise stop
    return [stop if result is None else result for result in results]


def _share_marks(runs: list, started: float) -> None:
    """The batch's set-up is one: its photos' monitors mark its parts in one list (optimize.Monitor.mark), from
    the first run's making, so each photo's first step tells the batch's parts (runs, copy, style, content, state)."""
    marks = [("start", started)]
    for run in runs:
        run.monitor.marks = marks
        run.monitor.mark("runs")


def _own(should_stop: Callable[[], bool] | None, stop_one: STOP_ONE, i: int) -> Callable[[], bool]:
    """Is photo i stopped on its own (not with the batch)?"""
    return lambda: stop_one(i) and not (should_stop and should_stop())


def _never(*_) -> bool:
    """No photo stops on its own: the one default of should_stop_one, and of a stop the caller did not give."""
    return False


def _alone(stylize: Callable, own_stop: Callable[[], bool] = _never):
    """A photo's one-photo run; an error that is the photo's own (it has a Reason: too thin, failed twice; or
    ``own_stop`` says its cancel was its own) is its result, so that the batch's other photos keep theirs (the
    daemon concludes that job alone). Anything else (the batch's cancel, a device or weights error) is the whole
    batch's and goes up."""
    try:
        return stylize()
    except PipelineError as exc:
        if exc.reason is None:
            raise
        return exc
    except Cancelled as exc:
        if not own_stop():
            raise
        return exc


def batchable(levels: tuple, settings: Settings) -> bool:
    """Can photos of this pyramid share network passes? L-BFGS only, and not a multi-level ``scales: auto``
    print: its finer levels add the coarser sizes' style terms (pyramid.py), which JointLoss does not join, so
    such photos walked their coarse levels in the batch and then ran again, whole, alone. Nor ``preserve_color``:
    each photo's style pictures are matched to its own luminance, so each has its own style targets, and JointLoss
    and the closing judgement use the first photo's for all (photos 2..N were optimised against photo 1's)."""
    return (settings.optimizer == "lbfgs" and not settings.preserve_color
            and (settings.scales != "auto" or len(levels) == 1))


def working_levels(content: Image.Image, settings: Settings) -> tuple:
    """The pyramid a photo will take, from its size alone: what its run plans (the same rule), before anything
    is prepared."""
    return tuple(for_size(content.size, settings)[1])


def _groups(contents: Sequence[Image.Image], settings: Settings) -> list[list[int]]:
    """The photos' indices by working pyramid, in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, content in enumerate(contents):
        groups.setdefault(working_levels(content, settings), []).append(i)
    return list(groups.values())


def _batched(engine, runs: list, members: list[int], settings: Settings, stop_one: STOP_ONE) -> dict[int, object]:
    """The Results of the photos that came through the batch (Cancelled: one ``stop_one`` stopped, by its index in
    ``runs``); the others (failed, out of memory) run alone."""
    try:
        done = _Batch(engine, runs, settings, stop_one).run()
    except Exception as exc:
        if not out_of_memory(exc):  # the GPU's or the host's
            raise
        if engine.device.type == "cuda":
            torch.cuda.empty_cache()
        return {}
    return {i: result for i, result in zip(members, done) if result is not None}


def _tagged(on_step: STEP_ON | None, index: int):
    return (lambda info: on_step(index, info)) if on_step else None


class _Batch:
    """The runs of one working shape walked level by level (walk.py), each level through one batched loss."""

    def __init__(self, engine, runs: list, settings: Settings, stop_one: STOP_ONE) -> None:
        self.engine, self.runs, self.settings, self.stop_one = engine, runs, settings, stop_one
        self.dropped: dict[int, Cancelled] = {}  # id(run) -> its own cancel, for a photo stopped on its own

    def run(self) -> list:
        """Each run's Result, Cancelled for a photo stopped on its own, or None for a photo that must run alone."""
        if self.engine.fault_hook:
            self.engine.fault_hook(self.engine.device)
        torch.manual_seed(self.settings.seed)
        ends = walk(self.runs, self._level)
        judged = self._judged(ends)
        return [self.dropped.get(id(run)) if pixels is None else close(run, pixels, None, judged.get(k))
                for k, (run, pixels) in enumerate(zip(self.runs, ends))]

    def _judged(self, ends: list[torch.Tensor | None]) -> dict[int, dict[str, float]]:
        """The photos' judged losses (result.close's: the saved, clamped and rounded pictures), from ONE batched
        pass and one host read: closing each photo alone was a pass and four host reads a photo, one after
        another, between the batch's last step and the next batch (issue 13). {} where a photo is not plainly
        batched (a lone survivor, a tiled level): close() then judges each photo itself."""
        live = [k for k, pixels in enumerate(ends) if pixels is not None]
        if len(live) < 2:  # a lone survivor: close() judges it, as a lone run's
            return {}
        problems = [self.runs[k].loss(self.runs[k].levels[-1]) for k in live]
        if not all(type(p.loss) is TotalLoss for p in problems):
            return {}
        try:
            saved = torch.cat([ends[k].clamp(0, 255).round() for k in live])
            with torch.no_grad():
                totals, parts = JointLoss(problems)(list(range(len(live)))).loss.per_image(saved)
            values = torch.cat([totals[:, None], parts], dim=1).tolist()
        except Exception:  # noqa: BLE001 - the batch's results are made: never lose them to their judging (out of
            # memory, or a kernel error at a batch size the steps never used): close() judges each photo alone
            if ends[live[0]].device.type == "cuda":
                torch.cuda.empty_cache()  # what the failed pass held, back before each photo's own judging
            return {}
        return {k: dict(zip(("total", "content", "style", "tv"), v)) for k, v in zip(live, values)}

    def _stopped(self, run) -> bool:
        """This photo's own stop: it leaves the batch (the walk drops it), its result Cancelled at its step."""
        if not self.stop_one(next(k for k, other in enumerate(self.runs) if other is run)):
            return False
        self.dropped[id(run)] = Cancelled(run.monitor.step_count, None)
        return True

    def _level(self, index: int, runs: list, pixels: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """One level of the live runs: each photo's pixels after it, None for one that failed."""
        hw, steps = runs[0].levels[index], runs[0].steps_per_level[index]
        content_target.share(self.engine, runs, hw)  # the photos' content targets: one forward, not one a photo
        problems = [run.loss(hw) for run in runs]
        if not all(type(p.loss) is TotalLoss for p in problems):  # a tiled print's level: each runs alone
            return [None] * len(runs)
        history, keep = self.settings.lbfgs_history, self.settings.keep_in_range
        opts = [ProjectedLBFGS(self.engine.layout(p), history, keep) for p in pixels]
        for run in runs:
            run.monitor.mark("state")
        failed = _steps(opts, [run.monitor for run in runs], JointLoss(problems), steps,
                        lambda k: self._stopped(runs[k]))
        # a blank result is a failure too (the one-photo path retries it, gentler), unless its start was blank too
        # (a document, a high-key shot): as _Run._optimise_level judges it, else such a photo ran twice
        ends = [opt.pixels() for opt in opts]
        return [None if k in failed or (is_blank(end) and not is_blank(start)) else end
                for k, (end, start) in enumerate(zip(ends, pixels))]


def _steps(opts: list[ProjectedLBFGS], monitors: list, joint: "JointLoss", steps: int,
           stopped: Callable[[int], bool]) -> set[int]:
    """The level's steps of every photo, one batched evaluation and one host read at a time; the ones that left
    (failed, or ``stopped`` on their own: the others go on without them)."""
    failed: set[int] = set()
    active = list(range(len(opts))) if steps > 0 else []
    if active:
        totals, grads, _ = evaluate_batch(joint(active), [opt.x for opt in opts], opts[0].shape)
        for k, opt in enumerate(opts):
            opt.f, opt.g = totals[k], grads[k]
    while active:
        totals, grads, parts = evaluate_batch(joint(active), [opts[i].propose() for i in active], opts[0].shape)
        packs = torch.stack([opts[i].pack(totals[k], grads[k], parts[k]) for k, i in enumerate(active)])
        going = []
        for i, values in zip(active, packs.tolist()):  # the batch's one host read
            try:
                if advance(opts[i], values, monitors[i], steps):
                    going.append(i)
            except NonFinite:
                failed.add(i)
            if monitors[i].cancelled:
                return failed  # the batch's should_stop: the walk ends the whole batch with Cancelled, at once
        active = [i for i in going if not stopped(i)]
        failed.update(i for i in going if i not in active)
    return failed


class JointLoss:
    """One loss over the active photos: their content targets stacked, the shared style targets and weights;
    remade only when a photo leaves the batch. Each evaluation's time is shared among the photos in it."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems, self.active, self.problem = problems, None, None

    def __call__(self, active: list[int]) -> Problem:
        if active != self.active:
            first = self.problems[0].loss
            target = torch.cat([self.problems[i].loss.content.target for i in active])
            total = TotalLoss(first.vgg, ContentLoss(target), first.style, *first.weights)
            tells = [self.problems[i].on_evaluation for i in active]
            self.active = list(active)
            self.problem = Problem(total, self.problems[0].autocast, partial(_share, [t for t in tells if t]))
        return self.problem


def _share(tells: list[Callable[[float], None]], seconds: float) -> None:
    """One batched evaluation is one evaluation for each photo in it, and an equal share of its time."""
    for tell in tells:
        tell(seconds / len(tells))


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
