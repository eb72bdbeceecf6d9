"""Issue 9, the parts that need an injected fault or none at all: names, YAML limits, the supervisor."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest

from daemon_helpers import SAMPLES, make_config, outputs, status_json, wait_for
from pipeline.daemon import config as config_module
from pipeline.daemon import status as status_module
from pipeline.daemon import yaml_read
from pipeline.daemon.config_build import load_sidecar
from pipeline.daemon.daemon import Daemon
from pipeline.daemon.spool import Spool, unique_names
from pipeline.daemon.worker import Worker
from pipeline.daemon.yaml_loader import Loader
from pipeline.fsio import fit_name, temp_name
from test_daemon_faults import BOMB


def test_long_names_are_shortened_deterministically_keeping_extension_and_hash(tmp_path):
    long = "写真" * 45 + ".jpeg"  # 275 bytes
    short = fit_name(long)
    assert short == fit_name(long) and short.endswith(".jpeg") and len(short.encode()) <= 255
    assert short.startswith("写真") and "~" in short and fit_name("写真" * 45 + "x.jpeg") != short
    assert fit_name("plain.jpg") == "plain.jpg"
    names = [p.name for p, _ in zip(unique_names(tmp_path, "c" * 250 + ".png", reserve=11), range(3))]
    assert len(set(names)) == 3 and all(len(n.encode()) <= 244 and n.endswith(".png") for n in names)
    (tmp_path / names[0]).write_text("taken")  # a real filesystem accepts every one of them
    (tmp_path / (names[1] + ".error.json")).write_text("{}")
    assert len(temp_name(tmp_path / ("d" * 255)).name) < 40 and str(os.getpid()) in temp_name(tmp_path / "x").name


def test_a_yaml_bomb_or_a_huge_sidecar_fails_in_milliseconds(tmp_path, monkeypatch):
    """The bomb (9 levels of 9 aliases: 9**9 values expanded) is refused by a measure linear in the file, before
    anything is built: counted, not timed (< 0.5 s before, which a loaded box could break). The measure is called
    once per parent-child link of the parsed file (99 here, each shared node measured once); capped at twice that,
    a measure that walked the expansion passes the cap at once."""
    config = config_module.load(make_config(tmp_path))
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 400
    measured, built, real_measure = [], [], yaml_read._expanded_size

    def measure(node, memo):
        measured.append(1)
        assert len(measured) <= 200, "the measure walks the expansion, not the file"
        return real_measure(node, memo)

    monkeypatch.setattr(yaml_read, "_expanded_size", measure)
    monkeypatch.setattr(Loader, "construct_document", lambda self, node: built.append(node))
    with pytest.raises(config_module.ConfigError, match="aliases"):
        load_sidecar(bomb, config)
    assert built == [] and 0 < len(measured) <= 200, (len(built), len(measured))
    monkeypatch.undo()
    huge = tmp_path / "huge.yaml"
    huge.write_text("seed: 1\n" + "# padding\n" * 10_000)
    with pytest.raises(config_module.ConfigError, match="over 64 KB"):
        load_sidecar(huge, config)
    with pytest.raises(config_module.ConfigError, match="aliases"):  # the config itself too
        config_module.load(_config_with(tmp_path, "x_bomb:\n  " + BOMB.replace("\n", "\n  ")))
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text("a: &a [*a]\n")
    with pytest.raises(config_module.ConfigError):
        load_sidecar(cycle, config)


def _config_with(tmp_path, extra: str):
    path = make_config(tmp_path / "c")
    path.write_text(path.read_text() + extra + "\n")
    return path


def test_an_empty_job_folder_left_by_a_crash_is_not_work_and_is_cleared(tmp_path):
    """kill -9 between moving the input to done/ and removing the folder leaves job.json alone."""
    config = config_module.load(make_config(tmp_path))
    for folder in (config.work, config.done, config.failed):
        folder.mkdir(parents=True, exist_ok=True)
    orphan = config.work / "20261128T000000-abcdef"
    orphan.mkdir()
    (orphan / "job.json").write_text(json.dumps({"id": orphan.name, "name": "gone.jpg", "source": "gone.jpg",
                                                 "folder": str(orphan), "queued_at": ""}))
    assert status_module.read(config)["in_work"] == 0
    old = time.time() - 10
    for path in (orphan / "job.json", orphan):
        os.utime(path, (old, old))
    assert Spool(config.inbox, config.work, config.done, config.failed).recover() == []
    assert not orphan.exists()


def run_in_thread(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return thread


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_worker_thread_is_restarted_and_its_job_retried_as_a_crash(tmp_path, engine, monkeypatch):
    real = Worker.process
    calls = []

    def dies_once(self, job):
        calls.append(job.name)
        if len(calls) == 1:
            raise SystemExit("a library called sys.exit")  # not an Exception: it ends the thread
        return real(self, job)

    monkeypatch.setattr(Worker, "process", dies_once)
    daemon = Daemon(make_config(tmp_path), engine=engine)
    thread = run_in_thread(daemon)
    try:
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
        wait_for(lambda: outputs(tmp_path), 60)
        record = json.loads((tmp_path / "outbox" / "starry" / "rocket.json").read_text())
        assert (record["attempts"], record["crashes"]) == (1, 1) and calls == ["rocket.jpg", "rocket.jpg"]
        status = wait_for(lambda: (s := status_json(tmp_path)).get("worker", {}).get("restarts") and s, 60)
        assert status["worker"] == {"alive": True, "restarts": 1, "held": []} and status["state"] == "running"
    finally:
        daemon.stop.set()
        thread.join(60)


def test_a_stuck_worker_is_not_running_in_status(tmp_path, engine, monkeypatch):
    """A wedged driver (no step, no progress) is told as stuck, then running again once it moves. The hang lasts
    until the test has seen it told (it was a 3.5 s sleep: under load the test could read the stuck status late in
    it and find the heartbeat healthy again, or miss the 2.5 s it was stuck altogether)."""
    real, release = engine.stylize, threading.Event()

    def hangs_then_works(*args, **kwargs):
        release.wait(60)  # no step, no progress: a wedged driver, until the test has seen it told
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "stylize", hangs_then_works)
    daemon = Daemon(make_config(tmp_path, stall_seconds=1), engine=engine)
    thread = run_in_thread(daemon)
    try:
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
        stuck = wait_for(lambda: (s := status_json(tmp_path)).get("state", "").startswith("stuck") and s, 30)
        assert not stuck["healthy"] and "watchdog" in stuck["state"]
        assert not daemon.heartbeat.healthy(time.monotonic())
        release.set()
        wait_for(lambda: outputs(tmp_path), 60)
        wait_for(lambda: status_json(tmp_path).get("state") == "running", 60)
    finally:
        release.set()
        daemon.stop.set()
        thread.join(60)


def test_when_the_failure_path_fails_the_file_is_kept_under_its_job_id_or_held(tmp_path, engine, monkeypatch):
    """A fault inside the failure path itself (here a bug in Spool.fail) still ends the job with an outcome."""
    real, calls = Spool.fail, []

    def broken(self, job, *args, **kwargs):
        calls.append(job.name)
        if job.name == "held.png" or calls.count(job.name) == 1:
            raise RuntimeError("a bug in the failure path")
        return real(self, job, *args, **kwargs)

    monkeypatch.setattr(Spool, "fail", broken)
    config = make_config(tmp_path)
    for name in ("text.png", "held.png"):
        (tmp_path / "inbox" / name).write_text("not a picture\n")
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    assert Daemon(config, once=True, engine=engine).run() == 0
    [error] = [json.loads(p.read_text()) for p in (tmp_path / "spool" / "failed").glob("*.error.json")]
    assert error["file"] == "text.png" and error["kept_as"] == f"{error['job_id']}.png"
    assert "internal error: RuntimeError" in error["message"]
    held = [p for p in (tmp_path / "spool" / "work").rglob("held.png")]
    assert len(held) == 1, "the file the failure path could not move stays in work/, not lost"
    assert status_json(tmp_path)["worker"]["held"] == ["held.png"]
    assert [p.name for p in outputs(tmp_path)] == ["rocket.png"], "the worker went on"
