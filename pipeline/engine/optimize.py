"""The optimisers: L-BFGS-B (bounded, with a line search) and Adam, behind one small interface.

Both see a :class:`Problem` (pixels -> loss, parts, gradient) and a :class:`Monitor` that owns
progress, the loss curve, early stopping, cancelling and checkpoints, so neither loop knows about them.
Measuring is public too: a listener (``StyleTransfer.stylize(..., listeners=[...])``) gets every step's
:class:`StepInfo` with its pixels and the loss evaluations so far, off the run's clock, so benchmarks and
tests watch a run without patching the loops.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
import torch
from scipy.optimize import Bounds, minimize

from ..errors import NonFinite
from .eta import Work
from .losses import TotalLoss

PART_NAMES = ("content", "style", "tv")


class _Stop(Exception):
    """Internal: the monitor asked the running loop to end (early stop or cancel)."""


@dataclass
class StepInfo:
    """What a listener (progress bar, status file, loss curve) gets after a step."""

    step: int
    total_steps: int
    scale: int
    n_scales: int
    size: tuple[int, int]
    loss: float
    content: float
    style: float
    tv: float
    elapsed: float
    eta: float | None
    picture: Callable[[], object] | None = None
    """The current pixels as a PIL picture, made only when called (the daemon's save_every)."""
    pixels: torch.Tensor | None = None
    """The optimiser's own tensor (canvas shape, not clamped): copy it before keeping it."""
    evaluations: int = 0
    """Loss evaluations (forward + backward) so far in this run: L-BFGS's line search makes more than one a step."""
    eval_seconds: float = 0.0
    """Wall seconds spent in those evaluations; elapsed minus this is the optimiser's own work (and the monitor's).
    On CUDA the host returns before the device is done, so there it is the host's share, not the kernels'."""
    tiles: int = 1
    """How many tiles each loss evaluation at this level is cut into (issue 14: 1 = untiled)."""
    setup: dict[str, float] | None = None
    """With a run's first step only: its set-up's parts in ms, host clock (Monitor.mark), "first_step" the rest:
    on CUDA that one also waits for the queued network work (the content targets, the first evaluations)."""


Listener = Callable[[StepInfo], None]
"""Gets each step the monitor sees. Listeners run off the clock: their time is not in ``elapsed``."""


@dataclass
class Problem:
    loss: TotalLoss
    autocast: torch.dtype | None = None
    on_evaluation: Callable[[float], None] | None = None
    """Told the seconds of each evaluation that computes a gradient, forward and backward together."""

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        started = time.perf_counter()
        if self.autocast is None:
            out = self.loss(pixels)
        else:
            with torch.autocast(pixels.device.type, dtype=self.autocast):
                out = self.loss(pixels)
        if self.on_evaluation and pixels.requires_grad:
            self._time_backward(pixels, started)
        return out

    def _time_backward(self, pixels: torch.Tensor, started: float) -> None:
        """The backward runs in the optimiser after this call returns; the pixels' gradient is the last thing it
        computes, so a one-shot hook on it marks the end of the evaluation without touching the loops."""
        def done(grad: torch.Tensor) -> None:
            handle.remove()
            self.on_evaluation(time.perf_counter() - started)

        handle = pixels.register_hook(done)


@dataclass
class Monitor:
    """Counts steps across scales and decides when to stop; the loops only call :meth:`step`."""

    total_steps: int
    n_scales: int
    log_every: int
    early_stop_tol: float
    early_stop_window: int
    on_step: Callable[[StepInfo], None] | None = None
    should_stop: Callable[[], bool] | None = None
    save: Callable[[torch.Tensor, dict], None] | None = None
    checkpoint_every: int = 25
    checkpoint_seconds: float = 0.0  # Settings.checkpoint_seconds (0: by steps alone)
    clock: Callable[[], float] = time.monotonic
    """Read only for the checkpoints' seconds; a test passes its own instead of patching time."""
    saved_at: int = 0
    saved_clock: float = 0.0  # the clock at the last checkpoint, or at the run's start (__post_init__)
    step_count: int = 0
    level_step: int = 0
    scale: int = 1
    size: tuple[int, int] = (0, 0)
    curve: list[dict] = field(default_factory=list)
    history: list[tuple[int, float]] = field(default_factory=list)
    stop_reason: str = "steps"
    started: float = field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0
    cancelled: bool = False
    render: Callable[[torch.Tensor], object] | None = None  # pixels -> picture, for StepInfo.picture
    listeners: list[Listener] = field(default_factory=list)
    evaluations: int = 0
    eval_seconds: float = 0.0
    tiles: int = 1  # the level's tile count (issue 14), told to listeners
    marks: list[tuple[str, float]] = field(default_factory=lambda: [("start", time.perf_counter())])
    setup: dict[str, float] | None = None  # the set-up's parts, once the first step has told them
    work: Work | None = None  # the levels' steps and costs, for the ETA (eta.py); None: every step alike

    def __post_init__(self) -> None:
        self.saved_clock = self.clock()

    def mark(self, part: str) -> None:
        """The set-up has ended ``part`` (issue 13: what lies between "job started" and the first step, told in ms
        with it). A part marked more than once adds up: a batch's photos share one list of marks (batch.py), each
        photo's copy and targets made one after another."""
        if self.setup is None:
            self.marks.append((part, time.perf_counter()))

    def _setup_parts(self) -> dict[str, float] | None:
        """The set-up's parts in ms, once: with the run's first step (a resumed run's too), never again."""
        if self.setup is not None:
            return None
        times = [at for _, at in self.marks] + [time.perf_counter()]
        names = [name for name, _ in self.marks[1:]] + ["first_step"]
        parts: dict[str, float] = {}
        for name, a, b in zip(names, times, times[1:]):
            parts[name] = parts.get(name, 0.0) + 1000 * (b - a)
        self.setup = {name: round(ms, 1) for name, ms in parts.items()}
        return self.setup

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def evaluated(self, seconds: float) -> None:
        """Problem.on_evaluation: count one loss evaluation and its time."""
        self.evaluations += 1
        self.eval_seconds += seconds

    def begin_level(self, scale: int, size: tuple[int, int], done: int = 0) -> None:
        """A new level starts its early stop's loss history afresh; a resumed one (``done`` steps in: only a
        checkpoint's level starts past 0) keeps the history its checkpoint gave back, so that it stops on the step
        the uninterrupted run stopped on (rev7b: cleared here, a run killed near its stop ran a window longer)."""
        self.scale, self.size, self.level_step = scale, size, done
        if not done:
            self.history.clear()

    def step(self, pixels: torch.Tensor, loss: float, parts: list[float], state: Callable[[], dict]) -> None:
        """Record one step (or several, for Adam's every-k reporting); raise _Stop to end the loop."""
        if not math.isfinite(loss):
            raise NonFinite(f"loss is {loss} at step {self.step_count}")
        self.history.append((self.level_step, loss))
        elapsed = self.elapsed
        info = StepInfo(self.step_count, self.total_steps, self.scale, self.n_scales, self.size, loss,
                        *parts, elapsed, self._eta(elapsed),
                        partial(self.render, pixels) if self.render else None, pixels, self.evaluations,
                        self.eval_seconds, self.tiles, self._setup_parts())
        if self.step_count % self.log_every == 0 or self.step_count == self.total_steps:
            self.curve.append({"step": self.step_count, "scale": self.scale, "loss": loss,
                               **dict(zip(PART_NAMES, parts)), "elapsed": round(elapsed, 3)})
        if self.on_step:
            self.on_step(info)
        self._tell_listeners(info)
        if self.should_stop and self.should_stop():
            self.cancelled, self.stop_reason = True, "cancelled"
            if self.save:
                self.save(pixels, state())
            raise _Stop
        if self._converged():
            self.stop_reason = "early_stop"
            raise _Stop
        if self._checkpoint_due():
            self.save(pixels, state())
            self.saved_at, self.saved_clock = self.step_count, self.clock()

    def _eta(self, elapsed: float) -> float | None:
        """Seconds left, each step weighted by its level's cost (eta.py); a monitor without the levels' plan (made
        alone, as in the checkpoint tests) counts every step alike."""
        if self.work is None:
            return elapsed / max(self.step_count, 1) * (self.total_steps - self.step_count)
        self.work.advance(self.step_count, self.scale - 1)
        return self.work.eta(elapsed, self.scale - 1, self.level_step)

    def _checkpoint_due(self) -> bool:
        """Enough steps (counted: Adam reports every log_every steps) and enough seconds since the last checkpoint,
        and not the run's last step, whose result is written next. Why both: on a GPU a checkpoint costs more than
        25 steps (Settings.checkpoint_seconds); on a slow CPU 30 s may be one step."""
        return (self.save is not None and self.step_count < self.total_steps
                and self.step_count - self.saved_at >= self.checkpoint_every
                and self.clock() - self.saved_clock >= self.checkpoint_seconds)

    def _tell_listeners(self, info: StepInfo) -> None:
        """Off the clock: a listener copying frames or judging them must not slow the run it measures."""
        started = time.perf_counter()
        for listener in self.listeners:
            listener(info)
        self.started += time.perf_counter() - started

    def _converged(self) -> bool:
        """Relative improvement over the last ``window`` steps below ``tol``."""
        if self.early_stop_tol <= 0 or not self.history:
            return False
        now_step, now = self.history[-1]
        past = [loss for step, loss in self.history if step <= now_step - self.early_stop_window]
        if not past:
            return False
        return (past[-1] - now) / max(abs(past[-1]), 1e-12) < self.early_stop_tol


def run_lbfgs(problem: Problem, x0: torch.Tensor, steps: int, monitor: Monitor, *,
              history: int, keep_in_range: bool) -> torch.Tensor:
    """scipy's L-BFGS-B: bounds keep every pixel in 0-255 during the search, with a proper line search.

    torch's LBFGS has no bounds, and without its line search it diverged to NaN on this loss.
    """
    shape, device = x0.shape, x0.device
    best = {"x": x0.detach().clone(), "loss": math.inf}
    last: dict = {}

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.from_numpy(flat).view(shape).to(device=device, dtype=torch.float32).requires_grad_()
        loss, parts = problem(x)
        loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFinite(f"loss is {value} at step {monitor.step_count}")
        last.update(x=x.detach(), loss=value, parts=parts)
        return value, x.grad.double().cpu().numpy().ravel()

    def callback(intermediate_result) -> None:
        monitor.step_count += 1
        monitor.level_step += 1
        if last["loss"] < best["loss"]:
            best.update(x=last["x"].clone(), loss=last["loss"])
        try:
            monitor.step(last["x"], last["loss"], last["parts"].tolist(), dict)
        except _Stop:
            raise StopIteration

    remaining = steps - monitor.level_step  # a resumed level has done some of its steps already
    if remaining <= 0:
        return x0
    bounds = Bounds(0.0, 255.0) if keep_in_range else None
    start = x0.detach().double().cpu().numpy().ravel()
    if keep_in_range:
        start = np.clip(start, 0.0, 255.0)
    result = minimize(fun, start, jac=True, method="L-BFGS-B", bounds=bounds, callback=callback,
                      options={"maxiter": remaining, "maxfun": remaining * 4, "maxcor": history,
                               "ftol": 0.0, "gtol": 0.0})
    if monitor.stop_reason == "steps" and monitor.level_step < steps:
        monitor.stop_reason = "converged"  # the line search could not improve further
    final = torch.from_numpy(result.x).view(shape).to(device=device, dtype=torch.float32)
    # L-BFGS-B returns its last iterate; keep the best one seen in case the last step went up.
    return final if float(result.fun) <= best["loss"] else best["x"]


def run_adam(problem: Problem, x0: torch.Tensor, steps: int, monitor: Monitor, *, lr: float,
             keep_in_range: bool, state: dict | None = None) -> torch.Tensor:
    """Adam in 0-255 pixel units; the loss is read back (a host sync) only every log_every steps."""
    x = x0.detach().clone().requires_grad_()
    opt = torch.optim.Adam([x], lr=lr)
    if state:
        opt.load_state_dict(state)
    done = monitor.level_step
    for i in range(done, steps):
        opt.zero_grad(set_to_none=True)
        loss, parts = problem(x)
        loss.backward()
        opt.step()
        if keep_in_range:
            with torch.no_grad():
                x.clamp_(0, 255)
        monitor.step_count += 1
        monitor.level_step += 1
        if monitor.level_step % monitor.log_every == 0 or i == steps - 1:
            try:
                monitor.step(x.detach(), float(loss.detach()), parts.tolist(), opt.state_dict)
            except _Stop:
                break
    return x.detach()


def is_blank(pixels: torch.Tensor) -> bool:
    """A flat or saturated picture: what a diverged run leaves behind."""
    flat = pixels.detach().float()
    saturated = ((flat <= 0.5) | (flat >= 254.5)).float().mean().item()
    return flat.std().item() < 1.0 or saturated > 0.9
