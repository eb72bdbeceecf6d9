"""What a stop writes for a job still in a step at its deadline (JobLife.stopped_mid_step), with the real Spool and
JobLife and no daemon: every ordering below is held by events at seams, none by a sleep (rev11c)."""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from daemon_helpers import claimed
from pipeline.daemon.jobs import Plan
from pipeline.daemon.spool import RECORD, Spool
from pipeline.errors import JobFailure, Reason
from pipeline.fsio import write_atomic


def _begun(tmp_path):
    """A claimed photo whose try has begun (its record says running), as a worker holds it."""
    config, spool, life, job = claimed(tmp_path)
    life.begin(job)
    return config, spool, life, job


class Spy:
    """The spool's record lock, telling when a thread other than the stop's asks for it."""

    def __init__(self, lock, asked: threading.Event, stopper: list) -> None:
        self.lock, self.asked, self.stopper = lock, asked, stopper

    def __enter__(self):
        if threading.current_thread() is not self.stopper[0]:
            self.asked.set()
        self.lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def test_a_stops_copy_of_a_running_job_never_saves_over_its_landings_record(tmp_path):
    """The stop's copy was taken and saved outside any lock the landing holds: a copy taken just before the landing
    named the output, saved just after the landing saved that name, left output_stem null in job.json; an exit
    before complete() then styled the written photo again at the next start (never style twice). Here the copy is
    held between its making and its write while the landing publishes; the landing's save must come after it."""
    config, spool, life, job = _begun(tmp_path)
    copy_held, go, landing_asked = threading.Event(), threading.Event(), threading.Event()
    stopper: list = [None]
    spool.records = Spy(getattr(spool, "records", threading.RLock()), landing_asked, stopper)
    real_save = spool.save

    def save(saved) -> None:
        if saved is not job:  # the stop's copy: held after it was made, before it is written
            copy_held.set()
            go.wait(120)
        real_save(saved)

    spool.save = save
    stop = threading.Thread(target=life.stopped_mid_step, args=([job],))
    stopper[0] = stop
    stop.start()
    assert copy_held.wait(120), "the stop saved no copy of the running job"
    plan = Plan(config.recipes["starry"], config.recipes["starry"].settings, None, [])
    result = SimpleNamespace(losses={"total": 1.0}, steps=2, timings={"total": 0.1}, stop_reason="steps")

    def land() -> None:
        life.publish(job, config, plan, result, b"an image", {"job_id": job.id})
        landing_asked.set()  # published whole (no lock kept it waiting)

    landing = threading.Thread(target=land)
    landing.start()
    assert landing_asked.wait(120)  # published, or waiting for the record lock the stop holds
    go.set()
    stop.join(120)
    landing.join(120)
    record = json.loads((job.dir / RECORD).read_text())
    assert record["output_stem"] == job.output_stem == "starry/rocket", (
        "the stop's older copy was saved over the landing's record: the next start styles the photo again")


def _restart(spool: Spool, job):
    """The process exits (its lock dropped) and the next start recovers the job."""
    spool.release(job)
    [job] = spool.recover()
    return job


@pytest.mark.parametrize("progress", [False, True], ids=["hung-step", "long-steps"])
def test_a_step_that_hangs_at_every_stop_is_charged_as_a_crash_and_failed_at_max_crashes(tmp_path, progress):
    """A stop mid-step is uncharged (a long print's tile outlasts the stop's deadline), but a step that hangs was
    charged nothing either: stopped by hand before the 600 s stall watchdog, the photo headed the queue night
    after night. From the third stop in a row with no checkpoint written between, each is charged as a crash (as
    the watchdog's kill is), and max_crashes fails it naming the file; a print that writes checkpoints between
    stops (progress) is never charged."""
    config, spool, life, job = _begun(tmp_path)
    seen = []
    for stop in range(1, 6):
        if progress:
            write_atomic(f"step {stop}".encode(), job.checkpoint)  # a new checkpoint since the last stop
        with capture_logs() as logs:
            life.stopped_mid_step([job])
        job = _restart(spool, job)
        seen.append(job.crashes)
        warned = [e for e in logs if e["log_level"] == "warning" and "hangs" in e["event"]]
        assert len(warned) == (0 if progress or stop < 3 else 1), logs
        assert all(e["file"] == "rocket.jpg" and "rocket.jpg" in e["fix"] for e in warned)
        if stop < 5:
            life.begin(job)
    if progress:
        assert seen == [0] * 5 and job.attempts == 0
        life.begin(job)  # runs on
        return
    assert seen == [0, 0, 1, 2, 3], "stops with no checkpoint between, from the third on, charged as crashes"
    with pytest.raises(JobFailure) as failure:
        life.begin(job)
    assert failure.value.reason == Reason.CRASHED
    assert "hangs" in failure.value.problem and "rocket.jpg" in failure.value.fix
