"""Issue 13, stops inside a batch on a slot: one photo's cancel (Executor.cancel) drops that photo alone, the
others go on to their results; a closing run window (pause) or a daemon stop still stops the whole batch. A pool
on the CPU with ``batch: 3``, the real engine, tiny photos."""
from __future__ import annotations

import collections

import pytest

from daemon_helpers import outputs, wait_for
from pipeline.daemon.pool import Pool
from test_batch_landing import _pool

pytestmark = pytest.mark.usefixtures("torch_threads")
NAMES = {"a.jpg": "coffee.jpg", "b.jpg": "rocket.jpg", "c.jpg": "coffee.jpg"}


def _acting_at_step(engine, monkeypatch, act) -> list:
    """The batch's steps as (photo index, step); ``act(index, step)`` is called at each (in the slot's thread)."""
    seen, real = [], engine.stylize_batch

    def stylize_batch(*args, on_step, **kwargs):
        def tell(i, info):
            seen.append((i, info.step))
            act(i, info.step)
            on_step(i, info)
        return real(*args, on_step=tell, **kwargs)

    monkeypatch.setattr(engine, "stylize_batch", stylize_batch)
    return seen


def _held_as_it_starts(monkeypatch) -> dict:
    """{"pool": the pool}, filled as it starts its slot: set after _pool returned, a slot that reached its first
    step first (a loaded box) found it empty."""
    holder, real_start = {}, Pool.start
    monkeypatch.setattr(Pool, "start", lambda self: holder.update(pool=self) or real_start(self))
    return holder


def test_one_photos_cancel_in_a_batch_stops_that_photo_alone(tmp_path, engine, monkeypatch):
    holder, submitted, real_submit = _held_as_it_starts(monkeypatch), {}, Pool.submit
    monkeypatch.setattr(Pool, "submit", lambda self, job: submitted.update({job.name: job}) or real_submit(self, job))
    seen = _acting_at_step(engine, monkeypatch,
                           lambda i, step: i == 1 and step == 1 and holder["pool"].cancel(submitted["b.jpg"]))
    pool, closed = _pool(tmp_path, engine, monkeypatch, NAMES, batch=3)
    wait_for(lambda: len(closed) >= 3, 60)
    pool.close(10)
    outcomes = {o.job.name: o for o in pool.poll()}
    assert {name: o.kind for name, o in outcomes.items()} == {"a.jpg": "done", "b.jpg": "cancelled", "c.jpg": "done"}
    assert outcomes["b.jpg"].retry_at is not None, "the daemon queues it again, as a lone photo's cancel"
    assert [step for i, step in seen if i == 1] == [1], "b stopped at the step its cancel came"
    assert [step for i, step in seen if i != 1] == [1, 1, 2, 2], "a and c went on to their last step (2)"
    assert sorted(p.name for p in outputs(tmp_path)) == ["a.png", "c.png"]
    assert len(closed) == 3 and pool.progress().open_jobs == 0 and not pool._cancels


def test_a_closing_run_window_stops_the_whole_batch(tmp_path, engine, monkeypatch):
    holder = _held_as_it_starts(monkeypatch)
    _acting_at_step(engine, monkeypatch, lambda i, step: step == 1 and holder["pool"].pause())
    pool, closed = _pool(tmp_path, engine, monkeypatch, NAMES, batch=3)
    wait_for(lambda: len(closed) >= 3, 60)
    pool.close(10)
    assert collections.Counter(o.kind for o in pool.poll()) == {"cancelled": 3}
    assert outputs(tmp_path) == []
