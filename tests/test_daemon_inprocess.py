"""Daemon behaviour that needs an injected clock or an injected fault: run in-process, real engine."""
from __future__ import annotations

import errno
import json
import shutil
import threading
import time
from datetime import datetime

import pytest

from daemon_helpers import SAMPLES, errors, make_config, outputs, status_json, wait_for
from pipeline.daemon import outputs as outputs_module
from pipeline.daemon.daemon import Daemon


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def current_job(root):
    try:
        return json.loads((root / "spool" / "status.json").read_text()).get("current")
    except (OSError, ValueError):
        return None


def run_in_thread(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return thread


def test_run_window_holds_jobs_outside_and_pauses_a_running_job(tmp_path, engine):
    clock = Clock(datetime(2026, 11, 27, 12, 0))  # noon: outside 22:00-07:00
    # 60 steps (was 120): the window closes at step 10 and the pause comes within a tick (0.2 s), a few steps on
    config = make_config(tmp_path, schedule={"start": "22:00", "end": "07:00"},
                         defaults={"size": 40, "steps": 60, "checkpoint_every": 5, "checkpoint_seconds": 0,
                                   "early_stop_tol": 0})
    daemon = Daemon(config, engine=engine, clock=clock)  # the run window's clock, passed in
    thread = run_in_thread(daemon)
    try:
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "night.jpg")
        time.sleep(1.5)  # the photo settles (0.3 s) meanwhile: inside a window it would be claimed by now
        # status.json as the daemon writes it (once a second): it was read at once, and under load none was there yet
        snap = wait_for(lambda: (s := status_json(tmp_path)).get("state") == "outside the run window" and s, 30)
        assert list((tmp_path / "spool" / "work").iterdir()) == [], "nothing is claimed outside the window"
        assert snap["next_window"] == "2026-11-27T22:00"

        clock.now = datetime(2026, 11, 27, 23, 0)  # the window opens
        wait_for(lambda: (daemon.executor.progress().current or {}).get("step", 0) >= 10, 60)
        clock.now = datetime(2026, 11, 28, 7, 0)  # ... and closes mid-job
        wait_for(lambda: not daemon.executor.progress().busy and daemon.book.retry, 30)
        job = daemon.book.retry[0]
        assert job.checkpoint.exists() and outputs(tmp_path) == []

        clock.now = datetime(2026, 11, 28, 22, 30)  # the next night
        wait_for(lambda: outputs(tmp_path), 120)
        log = json.loads((tmp_path / "outbox" / "starry" / "night.json").read_text())
        assert log["resumed_from_step"] >= 10 and log["steps"] == 60
    finally:
        daemon.stop.set()
        thread.join(60)


def test_disk_full_once_pauses_then_resumes_without_charging_an_attempt(tmp_path, engine, monkeypatch):
    config = make_config(tmp_path, max_attempts=3, retry_backoff_seconds=0.1)
    real_write = outputs_module.write
    calls = []

    def full_disk_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(outputs_module, "write", full_disk_once)
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    daemon = Daemon(config, once=True, engine=engine)
    assert daemon.run() == 0
    assert [p.name for p in outputs(tmp_path)] == ["rocket.png"]
    log = json.loads((tmp_path / "outbox" / "starry" / "rocket.json").read_text())
    assert log["attempts"] == 1 and len(calls) == 2, "a full disk is the machine's fault, not the photo's"


def test_persistent_transient_failure_ends_in_failed_with_the_input_kept(tmp_path, engine, monkeypatch):
    config = make_config(tmp_path, max_attempts=2, retry_backoff_seconds=0.05)

    def always_failing(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(outputs_module, "write", always_failing)
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    assert Daemon(config, once=True, engine=engine).run() == 0
    failure = errors(tmp_path)["rocket.jpg"]
    assert failure["code"] == "too_many_attempts" and "Input/output error" in failure["message"]
    assert (tmp_path / "spool" / "failed" / "rocket.jpg").read_bytes() == (SAMPLES / "rocket.jpg").read_bytes()


def test_unknown_recipe_folder_fails_with_a_suggestion(tmp_path, engine):
    config = make_config(tmp_path)
    (tmp_path / "inbox" / "stary").mkdir(parents=True)
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "stary" / "typo.jpg")
    assert Daemon(config, once=True, engine=engine).run() == 0
    failure = errors(tmp_path)["typo.jpg"]
    assert failure["code"] == "unknown_recipe" and "did you mean 'starry'" in failure["fix"]


