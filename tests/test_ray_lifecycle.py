"""executor: ray against the job life the local worker keeps (rev9e findings 1, 3, 5, 7): stops and closing
windows, actors that die, progress lines. A local Ray instance of 1-2 CPUs, tiny images, few steps."""
from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from daemon_helpers import SAMPLES, STYLES, errors, log_events, make_config, outputs, stop, wait_for  # noqa: E402
from test_ray import (RAY, drop, kill_group, kill_when_running, needs_ray, no_local_ray, shared_ray,  # noqa: E402,F401
                      start_daemon)
from test_ray import status_current  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")  # one worker runs them all: never two local Ray instances at once
ONE_ACTOR = {"num_workers": 1, "num_cpus_per_worker": 1}


def run_keeping_status(daemon) -> tuple[threading.Thread, list]:
    """daemon.run in a thread; the list gets its exit status."""
    status: list = []
    thread = threading.Thread(target=lambda: status.append(daemon.run()), daemon=True)
    thread.start()
    return thread, status


@needs_ray
def test_an_actor_dying_while_starting_during_a_window_close_leaves_the_daemon_running(tmp_path, shared_ray):
    """rev9e #7: _replace drops the slot's handle for 30 s when its actor died before it was ready, while the jobs
    sent to it had not landed; a closing window then asked flight.slot.handle.cancel on None, the dispatcher died,
    set stop, and the daemon exited 0 (systemd's Restart=on-failure never started it again)."""
    import ray

    from pipeline.daemon.daemon import Daemon

    now = [datetime(2026, 11, 27, 23, 0)]
    config = make_config(tmp_path, executor="ray", schedule={"start": "22:00", "end": "07:00"},
                         ray={**ONE_ACTOR, "max_inflight": 3}, defaults={"size": 64, "steps": 100, "early_stop_tol": 0})
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        drop(tmp_path / "inbox", name)
    daemon = Daemon(config, clock=lambda: now[0])
    thread, status = run_keeping_status(daemon)
    try:
        def sent_to_starting_actor():
            ex = daemon.executor
            return ex and ex.slots[0].info is None and len(ex.flights) >= 2 and ex.slots[0]
        slot = wait_for(sent_to_starting_actor, 60, step=0.02)
        now[0] = datetime(2026, 11, 28, 7, 0)  # the window closes
        ray.kill(slot.handle, no_restart=True)  # and the starting actor dies (no weights on its node, say)
        # its flights land one a pass (lost, uncharged); the dispatcher asked the cancels of those left on its handle
        wait_for(lambda: daemon.stop.is_set() or not daemon.executor.flights, 60, step=0.05)
        time.sleep(1)  # five more dispatcher passes
        stopped = daemon.stop.is_set()
    finally:
        daemon.stop.set()
        thread.join(60)
    assert not stopped, "the daemon stopped itself (the ray dispatcher died) on an actor lost while starting"
    assert status == [0] and len(list((tmp_path / "spool" / "work").iterdir())) == 3, "every photo kept in work/"


@needs_ray
def test_a_ray_dispatcher_that_fails_stops_the_daemon_with_exit_status_1(tmp_path, shared_ray, monkeypatch):
    """rev9e #7: a dispatcher failure stopped the daemon with status 0, which Restart=on-failure does not restart."""
    from pipeline.daemon.daemon import Daemon
    from pipeline.daemon.ray_executor import RayExecutor

    def broken(self):
        raise RuntimeError("the dispatcher broke")
    monkeypatch.setattr(RayExecutor, "_watch", broken)
    drop(tmp_path / "inbox", "kept.jpg")
    daemon = Daemon(make_config(tmp_path, executor="ray", ray=ONE_ACTOR), once=True)
    assert daemon.run() == 1
    kept = [p.name for p in (tmp_path / "spool" / "work").rglob("kept.jpg")] + \
        [p.name for p in (tmp_path / "inbox").glob("kept.jpg")]
    assert kept == ["kept.jpg"] and outputs(tmp_path) == [] and errors(tmp_path) == {}


@needs_ray
def test_a_dead_actor_charges_only_the_job_it_ran_and_the_record_names_that_actor(tmp_path, shared_ray):
    """rev9e #3: with max_inflight above the actors, every job queued on an actor that died was charged an attempt
    as "died mid-job" (at max_attempts 1 photos that never started went to failed/), and a flight landing after the
    slot was relabelled named the fresh replacement, on node "starting", as the actor that died."""
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path, executor="ray", max_attempts=1, ray={**ONE_ACTOR, "max_inflight": 3},
                         defaults={"size": 64, "steps": 30, "early_stop_tol": 0})
    daemon = Daemon(config)
    thread, _ = run_keeping_status(daemon)
    try:
        for name in ("first", "second", "third"):
            if name != "first":  # queued behind it: what they run is not the point, only that they are not charged
                (tmp_path / "inbox" / f"{name}.yaml").write_text("size: 32\nsteps: 2\n")  # claimed with the photo
            drop(tmp_path / "inbox", f"{name}.jpg")
        wait_for(lambda: daemon.executor and len((daemon.executor.progress().current or {}).get("running", [])) == 3,
                 120, step=0.2)
        victim_file = max(daemon.executor.progress().current["running"], key=lambda j: j["step"])["file"]
        assert victim_file == "first.jpg", "the one sent first runs first"
        victim = kill_when_running(daemon, victim_file)
        wait_for(lambda: len(outputs(tmp_path)) + len(errors(tmp_path)) == 3, 200, step=0.3)
    finally:
        daemon.stop.set()
        thread.join(60)
    failed = errors(tmp_path)
    assert set(failed) == {victim_file}, f"jobs queued behind the dead actor were charged: {failed}"
    assert f"worker {victim} on " in failed[victim_file]["message"]
    assert "on starting" not in failed[victim_file]["message"], failed[victim_file]["message"]
    for image in outputs(tmp_path):
        record = json.loads(image.with_suffix(".json").read_text())
        assert record["lost_attempts"] == [] and record["attempts"] == 1, (image.name, record["lost_attempts"])


