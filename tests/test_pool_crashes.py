"""A kill with two pool slots running (rev9e finding 2): the crash is counted as a batch's, each photo then takes a
turn alone (pipeline/daemon/turns.py), so that a poison photo still fails alone and its neighbour is written."""
from __future__ import annotations

import json
import shutil
import threading
import time

from daemon_helpers import SAMPLES, errors, log_events, make_config, outputs, run_until_killed, start, stop, wait_for
from pipeline.daemon.config import load as load_config
from pipeline.daemon.daemon import Daemon
from pipeline.daemon.jobs import JobLife
from pipeline.daemon.spool import Job, Spool
from pipeline.daemon.turns import Turns
from pipeline.daemon.worker import Worker

POISON = """
import os, signal, time
from pipeline.daemon import worker as _worker

_on_step = _worker.Worker._on_step
SLOW = {slow}


def _dies_at_p(self, job, plan):  # p.jpg kills the daemon at its first step (the OOM killer); w.jpg crawls (SLOW)
    if job.name == "p.jpg":
        return lambda info: os.kill(os.getpid(), signal.SIGKILL)
    step = _on_step(self, job, plan)
    return (lambda info: (time.sleep(SLOW), step(info))) if SLOW else step


_worker.Worker._on_step = _dies_at_p
"""


def test_one_kill_with_two_slots_running_fails_neither_photo_and_the_culprit_then_fails_alone(tmp_path):
    """w runs in slot 0 when p, in slot 1, kills the daemon (max_crashes: 1). The kill may be either's: each is
    charged a batch_crash, not a crash. At the restart each runs alone in its turn (no other slot running; a stop
    while p waits ends its wait unbegun): w is written, p kills the daemon again, alone, and the next start charges
    p alone a crash (at max_crashes it fails as crashed_daemon naming itself: test_batch_faults). Before, the first
    kill charged both a crash: both went to failed/ as crashed_daemon."""
    config = make_config(tmp_path, devices=["cpu", "cpu"], max_crashes=1, defaults={"steps": 10})
    inbox = tmp_path / "inbox"
    first = start(config, patches=POISON.format(slow=0.5))
    shutil.copy(SAMPLES / "rocket.jpg", inbox / "w.jpg")
    wait_for(lambda: any(e.get("event") == "progress" for e in log_events(first)), 90, first)
    shutil.copy(SAMPLES / "coffee.jpg", inbox / "p.jpg")
    assert first.wait(60) == -9, "p killed the daemon beside w"
    second = start(config, patches=POISON.format(slow=0.5))
    wait_for(lambda: any(e.get("event") == "progress" for e in log_events(second)), 90, second)
    assert stop(second) == 0, "a stop while p waited for its turn did not let p in beside w (its poison unrun)"
    assert [e["file"] for e in log_events(second) if e.get("event") == "job started"] == ["w.jpg"]
    assert [e["file"] for e in log_events(second) if e.get("event", "").startswith("job not begun")] == ["p.jpg"]
    died = run_until_killed(config, POISON.format(slow=0), failed=2, timeout=90)
    assert died == -9, f"p killed the daemon when its turn came, alone; failed: {errors(tmp_path)}"
    assert [p.name for p in outputs(tmp_path)] == ["w.png"], "w ran alone in its turn, before p, and was written"
    record = json.loads((tmp_path / "outbox" / "starry" / "w.json").read_text())
    assert (record["crashes"], record["batch_crashes"]) == (0, 1), "the kill beside p noted apart, not counted"
    loaded = load_config(config)  # the next start's recovery, in-process: the second kill is p's own crash
    [left] = Spool(loaded.inbox, loaded.work, loaded.done, loaded.failed).recover()
    assert (left.name, left.crashes, left.batch_crashes) == ("p.jpg", 1, 1), "at max_crashes: 1, p fails alone"


def _job(name: str, **fields) -> Job:
    return Job(name, name, name, f"/nonexistent/{name}", "", **fields)


def test_a_suspect_waits_for_the_other_slots_and_holds_back_new_photos_until_its_turn_ends():
    """turns.Turns in-process: photos with no crash behind them go in side by side at once (each told whom it runs
    beside); a photo a crash fell on waits until no other slot runs, and while it waits or runs no new photo goes
    in; a stop ends any wait."""
    turns, entered = Turns(), []
    assert turns.enter(_job("a"), lambda: False) == []
    assert [j.id for j in turns.enter(_job("b"), lambda: False)] == ["a"], "b runs beside a"
    suspect, fresh = _job("s", batch_crashes=1), _job("c")
    threads = [threading.Thread(target=lambda j=j: entered.append((j.id, turns.enter(j, lambda: False))))
               for j in (suspect, fresh)]
    threads[0].start()
    wait_for(lambda: turns._alone == "s", 60)  # s waits first in line (a sleep here let c go first under load)
    threads[1].start()
    time.sleep(0.3)
    assert entered == [], "s waits for a and b; c waits behind s"
    turns.leave(_job("a"))
    turns.leave(_job("b"))
    threads[0].join(60)
    assert entered == [("s", [])], "s runs alone: no one beside it"
    time.sleep(0.3)
    assert len(entered) == 1, "c waits for s's turn to end"
    turns.leave(suspect)
    threads[1].join(60)
    assert entered[1] == ("c", [])
    stopping, late = threading.Event(), _job("t", crashes=1)
    waiting = threading.Thread(target=lambda: entered.append(("t", turns.enter(late, stopping.is_set))))
    waiting.start()
    stopping.set()
    waiting.join(60)
    assert entered[2] == ("t", None), "a stop ends the wait: t is not begun"
    turns.leave(late)
    assert [j.id for j in turns.enter(_job("d"), lambda: False)] == ["c"], "t's turn given up with it"


