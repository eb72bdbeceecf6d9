"""Issue 13, between two batches on a slot: a batch's results are written by the landing thread (handover.py), in
order, while the slot already runs its next batch, with the guarantees a lone photo's hand-over has. A pool on the
CPU with ``batch: 2`` (the CPU batches when told to), the real engine, tiny photos; the writes are held back until
the next batch has begun, which only a slot that does not wait for them gets past."""
from __future__ import annotations

import collections
import json
import shutil
import threading

import pytest
from structlog.testing import capture_logs

from daemon_helpers import (SAMPLES, assert_landed_once_after_restart, errors, log_events, make_config, outputs,
                            start, wait_for)

from pipeline.daemon.handover import Lander
from pipeline.daemon.jobs import JobLife
from pipeline.daemon.pool import Pool, Slot
from pipeline.daemon.spool import Spool
from stop_waits import StopWaits
from test_pool import _queued

pytestmark = pytest.mark.usefixtures("torch_threads")


def _pool(tmp_path, engine, monkeypatch, names: dict[str, str], batch: int = 2, edit=lambda jobs: None):
    """A started pool of one CPU slot, ``batch: 2``, with ``names`` queued before it starts (so its batches are
    known: the first job and the next of its shape), and a count of the jobs it closed. ``edit``: called with the
    claimed jobs before they are queued (a file spoiled after its claim)."""
    config, jobs = _queued(tmp_path, names, batch=batch)
    edit(jobs)
    closed = []
    real_closed = Pool.job_closed
    monkeypatch.setattr(Pool, "job_closed", lambda self: closed.append(1) or real_closed(self))
    pool = Pool([engine], Spool(config.inbox, config.work, config.done, config.failed), lambda: config,
                threading.Event())
    for job in jobs:
        pool.submit(job)
    pool.start()
    return pool, closed


def test_a_batch_lands_behind_its_slot_which_starts_the_next_batch_at_once(tmp_path, engine, monkeypatch):
    """a+b, then c+d. a's and b's writes wait until the second batch has begun; c fails in the engine (too thin).
    Each job is closed once, each has one outcome; the records say not running before the writes."""
    batches, second = [], threading.Event()
    real_batch = engine.stylize_batch

    def stylize_batch(contents, *args, **kwargs):
        batches.append(len(contents))
        if len(batches) == 2:
            second.set()
            thin = getattr(contents[0], "image", contents[0]).resize((400, 4))  # a Prepared's photo
            contents = [thin, *contents[1:]]  # c: too thin, the engine's own failure
        return real_batch(contents, *args, **kwargs)

    landed, real_finish = [], JobLife.finish

    def finish(self, job, *args, **kwargs):
        if job.name in ("a.jpg", "b.jpg"):  # held until the next batch runs (10 s at most: then the test fails)
            second.wait(10)
        record = json.loads((job.dir / "job.json").read_text())
        landed.append((job.name, threading.current_thread().name, second.is_set(), record["running"]))
        return real_finish(self, job, *args, **kwargs)

    monkeypatch.setattr(engine, "stylize_batch", stylize_batch)
    monkeypatch.setattr(JobLife, "finish", finish)
    pool, closed = _pool(tmp_path, engine, monkeypatch, {"a.jpg": "coffee.jpg", "b.jpg": "rocket.jpg",
                                                         "c.jpg": "coffee.jpg", "d.jpg": "rocket.jpg"})
    wait_for(lambda: len(closed) >= 4, 60)
    assert pool.close(10) == []
    assert landed == [("a.jpg", "lander", True, False), ("b.jpg", "lander", True, False),
                      ("d.jpg", "lander", True, False)], "written in order, behind the slot, once not running"
    assert batches == [2, 2]
    assert len(closed) == 4 and pool.progress().open_jobs == 0, "each job closed exactly once"
    outcomes = pool.poll()
    assert collections.Counter((o.job.name, o.kind) for o in outcomes) == collections.Counter(
        {("a.jpg", "done"): 1, ("b.jpg", "done"): 1, ("c.jpg", "failed"): 1, ("d.jpg", "done"): 1})
    assert sorted(p.name for p in outputs(tmp_path)) == ["a.png", "b.png", "d.png"]
    error = errors(tmp_path)["c.jpg"]
    assert (error["code"], error["attempts"], error["crashes"]) == ("too_thin", 1, 0), error
    batched = json.loads((tmp_path / "outbox" / "starry" / "b.json").read_text())
    assert batched["batch"] == 2
    from test_joblog import RAY_ONLY, readme_table
    assert set(batched) == set(readme_table()) - RAY_ONLY, "a batched photo's log: every key has its README row"


class _ThreadDeath(BaseException):
    """What ends a slot's thread outside any job's handling (as a KeyboardInterrupt in it would)."""


def test_a_slot_dying_after_handing_its_batch_over_leaves_it_to_the_writer(tmp_path, engine, monkeypatch):
    """The slot's thread dies right after handing a+b over: the respawn gives neither back as crashed (each would
    run twice); the writer lands both (the pool's close waits for it), and each is closed once."""
    real = Slot._land_batch_behind
    gate = threading.Event()

    def dies_after(self, landed):
        real(self, landed)
        raise _ThreadDeath()

    def finish(self, job, *args, **kwargs):
        gate.wait(10)  # the writes wait until the respawn: the writer still holds both when the slot is replaced
        return real_finish(self, job, *args, **kwargs)

    real_finish = JobLife.finish
    monkeypatch.setattr(Slot, "_land_batch_behind", dies_after)
    monkeypatch.setattr(JobLife, "finish", finish)
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the thread's death is the point
    pool, closed = _pool(tmp_path, engine, monkeypatch, {"a.jpg": "coffee.jpg", "b.jpg": "rocket.jpg"})
    wait_for(lambda: not pool.alive(), 60)
    assert pool.progress().job is None, "a job the writer holds is not the dead slot's to give back"
    pool.respawn().start()
    gate.set()
    pool.close(10)  # shutdown lands what waits before it returns
    assert sorted((o.job.name, o.kind) for o in pool.poll()) == [("a.jpg", "done"), ("b.jpg", "done")]
    assert len(closed) == 2 and pool.progress().open_jobs == 0
    assert sorted(p.name for p in outputs(tmp_path)) == ["a.png", "b.png"]