@pytest.mark.parametrize("folder, recipe", [("Scream", "scream"), ("STARY", "starry")])
def test_a_recipe_folder_spelt_in_another_case_fails_with_the_real_name(tmp_path, engine, folder, recipe):
    """rev7a finding 3: `inbox/Scream/` scored 0.83 against 'scream' (case-sensitive, under the 0.85 cutoff), was
    taken for an album and styled with the default recipe into outbox/starry/Scream/, without a word."""
    config = make_config(tmp_path)
    (tmp_path / "inbox" / folder).mkdir(parents=True)
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / folder / "rocket.jpg")
    assert Daemon(config, once=True, engine=engine).run() == 0
    failure = errors(tmp_path)["rocket.jpg"]
    assert failure["code"] == "unknown_recipe" and f"did you mean {recipe!r}?" in failure["fix"], failure
    assert f"inbox/{folder}/" in failure["message"] and not outputs(tmp_path)


def test_once_exits_nonzero_only_when_the_daemon_cannot_work(tmp_path, capsys):
    from pipeline.cli import main

    bad = make_config(tmp_path / "bad", recipes={"x": {"styles": ["missing.jpg"]}})
    assert main(["once", "--config", str(bad)]) == 2
    assert "missing.jpg" in capsys.readouterr().err
    folder = tmp_path / "blocked"
    config = make_config(folder)
    (folder / "inbox").rmdir()
    (folder / "inbox").write_text("a file where the inbox folder should be")  # unusable even for root
    assert main(["once", "--config", str(config)]) == 2
    assert "inbox" in capsys.readouterr().err
    paused = make_config(tmp_path / "paused")  # the outbox a file: a pause a person fixes (rev9b findings 1, 5)
    (tmp_path / "paused" / "outbox").write_text("a file where the outbox folder should be")
    assert main(["once", "--config", str(paused)]) == 3
    assert f"{tmp_path / 'paused' / 'outbox'} is a file" in capsys.readouterr().err


def test_status_reports_a_running_job(tmp_path, engine, capsys):
    from pipeline.cli import main

    config = make_config(tmp_path, defaults={"size": 48, "steps": 300, "early_stop_tol": 0})
    daemon = Daemon(config, engine=engine)
    thread = run_in_thread(daemon)
    try:
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "busy.jpg")
        wait_for(lambda: current_job(tmp_path), 60)
        assert main(["status", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert "busy.jpg" in out and "step" in out and "ETA" in out and "daemon: running" in out
    finally:
        daemon.stop.set()
        thread.join(60)
    assert main(["status", "--config", str(config)]) == 0
    assert "not running" in capsys.readouterr().out


def test_a_pass_takes_its_clock_and_the_rescan_comes_when_it_says(tmp_path, engine):
    """rev9d finding 10: the main loop read time.monotonic() itself at each decision, so only a sleep could bring
    its rescan. Now _pass(now=None), as huey's loop(now=None): the clock is read once a pass and handed down, and a
    photo no watcher saw (`once` runs none) is found exactly when `now` says the rescan is due, not a tick before."""
    config = make_config(tmp_path, rescan_seconds=600)
    daemon = Daemon(config, once=True, engine=engine)
    daemon.start()
    try:
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "late.jpg")
        started = daemon.last_rescan
        daemon._pass(now=started + 599)
        assert len(daemon.tracker) == 0 and daemon.last_rescan == started, "a rescan 1 s early"
        daemon._pass(now=started + 600)
        assert daemon.last_rescan == started + 600 and daemon.last_unpaired == started + 600
        assert [path.name for path in daemon.tracker.entries] == ["late.jpg"]
    finally:
        daemon._shutdown()


def test_a_tick_handed_in_as_last_plus_every_is_due_at_any_clock_reading(tmp_path, engine):
    """At monotonic 16077.468268116, (last + 600) - last is 599.9999999999982 in floating point: a pass handed
    last + 600 found the rescan (and the lonely-sidecar tick) not yet due; about 1 clock reading in 100 does this,
    and CI met it in the test above. A tick is due once now reaches last + every."""
    config = make_config(tmp_path, rescan_seconds=600)
    daemon = Daemon(config, once=True, engine=engine)
    daemon.start()
    try:
        last = 16077.468268116
        assert (last + 600) - last < 600, "the reading this test is about"
        daemon.last_rescan = daemon.last_unpaired = last
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "late.jpg")
        daemon._pass(now=last + 600)
        assert daemon.last_rescan == last + 600 and [p.name for p in daemon.tracker.entries] == ["late.jpg"]
        tick = 16382.975284707  # (tick + 5) - tick is 4.999999999998181: the lonely-sidecar tick (5 s) alone
        assert (tick + 5) - tick < 5, "the reading this part is about"
        daemon.last_rescan, daemon.last_unpaired = tick, tick
        daemon._pass(now=tick + 5)
        assert daemon.last_rescan == tick and daemon.last_unpaired == tick + 5
    finally:
        daemon._shutdown()
