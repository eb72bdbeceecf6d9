"""executor: ray (issue 6): a local Ray instance (2 CPUs), two actors, tiny images, few steps.

Skipped where ray is not installed; CI installs the extra (pip install -e '.[test,bench,ray]').
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon_helpers import (ROOT, SAMPLES, STYLES, assert_deleted_as_the_try_began, errors, log_events, make_config,
                            outputs, stop, wait_for)

pytestmark = pytest.mark.xdist_group("ray")  # one worker runs them all: never two local Ray instances at once
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed: pip install -e '.[ray]' (CI installs it)")
RAY = {"num_workers": 2, "num_cpus_per_worker": 1}


@pytest.fixture
def shared_ray(monkeypatch):
    """One local Ray instance of 2 CPUs (what RAY's two actors ask) for the in-process tests, kept up between them:
    each test's own ray.init and shutdown cost ~4 s of the 2-core box's wall, more under the suite's load. The daemon
    finds it up and uses it (ray_cluster.connect: not its own, so its stop leaves it up), as it does a cluster given
    by address. Every actor the test's executors spawned is killed after it and its CPUs are free again before the
    next test, so each starts on an empty instance as before; the subprocess tests shut it down first (no_local_ray)."""
    import ray

    from pipeline.daemon import ray_cluster
    from pipeline.daemon.config_schema import RayOptions
    from pipeline.daemon.ray_executor import RayExecutor

    ray_cluster.connect(ray, RayOptions(**RAY))
    spawned, real = [], RayExecutor._spawn

    def spawn(self, slot):
        real(self, slot)
        spawned.append(slot.handle)
    monkeypatch.setattr(RayExecutor, "_spawn", spawn)
    yield
    for handle in spawned:
        try:
            ray.kill(handle, no_restart=True)
        except Exception:  # already dead
            pass
    wait_for(lambda: ray.available_resources().get("CPU", 0) >= RAY["num_workers"], 60, step=0.1)


@pytest.fixture
def no_local_ray():
    """A test whose daemon runs in a subprocess (its own local instance): none left up in this process meanwhile."""
    import ray
    if ray.is_initialized():
        ray.shutdown()


def run_in_thread(daemon):
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return thread


def drop(inbox: Path, name: str, recipe: str | None = None, sample: str = "coffee.jpg") -> None:
    folder = inbox / recipe if recipe else inbox
    folder.mkdir(exist_ok=True)
    shutil.copy(SAMPLES / sample, folder / name)


# --- no ray needed ----------------------------------------------------------------------------------

def test_config_keys_are_checked(tmp_path):
    from pipeline.daemon.config import ConfigError, load

    config = load(make_config(tmp_path / "ok", executor="ray", ray={"address": "auto", "max_inflight": 4}))
    assert config.executor == "ray" and config.ray.address == "auto" and config.ray.max_inflight == 4
    assert load(make_config(tmp_path / "default")).executor == "local"
    with pytest.raises(ConfigError) as info:
        load(make_config(tmp_path / "bad", executor="ray-cluster",
                         ray={"num_workers": 0, "num_gpus_per_worker": -1, "max_inflite": 2}))
    text = "\n".join(info.value.problems)
    assert "executor: must be one of local, ray" in text
    assert "ray.num_workers: must be >= 1" in text and "ray.num_gpus_per_worker: must be >= 0" in text
    assert "did you mean 'max_inflight'" in text


def test_the_local_executor_never_imports_ray(tmp_path):
    config = make_config(tmp_path)
    code = ("import sys; from pipeline.daemon.daemon import Daemon; d = Daemon(sys.argv[1], once=True); d.run(); "
            "print('RAY' if 'ray' in sys.modules else 'NO-RAY')")
    drop(tmp_path / "inbox", "a.jpg")
    out = subprocess.run([sys.executable, "-c", code, str(config)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert out.stdout.strip().endswith("NO-RAY"), out.stderr[-2000:]
    assert [p.name for p in outputs(tmp_path)] == ["a.png"]


@needs_ray
def test_validate_names_what_to_do_when_the_cluster_cannot_be_reached(tmp_path):
    import ray

    from pipeline.daemon.config import load
    from pipeline.daemon.ray_cluster import check_cluster

    dead = load(make_config(tmp_path, executor="ray", ray={"address": "127.0.0.1:9"}))
    real_init, inits = ray.init, []

    def init(*args, **kwargs):  # ray.init to a dead address waits a minute: the reach is checked before it
        inits.append(kwargs.get("address"))
        raise ConnectionError("ray.init was called")
    ray.init = init
    try:
        lines = check_cluster(dead)
    finally:
        ray.init = real_init
    assert inits == [], "validate waited on ray.init for a dead address (counted, not timed: < 10 s before)"
    assert lines[0].startswith("problem:") and "cannot connect to 127.0.0.1:9" in lines[0]
    assert "ray start --head" in lines[0] and "address: null" in lines[0]
    local = check_cluster(load(make_config(tmp_path, executor="ray")))
    assert not local[0].startswith("problem:") and "local Ray instance" in local[0]
    # rev8a: `validate` printed "OK, 2 recipe(s)" then the problem, and exited 2: now the problem alone, on stderr
    config = make_config(tmp_path, executor="ray", ray={"address": "127.0.0.1:9"})
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "validate", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "OK" not in done.stdout, done.stdout
    assert "config.yaml: executor: ray: problem: " in done.stderr and "127.0.0.1:9" in done.stderr, done.stderr


# --- a real local cluster ---------------------------------------------------------------------------

@needs_ray
def test_daemon_kill_9_with_jobs_in_flight_then_restart_every_job_once(tmp_path, no_local_ray):
    # six photos, not ten: at the kill two are done, two in flight on the actors, two never claimed (every kind the
    # restart meets); four more of 40 steps each only lengthened both runs
    config = make_config(tmp_path, executor="ray", ray=RAY, defaults={"steps": 40})
    inbox, photos = tmp_path / "inbox", 6
    for i in range(photos):
        drop(inbox, f"shot{i}.jpg", sample="rocket.jpg")
    proc = start_daemon(config, tmp_path / "first.log")
    try:
        def in_flight():
            started = {e["file"] for e in log_events(proc) if e.get("event") == "job started"}
            done = {e["file"] for e in log_events(proc) if e.get("event") == "job done"}
            return len(done) >= 2 and started - done
        wait_for(in_flight, 150, proc, step=0.2)
        proc.send_signal(signal.SIGKILL)  # the daemon alone: its actors die with it
        proc.wait()
    finally:
        time.sleep(1)
        kill_group(proc)  # anything of its local Ray still around
    before = outputs(tmp_path)
    assert list((tmp_path / "spool" / "work").iterdir()), "jobs in flight stay in work/"
    proc = start_daemon(config, tmp_path / "second.log")
    try:
        wait_for(lambda: len(list((tmp_path / "spool" / "done").iterdir())) == photos, 150, proc, step=0.3)
        wait_for(lambda: not list((tmp_path / "spool" / "work").iterdir()), 60, proc)
        assert any(e.get("event") == "resuming a job left in work/" for e in log_events(proc))
    finally:
        assert stop(proc) == 0
        kill_group(proc)
    names = sorted(p.name for p in outputs(tmp_path))
    assert names == [f"shot{i}.png" for i in range(photos)], "every job once, no -1 copies"
    assert set(before) <= set(outputs(tmp_path)) and errors(tmp_path) == {}
    assert sorted(p.name for p in (tmp_path / "spool" / "done").iterdir()) == [f"shot{i}.jpg" for i in range(photos)]
    assert len({json.loads(p.with_suffix(".json").read_text())["job_id"] for p in outputs(tmp_path)}) == photos


@needs_ray
def test_twelve_jobs_over_two_actors_each_style_computed_once_per_actor(tmp_path, shared_ray, engine,
                                                                       torch_threads):
    from pipeline.daemon.daemon import Daemon
    from pipeline.engine import images

    config = make_config(tmp_path, executor="ray", ray=RAY)
    daemon = Daemon(config)
    thread = run_in_thread(daemon)
    try:
        inbox = tmp_path / "inbox"
        for i in range(12):
            drop(inbox, f"p{i:02d}.jpg", recipe="scream" if i % 3 == 0 else None)
        wait_for(lambda: len(list((tmp_path / "spool" / "done").iterdir())) == 12, 150, step=0.3)
        stats = actor_stats(daemon)
    finally:
        daemon.stop.set()
        thread.join(60)
    assert not thread.is_alive()
    names = sorted(p.relative_to(tmp_path / "outbox").as_posix() for p in outputs(tmp_path))
    assert names == sorted(f"{'scream' if i % 3 == 0 else 'starry'}/p{i:02d}.png" for i in range(12))
    assert errors(tmp_path) == {} and not list((tmp_path / "spool" / "work").iterdir())
    # each actor computed each style's targets once, however many of its jobs used it
    assert len(stats) == 2 and sum(s["jobs"] for s in stats) == 12
    for s in stats:
        assert s["jobs"] >= 1, stats
        assert s["cache_misses"] == s["styles_seen"], stats
        assert s["cache_hits"] >= s["jobs"] - s["styles_seen"], stats  # the rest came from the cache
    # the outputs are the engine's: the same pixels as an in-process run of the same settings
    settings = daemon.config.recipe_settings(daemon.config.recipes["starry"], {})
    local = engine.stylize(images.load(SAMPLES / "coffee.jpg"), [images.load(STYLES / "starry_night.jpg")], settings)
    remote = images.load(tmp_path / "outbox" / "starry" / "p01.png")
    assert remote.size == local.image.size and max(remote.size) == 32
    diff = [abs(a - b) for a, b in zip(remote.tobytes(), local.image.tobytes())]
    assert max(diff) <= 2, f"max pixel difference {max(diff)}"
    record = json.loads((tmp_path / "outbox" / "starry" / "p01.json").read_text())
    assert record["executor"] == "ray" and record["worker"]["actor"] in {s["actor"] for s in stats}
    assert record["worker"]["node_id"] and record["worker"]["host"] and record["attempts"] == 1
    assert record["lost_attempts"] == [] and record["steps"] == 2 and record["output"]["name"] == "p01.png"


@needs_ray
def test_an_actor_killed_mid_job_its_job_finishes_once_on_another(tmp_path, shared_ray):
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path, executor="ray", ray=RAY)
    daemon = Daemon(config)
    thread = run_in_thread(daemon)
    inbox = tmp_path / "inbox"
    try:
        (inbox / "long.yaml").write_text("size: 64\nsteps: 30\n")  # first: it is claimed with its photo
        drop(inbox, "long.jpg")
        for i in range(3):
            drop(inbox, f"short{i}.jpg")

        victim = kill_when_running(daemon, "long.jpg")
        wait_for(lambda: len(list((tmp_path / "spool" / "done").iterdir())) == 5, 150, step=0.3)  # 4 + the sidecar
        wait_for(lambda: daemon.executor.progress().open_jobs == 0, 60)
    finally:
        daemon.stop.set()
        thread.join(60)
    names = sorted(p.name for p in outputs(tmp_path))
    assert names == ["long.png", "short0.png", "short1.png", "short2.png"], "each job exactly once"
    assert errors(tmp_path) == {} and not list((tmp_path / "spool" / "work").iterdir())
    record = json.loads((tmp_path / "outbox" / "starry" / "long.json").read_text())
    assert record["worker"]["actor"] != victim, "finished on another actor"
    assert record["attempts"] == 2 and record["steps"] == 30
    assert [e["actor"] for e in record["lost_attempts"]] == [victim]
    assert record["lost_attempts"][0]["error"] in ("ActorDiedError", "RayActorError")
    assert sum(1 for p in (tmp_path / "spool" / "done").iterdir() if p.name == "long.jpg") == 1


def actor_stats(daemon) -> list[dict]:
    """Each live actor's counters (jobs, cache_misses, styles_seen), asked in its control group."""
    import ray

    from pipeline.daemon.ray_actor import CONTROL

    slots = daemon.executor.slots
    return ray.get([s.handle.stats.options(concurrency_group=CONTROL).remote() for s in slots if s.handle], timeout=30)


def status_current(root: Path) -> dict:
    """status.json's "current" (what `status --json` shows), or {} between jobs."""
    try:
        return json.loads((root / "spool" / "status.json").read_text()).get("current") or {}
    except (OSError, ValueError):
        return {}


def kill_when_running(daemon, name: str, step: int = 3) -> str:
    """ray.kill the actor running ``name`` once it reached ``step``; its label."""
    import ray

    def running():
        current = daemon.executor.progress().current if daemon.executor else None
        for job in (current or {}).get("running", []):
            if job["file"] == name and job["step"] >= step:
                return job["worker"]
    victim = wait_for(running, 120, step=0.2)
    ray.kill(next(s for s in daemon.executor.slots if s.label == victim).handle, no_restart=True)
    return victim


@needs_ray
def test_an_actor_lost_on_the_last_attempt_fails_the_job_with_its_reason(tmp_path, shared_ray):
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path, executor="ray", ray=RAY, max_attempts=1,
                         defaults={"size": 64, "steps": 150, "early_stop_tol": 0})
    daemon = Daemon(config)
    thread = run_in_thread(daemon)
    try:
        drop(tmp_path / "inbox", "doomed.jpg")
        victim = kill_when_running(daemon, "doomed.jpg")
        wait_for(lambda: errors(tmp_path), 60, step=0.2)
    finally:
        daemon.stop.set()
        thread.join(60)
    failure = errors(tmp_path)["doomed.jpg"]
    assert failure["code"] == "too_many_attempts" and failure["attempts"] == 1
    assert f"worker {victim} on" in failure["message"] and "died mid-job" in failure["message"]
    assert (tmp_path / "spool" / "failed" / "doomed.jpg").exists() and outputs(tmp_path) == []


