"""The JSON log records the step each Adam level took, beside ``style_weights`` and ``level_steps`` (rev9g #3).

README's log table says ``settings.lr`` is the step an Adam run took, halved after a gentle retry. With several levels
that was one number, overwritten at every level: a NaN at the coarse level, retried there at 1.0, then the fine level
at 2.0, logged lr 2.0 and no word of the 1.0 (the retries text says only "with a smaller step"); a retry at the final
level logged 1.0 for a run whose coarse level stepped at 2.0. Now ``level_lrs`` says each level's step, in the
engine's log and the daemon's (joblog.build), and a checkpoint keeps it for a resumed run.
"""
from __future__ import annotations

import pytest

from pipeline.daemon import joblog
from pipeline.engine import Settings, transfer

pytestmark = pytest.mark.usefixtures("torch_threads")

TWO_LEVELS = Settings(size=64, steps=3, scales=2, coarse_steps=3, optimizer="adam", keep_in_range=False, log_every=1)


def _explode_at(call: int, monkeypatch) -> list[float]:
    """run_adam's ``call``-th call (1-based) steps at 1e30: a NaN, which the run retries gently at that level."""
    real, lrs = transfer.run_adam, []

    def exploding(*args, lr, **kwargs):
        lrs.append(lr)
        return real(*args, lr=1e30 if len(lrs) == call else lr, **kwargs)

    monkeypatch.setattr(transfer, "run_adam", exploding)
    return lrs


@pytest.mark.parametrize("call, stepped, per_level", [(1, [2.0, 1.0, 2.0], [1.0, 2.0]),  # the coarse level retried
                                                      (2, [2.0, 2.0, 1.0], [2.0, 1.0])])  # the final level retried
def test_each_levels_step_is_in_the_log(engine, content, content_path, style, style_path, monkeypatch,
                                        call, stepped, per_level):
    lrs = _explode_at(call, monkeypatch)
    result = engine.stylize(content, [style], TWO_LEVELS)
    assert len(result.scales) == 2 and len(result.retries) == 1 and lrs == stepped
    log = result.log()
    assert log["level_lrs"] == per_level, f"the steps taken were {lrs}, the log says {log['level_lrs']}"
    assert log["settings"]["lr"] == per_level[-1]  # settings.lr: the final level's, as before
    daemon_log = joblog.build(result, content_path, content.size, [(style_path, 1.0)])
    assert daemon_log["level_lrs"] == per_level


def test_lbfgs_has_no_step_to_log(engine, content, style):
    result = engine.stylize(content, [style], Settings(size=32, steps=2, early_stop_tol=0))
    assert result.log()["level_lrs"] == []


def test_a_resumed_run_keeps_the_coarse_levels_retried_step(engine, content, style, monkeypatch, tmp_path):
    """Cancelled in the fine level after the coarse level's gentle retry, then resumed (the coarse level is not run
    again): the checkpoint keeps the coarse level's 1.0."""
    from pipeline.errors import Cancelled

    _explode_at(1, monkeypatch)
    settings = TWO_LEVELS.replace(checkpoint_every=1, checkpoint_seconds=0)
    checkpoint, seen = tmp_path / "run.ckpt", []
    with pytest.raises(Cancelled):
        engine.stylize(content, [style], settings, checkpoint=checkpoint,
                       on_step=lambda info: seen.append(info.step), should_stop=lambda: seen[-1:] == [5])  # in the fine level
    monkeypatch.undo()
    resumed = engine.stylize(content, [style], settings, checkpoint=checkpoint)
    assert resumed.resumed_from_step == 5 and len(resumed.retries) == 1
    assert resumed.log()["level_lrs"] == [1.0, 2.0]