def test_a_suspect_woken_by_the_stop_cancelling_its_neighbour_is_not_let_in():
    """At a stop the running photo is cancelled and leaves, and that leave wakes the suspect waiting for its turn
    alone: its turn has come, but the daemon is stopping. Turns.enter looked at the stop only while the turn was
    refused, so the suspect went in and a poison photo ran its first step during the SIGTERM (the stop exited -9).
    The stop and the leave are made together here, under the turns' own lock, so the waiter can only wake to both."""
    turns, entered, stopping = Turns(), [], threading.Event()
    running, waiting = _job("a"), _job("p", crashes=1)
    assert turns.enter(running, stopping.is_set) == []
    thread = threading.Thread(target=lambda: entered.append(turns.enter(waiting, stopping.is_set)))
    thread.start()
    wait_for(lambda: turns._alone == "p", 60)  # p waits for a to leave
    with turns._cond:  # the condition's lock is re-entrant: leave() takes it again
        stopping.set()
        turns.leave(running)
    thread.join(60)
    assert entered == [None], "stopping: p is not begun, though its turn came"


def test_a_photo_is_saved_as_running_beside_another_only_while_it_runs():
    """share_blame saves a running neighbour as batched (a kill is then no one photo's); a neighbour whose result is
    made (stop_running, under the same lock) is left alone: its record says not running, and its folder may be gone."""
    turns, saved = Turns(), []
    running, finished = _job("a", running=True), _job("b", running=True)
    assert turns.stop_running(finished) and not turns.stop_running(finished), "turned off once"
    turns.share_blame([running, finished], saved.append)
    assert saved == [running] and running.batched and not finished.batched
    turns.share_blame([running], saved.append)
    assert saved == [running], "saved once"


def test_a_photo_that_begins_after_its_neighbour_looked_still_saves_itself_as_running_beside_it(
        tmp_path, engine, monkeypatch):
    """rev10a: a.jpg enters its turn first (alone: opened unbatched) but reaches begin only after b.jpg has entered
    beside it, opened and shared the blame, which skips a.jpg as not yet running (a thread descheduled on a loaded
    box; here a pause at that seam). Once both run, a.jpg's record must say batched, so that a kill charges it a
    batch_crash: before, it said running alone, and at max_crashes: 1 a kill failed it as crashed_daemon though b.jpg
    may have been the poison. Each slot now marks itself and its neighbours after its own open (Turns.mark_together)."""
    config = make_config(tmp_path, devices=["cpu", "cpu"], max_crashes=1, defaults={"steps": 5})
    a_waits, shared, release, stepped = threading.Event(), threading.Event(), threading.Event(), set()
    begin, share_blame, on_step = JobLife.begin, Turns.share_blame, Worker._on_step

    def paused_begin(self, job, in_process=True):
        if job.name == "a.jpg":  # in its turn already (Turns.enter), not yet running
            a_waits.set()
            shared.wait(120)
        return begin(self, job, in_process)

    def signalled_share_blame(self, jobs, save):
        share_blame(self, jobs, save)
        shared.set()

    def held_steps(self, job, plan):  # each photo stops at its first step until both records are read
        step = on_step(self, job, plan)
        return lambda info: (stepped.add(job.name), release.wait(120), step(info))

    monkeypatch.setattr(JobLife, "begin", paused_begin)
    monkeypatch.setattr(Turns, "share_blame", signalled_share_blame)
    monkeypatch.setattr(Worker, "_on_step", held_steps)
    daemon = Daemon(config, engine=engine)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "a.jpg")
        wait_for(a_waits.is_set, 60)
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "b.jpg")
        wait_for(lambda: stepped == {"a.jpg", "b.jpg"}, 120)
        records = {r["name"]: r for r in (json.loads(path.read_text())
                                          for path in (tmp_path / "spool" / "work").glob("*/job.json"))}
        assert records["b.jpg"]["batched"], "b.jpg entered beside a.jpg: opened batched"
        job = Job(**records["a.jpg"])
        assert job.running and job.batched, f"a.jpg runs beside b.jpg but its record says alone: {records['a.jpg']}"
        job.charge_crash()  # what the next start's recover() makes of a kill now
        assert (job.crashes, job.batch_crashes) == (0, 1), "a kill beside b.jpg is not a.jpg's own crash"
    finally:
        release.set()
        daemon.stop.set()
        thread.join(60)