@needs_ray
def test_run_window_closing_cancels_on_the_actor_and_the_job_runs_again(tmp_path, shared_ray):
    """And from its checkpoint (rev9e #1: the actor ran without one, so every window close threw the steps away while
    the log said "checkpointed"): the actor sends it back with the cancel, the daemon keeps it in work/."""
    from datetime import datetime

    from pipeline.daemon.daemon import Daemon

    now = [datetime(2026, 11, 27, 23, 0)]
    config = make_config(tmp_path, executor="ray", ray=RAY, schedule={"start": "22:00", "end": "07:00"},
                         defaults={"size": 64, "steps": 50, "early_stop_tol": 0})
    daemon = Daemon(config, clock=lambda: now[0])  # the run window's clock, passed in
    thread = run_in_thread(daemon)
    try:
        drop(tmp_path / "inbox", "night.jpg")
        current = wait_for(lambda: status_current(tmp_path).get("step", 0) >= 10 and status_current(tmp_path), 120,
                           step=0.2)
        assert current["file"] == "night.jpg" and current["worker"].startswith("worker-")
        assert current["node"].startswith(os.uname().nodename) and len(current["running"]) == 1
        now[0] = datetime(2026, 11, 28, 7, 0)  # the window closes mid-job
        wait_for(lambda: daemon.book.retry and daemon.executor.progress().open_jobs == 0, 60, step=0.2)
        assert daemon.book.retry[0].attempts == 0 and outputs(tmp_path) == []
        assert daemon.book.retry[0].checkpoint.is_file(), "the cancelled Ray job left no checkpoint.pt in work/"
        now[0] = datetime(2026, 11, 28, 22, 30)
        wait_for(lambda: outputs(tmp_path), 120, step=0.3)
    finally:
        daemon.stop.set()
        thread.join(60)
    record = json.loads((tmp_path / "outbox" / "starry" / "night.json").read_text())
    assert record["steps"] == 50 and record["attempts"] == 1 and (record["resumed_from_step"] or 0) >= 10


