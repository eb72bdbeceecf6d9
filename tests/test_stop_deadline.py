"""A SIGTERM whose deadline passes while a step still runs is a clean stop, not a crash of the photo (rev11a).

A step can outlast the stop's deadline (daemon.STOP_WAIT: a large print's tile on a CPU, a line search's
evaluations), and the stop flag is read only between steps: the process exits with the worker thread mid-step. The
job's record said running: true, so the next start charged the photo a crash (Spool.recover), and three stops in
one long print (an upgrade, a nightly restart) failed a good photo as crashed_daemon. Here the step is held in a
listener that never returns (no clock decides anything), and the deadline is shortened to 3 s (FLUSH_WAIT 0).
"""
from __future__ import annotations

import json
import shutil
import signal

import pytest

from daemon_helpers import SAMPLES, make_config, start, wait_for
from pipeline.daemon.spool import Spool

HELD_STEP_AND_SHORT_STOP = """
import threading
from pathlib import Path
import pipeline.daemon.daemon as d
d.STOP_WAIT, d.FLUSH_WAIT = 3, 0
import pipeline.engine.transfer as t
_stylize = t.StyleTransfer.stylize
def stylize(self, *a, on_step=None, **k):
    def held(info):
        if on_step:
            on_step(info)
        if info.step >= 2:
            Path(MARKS, str(threading.get_ident())).write_text("in the held step")
            threading.Event().wait()  # a step that outlasts any deadline
    return _stylize(self, *a, on_step=held, **k)
t.StyleTransfer.stylize = stylize
"""


@pytest.mark.parametrize("executor", [
    pytest.param({}, id="worker"),
    pytest.param({"devices": ["cpu", "cpu"]}, id="pool-two-slots"),
])
def test_a_stop_that_outlasts_a_step_does_not_charge_the_photos_a_crash(tmp_path, executor):
    config = make_config(tmp_path, defaults={"size": 32, "steps": 20, "format": "png", "early_stop_tol": 0},
                         **executor)
    names = ["a.jpg", "b.jpg"][:2 if executor else 1]  # the pool: a photo held in each slot
    marks = tmp_path / "in-step"
    marks.mkdir()
    daemon = start(config, patches=f"MARKS = {str(marks)!r}\n" + HELD_STEP_AND_SHORT_STOP)
    try:
        for name in names:
            shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / name)
        wait_for(lambda: len(list(marks.iterdir())) == len(names), 180, daemon)
        daemon.send_signal(signal.SIGTERM)  # one SIGTERM, as systemctl stop sends
        code = daemon.wait(120)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    assert code == 0, "a clean stop"
    spool = tmp_path / "spool"
    jobs = Spool(tmp_path / "inbox", spool / "work", spool / "done", spool / "failed").recover()
    assert sorted(job.name for job in jobs) == names, "each photo waits in work/ for the next start"
    for job in jobs:
        assert (job.crashes, job.batch_crashes, job.attempts) == (0, 0, 0), (
            f"{job.name}: a clean SIGTERM was charged (crashes={job.crashes}, batch_crashes={job.batch_crashes}, "
            f"attempts={job.attempts}); at max_crashes such stops fail a good photo as crashed_daemon")
    events = [json.loads(line) for line in daemon.log_path.read_text().splitlines() if line.startswith("{")]
    told = sorted(e["file"] for e in events if e.get("event", "").startswith("stopped mid-step at the stop's"))
    assert told == names, "the log names each photo stopped mid-step"
