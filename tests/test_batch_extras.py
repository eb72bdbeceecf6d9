"""Issue 13, the photos a slot takes beside the one in hand: one that turns out different once opened runs alone
after the batch and lands behind like a lone photo; one whose try ended in the slot is never given back as
crashed too; the next batch's photos are prepared ahead, as many as a batch takes. A pool on the CPU with
``batch: N`` (the CPU batches when told to), the real engine, tiny photos."""
from __future__ import annotations

import collections
import threading
import time

import pytest
from structlog.testing import capture_logs

from daemon_helpers import errors, outputs, wait_for
from pipeline.daemon import pool as pool_module
from pipeline.daemon.jobs import JobLife
from pipeline.daemon.pool import Slot
from test_batch_landing import _pool, _ThreadDeath

pytestmark = pytest.mark.usefixtures("torch_threads")


def _odd_once_opened(monkeypatch, name: str) -> None:
    """``name`` is queued with its batch's key but opens as another (as a config reloaded in between makes it)."""
    real = pool_module.plan_key
    monkeypatch.setattr(pool_module, "plan_key", lambda job, plan: ("odd",) if job.name == name else real(job, plan))


def test_a_photo_that_opens_different_runs_alone_and_lands_behind_its_slot(tmp_path, engine, monkeypatch):
    """a is batched with b, which opens different: a runs alone, then b alone; b's write waits until c (the
    next photo) has begun, which only a slot that hands b over gets past. Each job closed once, one outcome."""
    begun, landed = [], []
    real_begin, real_finish = JobLife.begin, JobLife.finish

    def begin(self, job, in_process=True):
        begun.append(job.name)
        return real_begin(self, job, in_process)

    def finish(self, job, *args, **kwargs):
        if job.name == "b.jpg":  # held until c has begun (10 s at most: then the test fails)
            _wait(lambda: "c.jpg" in begun, 10)
        landed.append((job.name, threading.current_thread().name, "c.jpg" in begun))
        return real_finish(self, job, *args, **kwargs)

    _odd_once_opened(monkeypatch, "b.jpg")
    monkeypatch.setattr(JobLife, "begin", begin)
    monkeypatch.setattr(JobLife, "finish", finish)
    pool, closed = _pool(tmp_path, engine, monkeypatch, {"a.jpg": "coffee.jpg", "b.jpg": "rocket.jpg",
                                                         "c.jpg": "coffee.jpg"})
    wait_for(lambda: len(closed) >= 3, 60)
    assert pool.close(10) == []
    assert begun[:2] == ["a.jpg", "b.jpg"], "b was taken into a's batch"
    assert ("b.jpg", "lander", True) in landed, landed
    assert [name for name, thread, _ in landed] == ["a.jpg", "b.jpg", "c.jpg"], "written in order"
    assert {thread for _, thread, _ in landed} == {"lander"}
    assert len(closed) == 3 and pool.progress().open_jobs == 0, "each job closed exactly once"
    assert sorted((o.job.name, o.kind) for o in pool.poll()) == [("a.jpg", "done"), ("b.jpg", "done"),
                                                                ("c.jpg", "done")]
    assert sorted(p.name for p in outputs(tmp_path)) == ["a.png", "b.png", "c.png"]


def _wait(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_slot_dying_in_an_alone_run_gives_back_only_the_photos_still_its_own(tmp_path, engine, monkeypatch):
    """a+b batched, d taken with them but opening different. b fails in the engine (too thin); the slot's thread
    dies in d's alone run. The respawn gives back d as crashed, and not b too: b's outcome (failed) is out, and
    a second one would retry a photo that failed for good. a's write is the landing thread's."""
    real_run = Slot._run

    def stylize_batch(contents, *args, **kwargs):
        thin = getattr(contents[1], "image", contents[1]).resize((400, 4))  # b: too thin (a Prepared's photo)
        contents = [contents[0], thin, *contents[2:]]
        return real_stylize_batch(contents, *args, **kwargs)

    def run(self, job, *args, **kwargs):
        if job.name == "d.jpg":
            raise _ThreadDeath()
        return real_run(self, job, *args, **kwargs)

    real_stylize_batch = engine.stylize_batch
    _odd_once_opened(monkeypatch, "d.jpg")
    monkeypatch.setattr(engine, "stylize_batch", stylize_batch)
    monkeypatch.setattr(Slot, "_run", run)
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the thread's death is the point
    pool, closed = _pool(tmp_path, engine, monkeypatch, {"a.jpg": "coffee.jpg", "b.jpg": "rocket.jpg",
                                                         "d.jpg": "coffee.jpg"}, batch=3)
    wait_for(lambda: not pool.alive(), 60)
    pool.respawn().start()
    pool.close(10)
    outcomes = collections.Counter((o.job.name, o.kind) for o in pool.poll())
    assert outcomes == collections.Counter({("a.jpg", "done"): 1, ("b.jpg", "failed"): 1, ("d.jpg", "crashed"): 1})
    assert pool.progress().open_jobs == 0
    assert errors(tmp_path)["b.jpg"]["code"] == "too_thin"
    assert [p.name for p in outputs(tmp_path)] == ["a.png"]


def test_the_next_batch_is_prepared_ahead_while_a_batch_runs(tmp_path, engine, monkeypatch):
    """batch: 3. While a+b+c run, d, e and f are queued (as the main loop claims them): all three are prepared
    ahead before the first batch ends, so the next batch opens without a decode in the slot. (The prefetch used
    to stop at 2: f was decoded in the slot, as the batch began.)"""
    from test_pool import _queued
    from pipeline.daemon.pool import Pool
    from pipeline.daemon.spool import Spool

    running, release, real_batch = threading.Event(), threading.Event(), engine.stylize_batch

    def stylize_batch(*args, **kwargs):
        running.set()
        release.wait(20)
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(engine, "stylize_batch", stylize_batch)
    names = {f"{n}.jpg": ("coffee.jpg", "rocket.jpg")[i % 2] for i, n in enumerate("abcdef")}
    config, jobs = _queued(tmp_path, names, batch=3)
    pool = Pool([engine], Spool(config.inbox, config.work, config.done, config.failed), lambda: config,
                threading.Event())
    with capture_logs() as logs:
        for job in jobs[:3]:
            pool.submit(job)
        pool.start()
        assert running.wait(30)
        for job in jobs[3:]:
            pool.submit(job)

        def ahead() -> set[str]:
            return {e["file"] for e in list(logs) if e["event"] == "pre-checks passed" and e.get("ahead")}
        _wait(lambda: {"d.jpg", "e.jpg", "f.jpg"} <= ahead(), 10)
        during = ahead()
        release.set()
        wait_for(lambda: pool.progress().open_jobs == 0, 60)
        pool.close(10)
    assert during == set(names), "the whole next batch was prepared while the first one ran"
    started = [(e["file"], e.get("batch")) for e in logs if e["event"] == "job started"]
    assert sorted(started) == [(name, 3) for name in sorted(names)], started
    assert sorted(p.name for p in outputs(tmp_path)) == [f"{n}.png" for n in "abcdef"]
