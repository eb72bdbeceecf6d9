"""The executor interface (pipeline/daemon/executor.py) driven directly, as the daemon drives it: submit, progress,
cancel, and poll for the outcome. The local executor on the real engine, with a tiny picture."""
from __future__ import annotations

import json
import shutil
import threading

from daemon_helpers import SAMPLES, make_config, outputs, wait_for
from pipeline.daemon.config import load
from pipeline.daemon.config_build import check_folders
from pipeline.daemon.spool import Spool, now_iso
from pipeline.daemon.worker import Worker


def test_cancel_stops_one_job_at_its_next_step_and_poll_hands_back_each_outcome(tmp_path, engine, torch_threads):
    config = load(make_config(tmp_path, defaults={"size": 40, "steps": 80, "checkpoint_every": 5,
                                                  "checkpoint_seconds": 0, "early_stop_tol": 0}))
    assert check_folders(config) == []
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    executor = Worker(engine, spool, lambda: config, threading.Event())
    executor.start()
    shutil.copy(SAMPLES / "coffee.jpg", config.inbox / "cup.jpg")
    job = spool.claim(config.inbox / "cup.jpg", now_iso(), None)
    assert executor.has_room() and executor.poll() == []
    executor.submit(job)
    assert executor.progress().busy and executor.progress().open_jobs == 1
    wait_for(lambda: (executor.progress().current or {}).get("step", 0) >= 10, 60)
    assert executor.progress().job is job and executor.progress().current["file"] == "cup.jpg"

    executor.cancel(job)
    [cancelled] = wait_for(lambda: executor.poll(0.2), 30)
    assert (cancelled.kind, cancelled.job, cancelled.event) == ("cancelled", job, None)
    assert cancelled.retry_at is not None, "the daemon queues it again"
    assert job.attempts == 0 and job.checkpoint.exists() and outputs(tmp_path) == []
    idle = executor.progress()
    assert (idle.busy, idle.open_jobs, idle.current, idle.job) == (False, 0, None, None) and idle.busy_seconds > 0

    executor.submit(job)  # what the daemon does with a due retry: it resumes from the checkpoint
    [done] = wait_for(lambda: executor.poll(0.2), 120)
    assert done.kind == "done" and done.retry_at is None and done.event["steps"] == 80
    record = json.loads((tmp_path / "outbox" / "starry" / "cup.json").read_text())
    assert record["resumed_from_step"] >= 10 and record["attempts"] == 1
    assert executor.close(timeout=30) == [] and not executor.alive()
