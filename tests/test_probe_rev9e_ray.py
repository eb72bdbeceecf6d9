"""rev9e probes: executor: ray against the job lifecycle the local worker keeps (checkpoints on a cancel, a
SIGTERM, status). Each test FAILS on the code it was written against because of the defect it names."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from daemon_helpers import errors, log_events, make_config, outputs, stop, wait_for  # noqa: E402
from test_ray import RAY, drop, kill_group, needs_ray, ray_down, run_in_thread, start_daemon, status_current  # noqa: E402,F401

pytestmark = pytest.mark.xdist_group("ray")


@needs_ray
def test_ray_window_close_writes_a_checkpoint_and_the_job_resumes_from_it(tmp_path, ray_down):
    """README (Checkpoints): "a cancel (shutdown, pause, run window) always writes one", and the daemon logs "job
    checkpointed; it runs again when the run window opens" with the step. Under executor: ray the actor runs
    engine.stylize without checkpoint= (ray_actor.py:47-48), so nothing is written and the job starts again at
    step 0: a long print loses all its work at every window close."""
    from datetime import datetime

    from pipeline.daemon.daemon import Daemon

    now = [datetime(2026, 11, 27, 23, 0)]
    config = make_config(tmp_path, executor="ray", ray=RAY, schedule={"start": "22:00", "end": "07:00"},
                         defaults={"size": 64, "steps": 200, "early_stop_tol": 0})
    daemon = Daemon(config, clock=lambda: now[0])
    thread = run_in_thread(daemon)
    try:
        drop(tmp_path / "inbox", "night.jpg")
        wait_for(lambda: status_current(tmp_path).get("step", 0) >= 20, 120, step=0.2)
        now[0] = datetime(2026, 11, 28, 7, 0)  # the window closes mid-job
        wait_for(lambda: daemon.book.retry and daemon.executor.progress().open_jobs == 0, 60, step=0.2)
        job = daemon.book.retry[0]
        checkpoint_there = job.checkpoint.exists()
        now[0] = datetime(2026, 11, 28, 22, 30)
        wait_for(lambda: outputs(tmp_path), 180, step=0.3)
    finally:
        daemon.stop.set()
        thread.join(60)
    record = json.loads((tmp_path / "outbox" / "starry" / "night.json").read_text())
    assert checkpoint_there, "the cancelled Ray job left no checkpoint.pt in its work/ folder"
    assert record["resumed_from_step"], f"resumed_from_step={record['resumed_from_step']}: the job started over"


@needs_ray
def test_ray_sigterm_mid_job_checkpoints_and_the_restart_resumes_it_once(tmp_path):
    """README (Signals): "SIGTERM checkpoints the current job, leaves it in work/ and exits". With executor: ray the
    dispatcher leaves at close()'s None at once (_leave_in_flight: never a cancel sent, never a checkpoint) and logs
    "job checkpointed for the next start" with a step no checkpoint holds; the restart runs it from step 0."""
    config = make_config(tmp_path, executor="ray", ray=RAY, defaults={"size": 64, "steps": 200, "early_stop_tol": 0})
    drop(tmp_path / "inbox", "late.jpg")
    proc = start_daemon(config, tmp_path / "first.log")
    try:
        wait_for(lambda: status_current(tmp_path).get("step", 0) >= 20, 150, proc, step=0.2)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    finally:
        time.sleep(1)
        kill_group(proc)
    said = [e for e in log_events(proc) if e.get("event") == "job checkpointed for the next start"]
    work = [p for p in (tmp_path / "spool" / "work").iterdir()]
    print("exit", code, "said", said, "work", [sorted(q.name for q in p.iterdir()) for p in work])
    assert code == 0 and len(work) == 1 and outputs(tmp_path) == []
    assert said and said[0]["step"] >= 20
    assert (work[0] / "checkpoint.pt").exists(), f"logged 'checkpointed' at step {said[0]['step']}, no checkpoint"


@needs_ray
def test_ray_actor_killed_charges_only_the_job_it_was_running_not_the_ones_queued_behind(tmp_path, ray_down):
    """README (Scaling out): "An actor that dies mid-job ... costs that job one attempt". With max_inflight above
    the actors (the README's own example: max_inflight 8), _pick queues several jobs on one actor; when it dies,
    every queued job's ref raises ActorDiedError too and _lost charges each an attempt as "died mid-job"
    (ray_executor.py:162-163, jobs.py:143): at max_attempts: 1 photos that never started go to failed/."""
    from pipeline.daemon.daemon import Daemon
    from test_ray import kill_when_running

    config = make_config(tmp_path, executor="ray", max_attempts=1,
                         ray={"num_workers": 1, "num_cpus_per_worker": 1, "max_inflight": 3},
                         defaults={"size": 64, "steps": 150, "early_stop_tol": 0})
    daemon = Daemon(config)
    thread = run_in_thread(daemon)
    try:
        for name in ("first.jpg", "second.jpg", "third.jpg"):
            drop(tmp_path / "inbox", name)
        wait_for(lambda: daemon.executor and len((daemon.executor.progress().current or {}).get("running", [])) == 3,
                 120, step=0.2)
        running = [j for j in daemon.executor.progress().current["running"]]
        victim_file = max(running, key=lambda j: j["step"])["file"]
        kill_when_running(daemon, victim_file)
        wait_for(lambda: len(outputs(tmp_path)) + len(errors(tmp_path)) == 3, 200, step=0.3)
    finally:
        daemon.stop.set()
        thread.join(60)
    failed = {name: (e["code"], e["message"]) for name, e in errors(tmp_path).items()}
    print("victim", victim_file, "failed", failed, "outputs", [p.name for p in outputs(tmp_path)])
    assert set(failed) == {victim_file}, f"queued jobs that never ran were charged the lost actor: {failed}"


@needs_ray
def test_ray_lost_attempt_names_the_actor_that_died_not_its_replacement(tmp_path, ray_down):
    """The JSON log's lost_attempts and the failure message name "the actor and node that ran it" (README). Flight
    keeps a reference to the Slot, which _replace/_spawn relabel in place (worker-0 -> worker-0.1, node
    "starting"); a second flight of the dead actor lands after that and _lost reads flight.slot.label/node: it
    records the fresh replacement (on node "starting") as the one that died, and _pick then steers the retry
    away from that healthy replacement (lost_on)."""
    from pipeline.daemon.daemon import Daemon
    from test_ray import kill_when_running

    config = make_config(tmp_path, executor="ray", max_attempts=3,
                         ray={"num_workers": 1, "num_cpus_per_worker": 1, "max_inflight": 2},
                         defaults={"size": 64, "steps": 150, "early_stop_tol": 0})
    daemon = Daemon(config)
    thread = run_in_thread(daemon)
    try:
        for name in ("first.jpg", "second.jpg"):
            drop(tmp_path / "inbox", name)
        wait_for(lambda: daemon.executor and len((daemon.executor.progress().current or {}).get("running", [])) == 2,
                 120, step=0.2)
        victim = kill_when_running(daemon, "first.jpg")
        wait_for(lambda: len(outputs(tmp_path)) + len(errors(tmp_path)) == 2, 240, step=0.3)
    finally:
        daemon.stop.set()
        thread.join(60)
    lost = {p.stem: json.loads(p.with_suffix(".json").read_text())["lost_attempts"] for p in outputs(tmp_path)}
    print("victim", victim, "lost", lost)
    for name, entries in lost.items():
        assert all(e["actor"] == victim and e["node"] != "starting" for e in entries), f"{name}: {entries}"


@needs_ray
def test_ray_jobs_log_progress_lines_as_local_jobs_do(tmp_path):
    """README (Watching it run): "progress is logged every progress_seconds, and always at a job's first step, with
    setup_ms". The local worker logs them from on_step (worker.py _on_step); the Ray dispatcher hears every step
    (_heard) but logs none: the journal shows "job started" and then nothing until "job done", however long the
    print runs, so `journalctl -u style-pipeline` cannot tell a slow Ray job from a stuck one."""
    config = make_config(tmp_path, executor="ray", ray={"num_workers": 1, "num_cpus_per_worker": 1},
                         progress_seconds=1, defaults={"size": 64, "steps": 120, "early_stop_tol": 0})
    drop(tmp_path / "inbox", "slow.jpg")
    proc = start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: outputs(tmp_path), 150, proc, step=0.3)
    finally:
        stop(proc)
        kill_group(proc)
    events = log_events(proc)
    started = next(e for e in events if e.get("event") == "job started")
    done = next(e for e in events if e.get("event") == "job done")
    progress = [e for e in events if e.get("event") == "progress"]
    print("job seconds", started["timestamp"], done["timestamp"], "progress lines", len(progress))
    assert progress, "no progress line for a Ray job"


@needs_ray
def test_ray_actor_dying_while_starting_during_a_window_close_does_not_stop_the_daemon(tmp_path, ray_down):
    """An actor that dies before it is ready (a node without the weights: the case _replace's 30 s pause is for)
    leaves its slot's handle None for 30 s, while the other jobs sent to it are still in self.flights (one lands a
    pass). If a stop or a closing window is asked then, _watch calls flight.slot.handle.cancel on None
    (ray_executor.py:215): the dispatcher dies, sets stop, and the daemon exits with status 0, which systemd's
    Restart=on-failure does not restart: the service is gone until someone looks."""
    from datetime import datetime

    import ray

    from pipeline.daemon.daemon import Daemon

    now = [datetime(2026, 11, 27, 23, 0)]
    config = make_config(tmp_path, executor="ray", schedule={"start": "22:00", "end": "07:00"},
                         ray={"num_workers": 1, "num_cpus_per_worker": 1, "max_inflight": 3},
                         defaults={"size": 64, "steps": 100, "early_stop_tol": 0})
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        drop(tmp_path / "inbox", name)
    daemon = Daemon(config, clock=lambda: now[0])
    thread = run_in_thread(daemon)
    try:
        def sent_to_starting_actor():
            ex = daemon.executor
            return ex and ex.slots[0].info is None and len(ex.flights) >= 2 and ex.slots[0]
        slot = wait_for(sent_to_starting_actor, 60, step=0.02)
        now[0] = datetime(2026, 11, 28, 7, 0)  # the window closes
        ray.kill(slot.handle, no_restart=True)  # and the starting actor dies (no weights on its node, say)
        time.sleep(5)
        stopped = daemon.stop.is_set()
    finally:
        daemon.stop.set()
        thread.join(60)
    assert not stopped, "the daemon stopped itself (the ray dispatcher died) on an actor lost while starting"