def test_a_batch_is_one_hand_over_landed_in_order_and_its_photos_count_as_unwritten():
    """Two batches of 7 behind a stuck write take the writer's 2 places without a wait (one place each: the slot
    is not held while its photos wait for room); flush's error counts photos; then all land, in order."""
    stuck, landed = threading.Event(), []
    lander = Lander(depth=2)
    lander.submit(stuck.wait)
    queued = threading.Event()

    def submit_both() -> None:  # on a thread: a submit that waits for room never returns while the write is stuck
        for batch in range(2):
            lander.submit(*(lambda b=batch, n=n: landed.append((b, n)) for n in range(7)))
        queued.set()

    submitter = threading.Thread(target=submit_both, daemon=True)  # (it was a bound of 1 s on the two submits)
    submitter.start()
    try:
        assert queued.wait(30), "a batch waited for room behind the stuck write"
        assert landed == [], "nothing lands past the stuck write"
        with capture_logs() as logs:
            assert lander.flush(timeout=0.3) is False
        assert [e["unwritten"] for e in logs if e["log_level"] == "error"] == [15]
    finally:  # let go on a failure too: else the lander and the submits stay blocked for the rest of the process
        stuck.set()
        submitter.join(30)
    assert lander.close(timeout=60) is True  # all landed, and its thread ends (60 s: a limit on a hang only)
    assert landed == [(b, n) for b in range(2) for n in range(7)]


HELD_BATCH = """
import time
from pipeline.daemon.jobs import JobLife
from pipeline.daemon.pool import Slot
real_gather = Slot._gather
def gather(self, first):  # the batch waits (10 s at most) for the second photo to be queued: a batch of 2
    deadline = time.monotonic() + 10
    while self._jobs.qsize() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    return real_gather(self, first)
def finish(self, job, *args, **kwargs):
    time.sleep(600)  # the batch's writes never come: the daemon is killed while they wait
Slot._gather, JobLife.finish = gather, finish
"""


def _records(tmp_path) -> list[dict]:
    found = []
    for path in (tmp_path / "spool" / "work").glob("*/job.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # replaced as it was read: read again at the next look
            return []
    return found


def test_a_batch_waiting_for_its_writes_is_not_charged_for_a_crash(tmp_path):
    """A kill -9 while a batch's results wait for their writes is not their crash: their tries had ended. After
    the restart each is written once, with no crash on its record."""
    config = make_config(tmp_path, batch=2)
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "a.jpg")
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "b.jpg")
    proc = start(config, patches=HELD_BATCH)
    try:
        wait_for(lambda: any(e.get("event") == "job started" and e.get("batch") == 2 for e in log_events(proc)),
                 120, proc)
        wait_for(lambda: [(r["attempts"], r["running"]) for r in _records(tmp_path)] == [(1, False)] * 2, 60, proc)
    finally:
        proc.kill()
        proc.wait()
    assert_landed_once_after_restart(config, ("a", "b"), uncharged=("a", "b"))


def test_a_pool_close_behind_a_stuck_write_ends_within_its_timeout(tmp_path, engine, monkeypatch):
    """rev7e finding 2: Pool.close gave the landing max(WRITE_GRACE, what the slots' join left), 30 s past its own
    deadline (the daemon's stop then overran systemd's TimeoutStopSec). Now one deadline: close(3) is 3 s. Checked
    exactly (stop_waits.py): each wait of the close is given no more than the deadline has left, and the close
    returns while the write is still stuck; no wall-clock bound (3 + 1.5 s before), which a loaded box could break."""
    from pipeline.daemon import executor
    from pipeline.daemon.sheets import SheetWriter

    hang, landing = threading.Event(), threading.Event()
    real_finish = JobLife.finish

    def finish(self, job, *args, **kwargs):
        landing.set()
        hang.wait(600)  # let go below, once the close has returned: never within it
        return real_finish(self, job, *args, **kwargs)

    monkeypatch.setattr(JobLife, "finish", finish)
    pool, closed = _pool(tmp_path, engine, monkeypatch, {"a.jpg": "coffee.jpg"})
    waits = StopWaits(monkeypatch, (executor,), (Pool, "close"), 3.0)
    for cls, name in ((Slot, "join"), (Lander, "close"), (SheetWriter, "close")):
        waits.watch(cls, name)
    try:
        assert landing.wait(60)
        assert pool.close(3) == []
        # while the write is still stuck: once let go (below), the landing thread writes and closes it at once
        assert closed == [] and outputs(tmp_path) == [], "not written: the job stays in work/ for the next start"
        waits.check("Slot.join", "Lander.close", "SheetWriter.close")
    finally:  # on a failure too: the write let go lands now, on the pool's landing thread, and is done before the
        hang.set()  # next test, whose patched Pool.job_closed (a class attribute) it called otherwise, counting
        if landing.is_set():  # this job among that test's closed ones
            wait_for(lambda: closed, 30)
        else:  # it never reached its write: the pool still runs it
            pool.close(10)
