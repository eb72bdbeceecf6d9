"""The time left in a run, with each step weighted by its level's cost (rev7b).

Why: the ETA was (elapsed / steps done) x steps left, as if every step cost the same. A pyramid level's step costs
about 4x the one below it (twice the side), more with the coarser levels' style terms (pyramid.py) and the tiles'
halos, so during a print's coarse levels the ETA was a fraction of the truth: 3.2 s said where 14.3 s were left at
64/128/256 px (2-core box), and for a 4096 px auto print "2 min" where about 30 were left. Here the rate is measured
per unit of work (a step's pixels through the network) and the work left is counted in the same units. One ETA
serves every reader: StepInfo.eta, which the CLI's bar, the daemon's status.json (`status`) and systemd's STATUS=
line all show.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import shapes


def level_costs(levels: list[tuple[int, int]], pyramid: bool) -> list[float]:
    """The cost of one step at each level, in pixels through the network: the level's canvas, plus (``pyramid``:
    ``scales: auto``'s coarser style terms) each coarser level's picture. Tiles come as each level's plan is made
    (:func:`tiled`)."""
    canvases = [h * w for h, w in map(shapes.canvas, levels)]
    return [float(pixels + (sum(h * w for h, w in levels[:i]) if pyramid else 0))
            for i, pixels in enumerate(canvases)]


def tiled(cost: float, plan) -> float:
    """A level's step cost cut by ``plan`` (tiles.TilePlan): each tile's halo is seen by the network too."""
    whole = plan.hw[0] * plan.hw[1]
    seen = sum((t.rows[1] - t.rows[0]) * (t.cols[1] - t.cols[0]) for t in plan.tiles())
    return cost * seen / whole


@dataclass
class Work:
    """A run's planned steps and their costs, level by level, and the weighted work done so far."""

    steps: list[int]
    costs: list[float]
    done: float = 0.0
    counted: int = 0  # the run's step count when ``done`` was last brought up to date
    since: tuple[float, float] | None = None  # (elapsed, done) at the first step told: the rate's start

    def advance(self, step_count: int, level: int) -> None:
        """The steps since the last call, at ``level``'s cost (Adam tells the monitor every log_every steps; a retry
        going back to an earlier step counts its steps again: they were worked twice)."""
        self.done += max(0, step_count - self.counted) * self.costs[level]
        self.counted = step_count

    def resumed(self, level: int, level_step: int, step_count: int) -> None:
        """A run resumed from a checkpoint: the work before it as planned (its seconds are in the elapsed time)."""
        self.done = sum(s * c for s, c in zip(self.steps[:level], self.costs[:level])) + level_step * self.costs[level]
        self.counted = step_count

    def left(self, level: int, level_step: int) -> float:
        later = sum(s * c for s, c in zip(self.steps[level + 1:], self.costs[level + 1:]))
        return max(0, self.steps[level] - level_step) * self.costs[level] + later

    def eta(self, elapsed: float, level: int, level_step: int) -> float | None:
        """Seconds left: the rate per unit of work, times the work left. The rate is measured from the first step
        this process told: the set-up before it (the weights' first use, the paintings' Grams) weighed against one
        coarse step's work made the first ETAs 20x the truth (706 s said, 36 s left, 64/128/256 px); with no step
        since, elapsed over the work done (set-up in: too long, never too short)."""
        if self.done <= 0:
            return None
        if self.since is None:
            self.since = (elapsed, self.done)
        seconds, work = (elapsed - self.since[0], self.done - self.since[1]) if self.done > self.since[1] else (
            elapsed, self.done)
        return seconds / work * self.left(level, level_step)
