"""rev7b: the ETA weighs each step by its level's cost, so a print's coarse levels do not promise seconds for
minutes. One ETA (StepInfo.eta) feeds the CLI's bar, `status` and systemd's STATUS= line."""
from __future__ import annotations

import pytest

from pipeline.engine import Settings
from pipeline.engine.eta import Work, level_costs, tiled
from pipeline.engine.levels import levels
from pipeline.engine.tiles import TilePlan


def _told(work: Work, per_unit: float, startup: float) -> list[tuple[float, float]]:
    """(ETA, seconds actually left) after each step of ``work``'s plan, each step costing its level's cost times
    ``per_unit`` seconds, after a set-up of ``startup`` seconds: the machine the ETA assumes, made exact."""
    clock, told = startup, []
    for level, steps in enumerate(work.steps):
        for level_step in range(1, steps + 1):
            clock += work.costs[level] * per_unit
            work.advance(work.counted + 1, level)
            told.append((work.eta(clock, level, level_step), clock))
    return [(eta, clock - at) for eta, at in told]


def test_a_4096_px_auto_prints_eta_at_the_end_of_its_coarse_level_is_the_time_left():
    """The reviewer's estimate: a 4096 px auto print (steps 150/75/37/20, each level 4x the pixels of the one below
    and the coarser levels' style terms beside it): counting steps alike, the ETA at the end of the coarse level
    said about 1/16 of the time left. Weighted, it says the time left, from the second step on."""
    found, steps = levels((4096, 4096), Settings(size=4096, scales="auto"))
    assert len(found) >= 3 and steps[0] > steps[-1], (found, steps)
    work = Work(steps, level_costs(found, pyramid=True))
    told = _told(work, per_unit=1e-6, startup=5.0)
    for eta, left in told[1:]:
        assert abs(eta - left) <= 1e-6 * max(left, 1.0), (eta, left)
    _, left = told[steps[0] - 1]
    flat = work.costs[0] * 1e-6 * (sum(steps) - steps[0])  # the old rule there: seconds per step x steps left
    assert flat < left / 8, "the scenario is the one the old rule got wrong"


def test_the_first_eta_holds_the_set_up_and_is_too_long_not_too_short():
    work = Work([4, 4], level_costs([(64, 64), (128, 128)], pyramid=False))
    (eta, left), *_ = _told(work, per_unit=1e-5, startup=30.0)
    assert eta >= left


def test_a_resumed_run_counts_the_work_before_it_as_planned():
    work = Work([10, 10], [1.0, 4.0])
    work.resumed(1, 5, 15)
    assert work.done == 10 * 1.0 + 5 * 4.0 and work.left(1, 5) == 5 * 4.0
    work.advance(16, 1)
    assert work.done == 34.0


def test_a_tiled_levels_step_costs_its_halos_too():
    plan = TilePlan((96, 96), 32, 8)  # 9 tiles of core 32, each seeing up to 8 px more on each inner side
    assert plan.count == 9
    assert tiled(1.0, plan) == (40 + 48 + 40) ** 2 / 96 ** 2  # rows and columns seen: 0-40, 24-72, 56-96


def test_the_engines_eta_at_the_end_of_a_coarse_level_is_not_a_fraction_of_the_truth(engine, content, style,
                                                                                       torch_threads):
    """The probe's scenario end to end: levels 64/128/256 px, 4 Adam steps each. Counting steps alike the ETA
    said 3.2 s at the end of level 2 where 14.3 s were left (2-core box); weighted it said 20.2 s for 20.0 s.
    Checked exactly against the run's own clock, not against the seconds that followed (ETA >= half of them, which a
    load spike after step 8 could break): from step 2 on the ETA is the rate since step 1 per pixel of work, times
    the pixels left, each step costing its level's pixels (4x the level below); the machine-model tests above show
    that this is the time left."""
    settings = Settings(size=256, steps=4, scales=3, coarse_steps=4, optimizer="adam", log_every=1,
                        early_stop_tol=0)
    seen = []
    engine.stylize(content, [style], settings, on_step=seen.append)
    sizes = [i.size for i in seen]
    assert sizes[::4] == [(64, 64), (128, 128), (256, 256)] and len(seen) == 12
    cost = [h * w for h, w in sizes]  # each step's pixels through the network
    first = seen[0].elapsed
    for n, info in enumerate(seen[1:], start=1):
        rate = (info.elapsed - first) / sum(cost[1:n + 1])
        assert info.eta == pytest.approx(rate * sum(cost[n + 1:]), rel=1e-9, abs=1e-12), (info.step, info.eta)