@needs_ray
def test_sigterm_on_a_ray_job_checkpoints_it_before_the_daemon_exits_and_it_logged_its_progress(tmp_path,
                                                                                              no_local_ray):
    """rev9e #1: at a stop the dispatcher left the jobs in flight at once (no cancel sent, nothing saved) and logged
    "job checkpointed for the next start"; it now cancels them and waits for their checkpoints within the stop.
    (A closing window's checkpoint and the resume from it: test_ray's test_run_window_closing_...)
    rev9e #5: the dispatcher heard every step and logged no "progress" line: a slow Ray job looked like a stuck one."""
    config = make_config(tmp_path, executor="ray", ray=ONE_ACTOR, progress_seconds=1,
                         defaults={"size": 64, "steps": 80, "early_stop_tol": 0})
    drop(tmp_path / "inbox", "late.jpg")
    proc = start_daemon(config, tmp_path / "first.log")
    try:
        wait_for(lambda: status_current(tmp_path).get("step", 0) >= 10, 150, proc, step=0.2)
        code = stop(proc, 120)
    finally:
        kill_group(proc)
    said = {e["event"]: e for e in log_events(proc) if "checkpoint" in e.get("event", "")}
    [work] = list((tmp_path / "spool" / "work").iterdir())
    assert code == 0 and outputs(tmp_path) == [] and errors(tmp_path) == {}
    assert said["job checkpointed for the next start"]["step"] >= 10, said
    assert (work / "checkpoint.pt").is_file(), f"logged {said}, and no checkpoint in work/"
    progress = [e for e in log_events(proc) if e.get("event") == "progress"]
    assert progress and progress[0]["file"] == "late.jpg" and progress[0]["worker"] == "worker-0", progress[:1]
    steps = [e["step"] for e in progress]
    assert steps[0] >= 1 and steps == sorted(steps) and progress[-1]["total_steps"] == 80, steps
    # "elapsed" (0.1 s) is the clock the dispatcher decided by: the log's stamp is taken later, after a wait for the
    # GIL or the CPU that a loaded box makes longer for one line than the next
    elapsed = [e["elapsed"] for e in progress]
    assert all(round(b - a, 1) >= 0.9 for a, b in zip(elapsed, elapsed[1:])), ("one a progress_seconds at most",
                                                                               elapsed)


def test_a_cancel_that_reaches_an_actor_after_its_try_ended_does_not_stop_the_next_try(engine, torch_threads):
    """rev10a: the dispatcher sends a flight's cancel each pass until its reply lands (RayExecutor._watch), and run()
    dropped the job's id in its finally: a cancel sent between that and the reply's landing stayed in the actor, and
    the job's next try there (the window open again) stopped at step 0, its log saying it runs again when the window
    opens, with the window open. The actor's methods driven in-process (no Ray: they are plain Python), the real
    engine; run() now drops the id as the next try starts."""
    from pipeline.daemon.ray_actor import StyleActor
    from pipeline.engine import images
    from pipeline.engine.settings import Settings

    actor = StyleActor.__new__(StyleActor)  # __init__ asks Ray who it is; the rest of its state, as it sets it
    actor.engine, actor._lock, actor._progress, actor._cancel = engine, threading.Lock(), None, set()
    actor.jobs, actor.styles_seen, actor.identity = 0, set(), {"actor": "worker-0"}
    photo, style = (SAMPLES / "rocket.jpg").read_bytes(), images.load(STYLES / "starry_night.jpg")
    settings, on_step = Settings(size=32, steps=2), actor._on_step
    # the window closes at the first try's first step: the dispatcher's first cancel, from the CONTROL group
    actor._on_step = lambda job_id: lambda info: (on_step(job_id)(info), actor.cancel(job_id))
    first = actor.run("job-1", "rocket.jpg", settings, photo, [], None, style)
    assert first["status"] == "cancelled"
    del actor._on_step
    actor.cancel("job-1")  # the next pass's, sent before the reply above landed in the daemon
    again = actor.run("job-1", "rocket.jpg", settings, photo, [], None, style)  # the window open again: the next try
    assert again["status"] == "ok", f"the next try was stopped by its last try's cancel: {again}"
    assert actor.jobs == 1 and max(again["result"].image.size) == 32, "the next try ran to its end"
