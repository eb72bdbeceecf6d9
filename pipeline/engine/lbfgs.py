"""Projected L-BFGS on the device in the compact form (Byrd, Nocedal and Schnabel 1994), one host read a step.

Why this shape: on a GPU the two-loop recursion over 20 full-size pairs was ~250 kernel launches a step, and
the loop read ~8 scalars back to the host (each a device sync), which cost more than the network itself
(shared/notes/gpu.md). Here the iterate, the gradient and the history live in flat contiguous fp32 buffers,
the pairs stacked as one (2m, n) matrix ``[S; Y]``; the direction is two matrix-vector products over it plus
m x m triangular solves, and everything the host must decide on (the loss, the Armijo test, the curvature
test, the descent test, NaN) comes back in ONE packed read per loss evaluation. A step accepted at the first
trial (nearly all of them) therefore does exactly one host read; each backtrack costs one more.

Bounds are kept as before (Bertsekas' projected quasi-Newton): directions pushing a pixel already at a bound
further out are dropped, and the line search walks the projected path ``clamp(x + t d)``.

The stepper is split into propose / pack / consume so that :mod:`.batch` can run many photos, each with its
own state, step size and early stop, through one batched network pass and still read the host once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import NonFinite
from .optimize import Monitor, Problem, _Stop

ARMIJO = 1e-4
MAX_BACKTRACKS = 12
FIRST_STEP = 8.0  # the first step moves each pixel at most this many grey levels


@dataclass
class Outcome:
    """What the host learnt from one evaluation: a step taken (with its loss), a retry, or the end."""

    kind: str  # "step", "retry" or "converged"
    loss: float = math.nan
    parts: tuple[float, ...] = ()


class ProjectedLBFGS:
    """The state of one photo's L-BFGS: flat fp32 iterate/gradient, a (2m, n) ring of pairs, m x m products."""

    def __init__(self, x0: torch.Tensor, history: int, keep_in_range: bool) -> None:
        self.shape = x0.shape
        self.lo, self.hi = (0.0, 255.0) if keep_in_range else (-math.inf, math.inf)
        self.x = x0.detach().float().contiguous().reshape(-1).clamp(self.lo, self.hi)
        n, m, dev = self.x.numel(), history, self.x.device
        self.m = m
        self.pairs = torch.zeros(2 * m, n, device=dev)  # rows 0..m-1: s (slot order), m..2m-1: y
        self.sy = torch.zeros(m, m, device=dev, dtype=torch.float64)  # sy[i, j] = s_i . y_j
        self.yy = torch.zeros(m, m, device=dev, dtype=torch.float64)
        self.valid = torch.zeros(m, device=dev, dtype=torch.float64)
        self.rolls = (torch.arange(m, device=dev)[None] + torch.arange(m, device=dev)[:, None]) % m
        self.start = self.count = 0  # ring: oldest slot, pairs held
        self.f: torch.Tensor | None = None  # 0-d, on the device
        self.g: torch.Tensor | None = None
        self.pg: torch.Tensor | None = None  # pairs @ g, kept from the last update: saves a pass
        self.tries = 0
        self.t = 1.0

    # --- the direction -----------------------------------------------------------------------------------
    def _gradient_direction(self) -> torch.Tensor:
        return self.g * (-FIRST_STEP / self.g.abs().max().clamp_min(1e-12))

    def _compact_direction(self) -> torch.Tensor:
        """-H g with H the L-BFGS inverse Hessian in compact form, H0 = (s.y / y.y of the newest pair) I.

        An empty slot holds s = y = 0; with a 1 on R's diagonal it drops out exactly, so the ring needs no
        host-side bookkeeping beyond two ints.
        """
        m, idx = self.m, self.rolls[self.start]  # chronological order of the slots
        uv = self.pg.double()
        u, v = uv[:m][idx], uv[m:][idx]
        sy, yy, valid = self.sy[idx][:, idx], self.yy[idx][:, idx], self.valid[idx]
        newest = (self.start + self.count - 1) % m
        gamma = self.sy[newest, newest] / self.yy[newest, newest]
        r = torch.triu(sy) + torch.diag(1.0 - valid)
        p = torch.linalg.solve_triangular(r, u[:, None], upper=True)
        rhs = (torch.diag(torch.diagonal(sy)) + gamma * yy) @ p - gamma * v[:, None]
        top = torch.linalg.solve_triangular(r.T, rhs, upper=False)
        back = self.rolls[(m - self.start) % m]  # chronological -> slot order
        coef = torch.cat([top[back, 0], -gamma * p[back, 0]]).float()
        return -torch.addmv(self.g * gamma.float(), self.pairs.T, coef)

    @staticmethod
    def _project(d: torch.Tensor, at_lo: torch.Tensor, at_hi: torch.Tensor) -> torch.Tensor:
        """Drop the components that push a pixel already at a bound further out."""
        return d.masked_fill((at_lo & (d < 0)) | (at_hi & (d > 0)), 0.0)

    # --- one evaluation: propose a trial, pack what the host needs, consume the read ---------------------
    def propose(self) -> torch.Tensor:
        """The next trial point (flat); a new step's direction is made on the first try."""
        if self.tries == 0:
            self.t = 1.0
            bounds = (self.x <= self.lo, self.x >= self.hi)  # the pixels at a bound: once a step, for both directions
            grad_dir = self._project(self._gradient_direction(), *bounds)
            self.slope_g = torch.dot(self.g, grad_dir)
            if self.count == 0:
                self.d, self.slope = grad_dir, self.slope_g
            else:
                d = self._project(self._compact_direction(), *bounds)
                slope = torch.dot(self.g, d)
                self.slope = slope
                self.d = torch.where(slope < 0, d, grad_dir)  # not a descent direction: down the gradient
        self.trial = torch.clamp(self.x + self.t * self.d, self.lo, self.hi)
        return self.trial

    def pack(self, f_new: torch.Tensor, g_new: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        """Everything the host decides on, as one small device tensor (read with the others at once)."""
        self.f_new, self.g_new = f_new, g_new
        s = self.trial - self.x
        y = g_new - self.g
        self.s, self.y = s, y
        bound = self.f.double() + ARMIJO * torch.dot(self.g, s).double()  # fp64 as the host's test was
        return torch.stack([f_new.double(), *parts.double(), bound, self.slope.double(), self.slope_g.double(),
                            torch.dot(s, y).double(), torch.dot(y, y).double(), self.f.double()])

    def consume(self, values: list[float]) -> Outcome:
        """The host's half of the step, on the packed read: accept, backtrack, or stop."""
        f_new, c, st, tv, bound, slope, slope_g, sy, yy, f = values
        if not (math.isfinite(f) and math.isfinite(f_new)):
            raise NonFinite(f"loss is {f_new if math.isfinite(f) else f}")
        if self.tries == 0 and not slope < 0:
            if not slope_g < 0:
                return Outcome("converged")  # not even the gradient goes down: a stationary point
            self.clear()  # the curvature misled: forget it (the gradient step was taken instead)
        if not f_new <= bound:
            self.tries += 1
            self.t *= 0.5
            return Outcome("converged") if self.tries >= MAX_BACKTRACKS else Outcome("retry")
        self.tries = 0
        self.x, self.f, self.g = self.trial, self.f_new, self.g_new
        self._remember(sy > 1e-10 * yy)
        return Outcome("step", f_new, (c, st, tv))

    # --- the history ---------------------------------------------------------------------------------------
    def _remember(self, curvature_ok: bool) -> None:
        """Store (s, y) in the ring and update the m x m products, in one (2m, n) x (n, 3) product with g."""
        m = self.m
        if curvature_ok:
            slot = (self.start + self.count) % m
            if self.count == m:
                self.start = (self.start + 1) % m
            else:
                self.count += 1
            self.pairs[slot].copy_(self.s)
            self.pairs[m + slot].copy_(self.y)
            q = (self.pairs @ torch.stack([self.s, self.y, self.g], dim=1)).double()
            self.sy[slot, :] = q[m:, 0]
            self.sy[:, slot] = q[:m, 1]
            self.yy[slot, :] = q[m:, 1]
            self.yy[:, slot] = q[m:, 1]
            self.valid[slot] = 1.0
            self.pg = q[:, 2].float()
        elif self.count:
            self.pg = self.pairs @ self.g
        self.s = self.y = self.g_new = self.trial = None

    def clear(self) -> None:
        self.pairs.zero_()
        self.sy.zero_()
        self.yy.zero_()
        self.valid.zero_()
        self.start = self.count = 0

    # --- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything to continue exactly where this stopped (on the CPU, for the checkpoint)."""
        keys = ("x", "g", "pairs", "sy", "yy", "valid") + (("pg",) if self.count else ())  # pg: bit-exact resume
        cpu = {k: getattr(self, k).cpu() for k in keys}
        return {"kind": "compact-lbfgs", "m": self.m, "start": self.start, "count": self.count,
                "f": self.f.detach().cpu(), **cpu}

    def load_state_dict(self, state: dict | None) -> bool:
        """Take a checkpoint's history if it fits this run (same memory and size); say whether it did."""
        if not state or state.get("kind") != "compact-lbfgs" or state["m"] != self.m \
                or state["x"].numel() != self.x.numel():
            return False
        dev = self.x.device
        for key in ("x", "g", "pairs", "sy", "yy", "valid"):
            setattr(self, key, state[key].to(dev))
        self.f, self.start, self.count = state["f"].to(dev), state["start"], state["count"]
        self.pg = state["pg"].to(dev) if self.count else None
        return True

    def pixels(self) -> torch.Tensor:
        return self.x.view(self.shape)


def evaluate(problem: Problem, flat: torch.Tensor, shape: torch.Size) -> tuple[torch.Tensor, ...]:
    """Loss (0-d, on the device), flat gradient and parts at a point; no host read."""
    var = flat.detach().view(shape).requires_grad_()
    loss, parts = problem(var)
    loss.backward()
    return loss.detach(), var.grad.reshape(-1), parts


def run_projected_lbfgs(problem: Problem, x0: torch.Tensor, steps: int, monitor: Monitor, *,
                        history: int, keep_in_range: bool, state: dict | None = None) -> torch.Tensor:
    """L-BFGS on the device, projected onto the 0-255 box, with a backtracking (Armijo) line search."""
    opt = ProjectedLBFGS(x0, history, keep_in_range)
    if monitor.level_step >= steps:
        return opt.pixels()
    if not opt.load_state_dict(state):
        opt.f, opt.g, _ = evaluate(problem, opt.x, opt.shape)
    going = True
    while going:
        f_new, g_new, parts = evaluate(problem, opt.propose(), opt.shape)
        try:
            going = advance(opt, opt.pack(f_new, g_new, parts).tolist(), monitor, steps)  # the step's one read
        except NonFinite as exc:
            raise NonFinite(f"{exc} at step {monitor.step_count}") from None
    return opt.pixels()


def advance(opt: ProjectedLBFGS, values: list[float], monitor: Monitor, steps: int) -> bool:
    """The host's half of one evaluation, for a lone run and each photo of a batch (batch.py) alike: the step
    counted and shown to the monitor when taken; False when this level is done (its steps, a stop, the end of
    the line search). NonFinite goes to the caller: a lone run retries gentler, a batch sends the photo alone."""
    outcome = opt.consume(values)
    if outcome.kind == "converged":
        monitor.stop_reason = "converged"
        return False
    if outcome.kind == "retry":
        return True
    monitor.step_count += 1
    monitor.level_step += 1
    try:
        monitor.step(opt.pixels(), outcome.loss, list(outcome.parts), opt.state_dict)
    except _Stop:
        return False
    return monitor.level_step < steps
