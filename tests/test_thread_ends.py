"""The threads a daemon starts end with it (Executor.close, Alerts.flush): before, its landing thread and its notice
sender waited idle for ever, one pair more for each Daemon run in a process that embeds it (tests, `once`, a
script calling the Python API). No wall-clock bound: each thread is joined with a generous deadline, and a landing
held at the close is let go by an event."""
from __future__ import annotations

import shutil
import threading

import pytest

from daemon_helpers import SAMPLES, make_config, outputs, wait_for
from pipeline.daemon.daemon import Daemon
from pipeline.daemon.jobs import JobLife

pytestmark = pytest.mark.usefixtures("torch_threads")
JOIN = 60.0  # seconds each leftover thread is given to end: a landing or a notice in flight, under load


def _still_running(before: set) -> list[str]:
    started = [t for t in threading.enumerate() if t not in before]
    for thread in started:
        thread.join(JOIN)
    return [t.name for t in started if t.is_alive()]


@pytest.mark.parametrize("once", [True, False], ids=["once", "run-then-stop"])
def test_a_daemon_run_leaves_no_thread_of_its_own_behind(tmp_path, engine, once):
    """Two photos, their contact sheets and the queue-empty notice: once the run returns, every thread it started
    has ended (its landing thread and notice sender were left idle: ['lander', 'notify'])."""
    notices = tmp_path / "notices.txt"
    config = make_config(tmp_path, contact_sheet=True, notify=f"tee -a {notices}")
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / name)
    before = set(threading.enumerate())
    daemon = Daemon(config, once=once, engine=engine)
    if once:
        assert daemon.run() == 0
    else:
        thread = threading.Thread(target=daemon.run, name="test-daemon")
        thread.start()
        try:
            wait_for(lambda: len(outputs(tmp_path)) == 2 and notices.exists(), 120)
        finally:
            daemon.stop.set()
            thread.join(JOIN)
    assert [p.name for p in outputs(tmp_path)] == ["a.png", "b.png"]
    assert "2 styled, 0 failed" in notices.read_text()
    assert _still_running(before) == []


def test_a_landing_held_at_the_close_is_finished_and_then_its_thread_ends(tmp_path, engine, monkeypatch):
    """a.jpg's landing is held past the close's wait, b.jpg's waits behind it: neither is dropped. Let go, both are
    written and moved to done/, each has its outcome, and the landing thread then ends."""
    from pipeline.daemon.config import load
    from pipeline.daemon.spool import Spool, now_iso
    from pipeline.daemon.worker import Worker

    held, real_finish = threading.Event(), JobLife.finish

    def finish(self, job, *args, **kwargs):
        if job.name == "a.jpg":
            held.wait(JOIN)
        return real_finish(self, job, *args, **kwargs)

    monkeypatch.setattr(JobLife, "finish", finish)
    config = load(make_config(tmp_path))
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    for folder in (config.work, config.done, config.failed):
        folder.mkdir(parents=True, exist_ok=True)
    worker = Worker(engine, spool, lambda: config, threading.Event())
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(SAMPLES / "coffee.jpg", config.inbox / name)
        worker.submit(spool.claim(config.inbox / name, now_iso(), None))
    worker.start()
    try:
        wait_for(lambda: worker.life.landing._waiting == 2, 120)  # both handed over, a's write held
        lander = worker.life.landing._thread
        worker.stop.set()
        assert worker.close(timeout=1.0) == []  # the wait runs out with both unwritten
    finally:
        held.set()
    lander.join(JOIN)
    assert not lander.is_alive(), "the landing thread outlived its executor's close"
    assert sorted(o.kind for o in worker.poll()) == ["done", "done"]
    assert [p.name for p in outputs(tmp_path)] == ["a.png", "b.png"]
    assert sorted(p.name for p in config.done.iterdir()) == ["a.jpg", "b.jpg"]
    assert list(config.work.iterdir()) == []
