"""The shipped L-BFGS before issue 13 (two-loop recursion, ~8 host reads a step), kept only so that bench/gpu.py
can time the old and the new step side by side in one run. Verbatim from pipeline/engine/optimize.py at 13e5b16."""
from __future__ import annotations

import math

import torch

from pipeline.engine.optimize import Monitor, NonFinite, Problem, _Stop


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

