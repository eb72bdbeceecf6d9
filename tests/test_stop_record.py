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
from pipeline.daemon.worker import Worker
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


def _steps(config, life, job, n: int) -> None:
    """``n`` steps of the try complete, told through the worker's own progress listener (Worker._on_step), as the
    engine tells them; no checkpoint is written (none is due yet: 25 steps and 30 s; a batch writes none)."""
    plan = Plan(config.recipes["starry"], config.recipes["starry"].settings, None, [])
    on_step = Worker(None, life.spool, life.get_config, life.stop, life)._on_step(job, plan)
    for step in range(1, n + 1):
        on_step(SimpleNamespace(step=step, picture=None, total_steps=50, loss=1.0, eta=1.0, elapsed=1.0))


HUNG, LONG, HANG_AFTER_STEPS = [0] * 5, [2, 1, 3, 1, 2], [0, 0, 2, 0, 0, 0]


@pytest.mark.parametrize("steps, batched, charged", [
    (HUNG, False, [0, 0, 1, 2, 3]),
    (LONG, False, [0] * 5),
    (LONG, True, [0] * 5),
    (HANG_AFTER_STEPS, False, [0, 0, 0, 0, 1, 2]),  # the count starts again at the 3rd stop
], ids=["hung-step", "long-steps", "long-steps-batched", "hangs-after-steps"])
def test_a_step_that_hangs_at_every_stop_is_charged_as_a_crash_and_failed_at_max_crashes(tmp_path, steps, batched,
                                                                                          charged):
    """A stop mid-step is uncharged (a large print's tile outlasts the stop's deadline), but a step that hangs was
    charged nothing either: stopped by hand before the 600 s stall watchdog, the photo headed the queue night
    after night. From the third stop in a row with no step completed between, each is charged as a crash (as
    the watchdog's kill is), and max_crashes fails it naming the file. A print whose steps complete between stops
    is never charged, though no checkpoint was due (rev11e: told apart by its checkpoint, three restarts within the
    ~54 min between a slow print's checkpoints, or of a batch that writes none, charged a good photo)."""
    config, spool, life, job = claimed(tmp_path)
    job.batched = batched  # as open() sets it for a photo taken into a batch
    life.begin(job)
    seen = []
    for stop, n in enumerate(steps, 1):
        _steps(config, life, job, n)
        with capture_logs() as logs:
            life.stopped_mid_step([job])
        job = _restart(spool, job)
        seen.append(job.crashes + job.batch_crashes)
        warned = [e for e in logs if e["log_level"] == "warning" and "hangs" in e["event"]]
        assert len(warned) == (seen[-1] > 0), logs
        assert all(e["file"] == "rocket.jpg" and "rocket.jpg" in e["fix"] for e in warned)
        if stop < len(steps):
            job.batched = batched
            life.begin(job)
    assert seen == charged, f"crashes charged at each stop, stops {job.stops}: steps completed in each try {steps}"
    if steps is not HUNG:
        assert job.attempts == 0
        life.begin(job)  # runs on
        return
    with pytest.raises(JobFailure) as failure:
        life.begin(job)
    assert failure.value.reason == Reason.CRASHED
    assert "hangs" in failure.value.problem and "rocket.jpg" in failure.value.fix


def test_a_record_from_before_the_step_count_still_reads(tmp_path):
    """A job.json saved by the release that told a hung step by its checkpoint (``stop_checkpoint``) is read, that
    field let go: the job recovers with its stop count, and its steps are counted from there."""
    config, spool, life, job = _begun(tmp_path)
    record = json.loads((job.dir / RECORD).read_text())
    record.pop("stepped"), record.pop("stop_stepped")
    record.update(stops=2, stop_checkpoint=[1, 2, 3])
    write_atomic(json.dumps(record).encode(), job.dir / RECORD)
    spool.release(job)
    [job] = spool.recover()
    assert job.stops == 2 and job.stepped == 0 and job.stop_stepped is None


def test_steps_completed_before_a_kill_still_count_as_progress_at_the_next_stop(tmp_path):
    """Job.stepped was saved only at a try's begin and end: a kill -9 (an OOM, a power cut, systemd's SIGKILL) lost
    the steps of its try, and a stop finding the next try still in its first step counted "no step completed
    since the last stop". A long print stopped mid-step, then killed after 3 steps and stopped in the next try's
    first step, twice over, was charged as a hung step at its third stop (a crash more and a false "hangs"
    warning; failed at max_crashes). The first step after a stop mid-step is saved now: a kill loses no sign of
    progress."""
    config, spool, life, job = _begun(tmp_path)
    _steps(config, life, job, 2)
    hung = []
    for stop in range(3):
        if stop:
            life.begin(job)
            _steps(config, life, job, 3)
            job = _restart(spool, job)  # killed after 3 steps: a crash charged
            life.begin(job)  # the next try is stopped in its first step
        with capture_logs() as logs:
            life.stopped_mid_step([job])  # a step still runs at the stop's deadline
        hung += [e for e in logs if "hangs" in e["event"]]
        job = _restart(spool, job)
    assert hung == [] and (job.stops, job.crashes) == (1, 0), (
        f"charged as a hung step after kills: stops {job.stops}, crashes {job.crashes}: {hung}")
    life.begin(job)  # runs on (with the kills' lost steps, the next kill failed it as a step that hangs)


def test_a_step_completed_after_the_stops_copy_does_not_save_over_it(tmp_path):
    """The step saved after a stop mid-step (above) is not saved once the daemon stops: the step that outlasted
    the join may complete after the stop's copy was written, and a record saying running again would charge the
    photo a crash at the next start for a clean stop."""
    config, spool, life, job = _begun(tmp_path)
    _steps(config, life, job, 2)
    life.stopped_mid_step([job])  # an earlier stop mid-step: the first step after it is saved
    job = _restart(spool, job)
    life.begin(job)
    life.stop.set()  # the daemon's stop, as Daemon._shutdown sets it before the executor's close
    life.stopped_mid_step([job])  # still in its first step at the deadline
    _steps(config, life, job, 1)  # which completes before the process exits
    job = _restart(spool, job)
    assert (job.crashes, job.stops, job.attempts) == (0, 2, 0), "the stop's record was saved over as running"
