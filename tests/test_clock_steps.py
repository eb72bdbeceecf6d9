"""rev8b finding 3: the wall clock stepped back (NTP correcting an RTC kept in local time, a dual-boot box, a VM
resumed from a snapshot) while a photo waits to be tried again held it in work/ for the length of the step, with
status saying running. A retry's due time is also kept on the monotonic clock (state.JobBook), which a step leaves
alone; not_before stays wall-clock time in job.json for a restart."""
from __future__ import annotations

import shutil
from pathlib import Path

from daemon_helpers import SAMPLES, errors, log_events, make_config, outputs, start, status_json, stop, wait_for, \
    wait_ready
from pipeline.daemon.diskguard import DiskGuard
from pipeline.daemon.jobs import Outcome
from pipeline.daemon.spool import Job
from pipeline.daemon.state import JobBook

STEP = 7200.0


def _book(tmp_path: Path, wall: list[float], mono: list[float]) -> JobBook:
    guard = DiskGuard(lambda: [tmp_path])
    return JobBook(guard, lambda kind, data: None, clocks=(lambda: wall[0], lambda: mono[0]))


def test_a_retry_is_due_after_its_wait_whatever_the_wall_clock_did(tmp_path):
    wall, mono = [1_800_000_000.0], [500.0]
    book = _book(tmp_path, wall, mono)
    job = Job(id="j1", name="coffee.jpg", source="coffee.jpg", folder="j1", queued_at="", not_before=wall[0] + 5)
    book.take([Outcome(job, "transient", retry_at=job.not_before)])
    assert book.take_due(wall[0], mono[0]) is None, "not due before its 5 s wait"
    wall[0] -= STEP  # the clock steps back 2 h while the photo waits
    mono[0] += 5.5
    assert book.take_due(wall[0], mono[0]) is job, "held for the length of the step"
    assert book.retry == [] and job.not_before == 1_800_000_005.0  # job.json keeps wall-clock time


def test_a_step_forward_only_brings_a_retry_sooner(tmp_path):
    wall, mono = [1_800_000_000.0], [500.0]
    book = _book(tmp_path, wall, mono)
    ahead = Job(id="j2", name="a.jpg", source="a.jpg", folder="j2", queued_at="", not_before=wall[0] + 30)
    book.take([Outcome(ahead, "transient", retry_at=ahead.not_before)])
    assert book.take_due(wall[0], mono[0] + 10) is None
    assert book.take_due(wall[0] + 31, mono[0] + 10) is ahead


STEPPED = """
import os, time
_real_time = time.time
def _stepped():
    return _real_time() - ({step} if os.path.exists({trigger!r}) else 0)
time.time = _stepped
"""


def test_a_daemon_whose_clock_steps_back_styles_the_waiting_photo_once_its_folder_is_back(tmp_path):
    """A real daemon: a photo waits (its outbox replaced by a file: claiming paused), the clock steps back 2 h
    (time.time in the daemon only: the shared box's OS clock cannot be stepped; its monotonic clock is left alone,
    as a real step leaves CLOCK_MONOTONIC), the folder comes back: the photo is written within seconds."""
    config = make_config(tmp_path, settle_seconds=0.3)
    trigger, outbox = tmp_path / "clock-stepped", tmp_path / "outbox"
    proc = start(config, patches=STEPPED.format(step=STEP, trigger=str(trigger)))
    try:
        wait_ready(proc)
        shutil.rmtree(outbox)
        outbox.write_text("oops\n")
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "coffee.jpg")
        wait_for(lambda: any(e.get("event", "").startswith("a folder cannot be written: job kept")
                             for e in log_events(proc)), 60, proc)
        trigger.touch()  # the clock steps back 2 h
        outbox.unlink()  # the fix: the daemon makes the folder again
        try:
            wait_for(lambda: outputs(tmp_path), 30, proc)
        finally:
            print("status:", status_json(tmp_path).get("state"), "| work/:",
                  [p.name for p in (tmp_path / "spool" / "work").iterdir()], "| failed:", list(errors(tmp_path)))
        assert (tmp_path / "spool" / "done" / "coffee.jpg").exists() and errors(tmp_path) == {}
    finally:
        stop(proc)
