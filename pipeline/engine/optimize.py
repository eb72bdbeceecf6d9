"""The optimisers: L-BFGS-B (bounded, with a line search) and Adam, behind one small interface.

Both see a :class:`Problem` (pixels -> loss, parts, gradient) and a :class:`Monitor` that owns
progress, the loss curve, early stopping, cancelling and checkpoints, so neither loop knows about them.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from scipy.optimize import Bounds, minimize

from .losses import TotalLoss

PART_NAMES = ("content", "style", "tv")


class NonFinite(Exception):
    """The loss or its gradient became NaN/inf."""


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
    tiles: int = 1
    """How many tiles each loss evaluation at this level is cut into (issue 14: 1 = untiled)."""


@dataclass
class Problem:
    loss: TotalLoss
    autocast: torch.dtype | None = None

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.autocast is None:
            return self.loss(pixels)
        with torch.autocast(pixels.device.type, dtype=self.autocast):
            return self.loss(pixels)


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
    saved_at: int = 0
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

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def begin_level(self, scale: int, size: tuple[int, int], done: int = 0) -> None:
        self.scale, self.size, self.level_step = scale, size, done
        self.history.clear()

    def step(self, pixels: torch.Tensor, loss: float, parts: list[float], state: Callable[[], dict]) -> None:
        """Record one step (or several, for Adam's every-k reporting); raise _Stop to end the loop."""
        if not math.isfinite(loss):
            raise NonFinite(f"loss is {loss} at step {self.step_count}")
        self.history.append((self.level_step, loss))
        elapsed = self.elapsed
        rate = elapsed / max(self.step_count, 1)
        info = StepInfo(self.step_count, self.total_steps, self.scale, self.n_scales, self.size, loss,
                        *parts, elapsed, rate * (self.total_steps - self.step_count),
                        (lambda: self.render(pixels)) if self.render else None)
        if self.step_count % self.log_every == 0 or self.step_count == self.total_steps:
            self.curve.append({"step": self.step_count, "scale": self.scale, "loss": loss,
                               **dict(zip(PART_NAMES, parts)), "elapsed": round(elapsed, 3)})
        if self.on_step:
            self.on_step(info)
        if self.save and self.step_count - self.saved_at >= self.checkpoint_every:
            self.saved_at = self.step_count  # Adam reports every log_every steps: count, don't take a modulo
            self.save(pixels, state())
        if self.should_stop and self.should_stop():
            self.cancelled, self.stop_reason = True, "cancelled"
            if self.save:
                self.save(pixels, state())
            raise _Stop
        if self._converged():
            self.stop_reason = "early_stop"
            raise _Stop

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


def run_projected_lbfgs(problem: Problem, x0: torch.Tensor, steps: int, monitor: Monitor, *,
                        history: int, keep_in_range: bool) -> torch.Tensor:
    """L-BFGS on the device, projected onto the 0-255 box, with a backtracking (Armijo) line search.

    The two-loop recursion runs in torch where the pixels live: no float64 copies to the host and no
    O(m^2 n) compact-matrix work as in L-BFGS-B, which cost more than the network itself here. Bounds
    are kept by projecting each trial point (Bertsekas' projected quasi-Newton): directions that push a
    pixel already at a bound further out are dropped, and the line search walks the projected path.
    """
    lo, hi = (0.0, 255.0) if keep_in_range else (-math.inf, math.inf)
    x = x0.detach().clamp(lo, hi)

    def evaluate(point: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        var = point.detach().requires_grad_()
        loss, parts = problem(var)
        loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFinite(f"loss is {value} at step {monitor.step_count}")
        return value, var.grad.detach(), parts

    f, g, parts = evaluate(x)
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    for _ in range(steps - monitor.level_step):
        d = _direction(g, pairs)
        blocked = ((x <= lo) & (d < 0)) | ((x >= hi) & (d > 0))
        d = d.masked_fill(blocked, 0.0)
        slope = float((g * d).sum())
        if not slope < 0:  # not a descent direction: forget the curvature and go down the gradient
            pairs.clear()
            d = _direction(g, pairs).masked_fill(blocked, 0.0)
            slope = float((g * d).sum())
            if not slope < 0:
                monitor.stop_reason = "converged"
                break
        t, accepted = 1.0, False
        for _ in range(12):
            trial = (x + t * d).clamp(lo, hi)
            f_new, g_new, parts_new = evaluate(trial)
            if f_new <= f + 1e-4 * float((g * (trial - x)).sum()):
                accepted = True
                break
            t *= 0.5
        if not accepted:
            monitor.stop_reason = "converged"  # no decrease along the projected path: a stationary point
            break
        s_vec, y_vec = trial - x, g_new - g
        sy = float((s_vec * y_vec).sum())
        if sy > 1e-10 * float((y_vec * y_vec).sum()):
            pairs.append((s_vec, y_vec, 1.0 / sy))
            if len(pairs) > history:
                pairs.pop(0)
        x, f, g, parts = trial, f_new, g_new, parts_new
        monitor.step_count += 1
        monitor.level_step += 1
        try:
            monitor.step(x, f, parts.tolist(), dict)
        except _Stop:
            break
    return x


def _direction(g: torch.Tensor, pairs: list) -> torch.Tensor:
    """The L-BFGS two-loop recursion: -H g, with H scaled by the newest pair's s.y / y.y."""
    if not pairs:
        return -g * (8.0 / max(float(g.abs().max()), 1e-12))  # first step: at most 8 grey levels per pixel
    # Scalars stay 0-d tensors on the device: on CUDA a float() per pair would be 2m host syncs a step.
    q = g.clone()
    alphas = []
    for s_vec, y_vec, rho in reversed(pairs):
        a = rho * (s_vec * q).sum()
        alphas.append(a)
        q.sub_(y_vec * a)
    s_last, y_last, _ = pairs[-1]
    q.mul_((s_last * y_last).sum() / (y_last * y_last).sum())
    for (s_vec, y_vec, rho), a in zip(pairs, reversed(alphas)):
        b = rho * (y_vec * q).sum()
        q.add_(s_vec * (a - b))
    return -q


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