@needs_ray
def test_a_reload_while_a_job_is_on_an_actor_does_not_change_how_it_lands(tmp_path, shared_ray, monkeypatch):
    """rev9d item 2: a Ray job landed by get_config() at landing time, not by the config it opened with: an edit
    `after_success: delete` -> `move` that lands while the photo is on an actor kept the input. A running job never
    sees an edit (Config's promise); it lands as the local worker's do, by the config it opened with."""
    import dataclasses

    from pipeline.daemon.daemon import Daemon
    from pipeline.daemon.ray_executor import RayExecutor

    config = make_config(tmp_path, executor="ray", ray={"num_workers": 1, "num_cpus_per_worker": 1},
                         after_success="delete")
    drop(tmp_path / "inbox", "rocket.jpg", sample="rocket.jpg")
    daemon = Daemon(config, once=True)
    real = RayExecutor._settle

    def reload_lands_mid_job(self, flight, reply):
        daemon.config = dataclasses.replace(daemon.config, after_success="move")  # what a reload swaps in
        return real(self, flight, reply)

    monkeypatch.setattr(RayExecutor, "_settle", reload_lands_mid_job)
    assert daemon.run() == 0
    assert_deleted_as_the_try_began(tmp_path)


def start_daemon(config: Path, log: Path) -> subprocess.Popen:
    """Its own session, so the local Ray processes it leaves behind after kill -9 can be cleaned up."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "RAY_DISABLE_USAGE_STATS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(config)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                            start_new_session=True)
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
