"""rev6e findings 3, 4, 8, 9: the service keeps going after a person's hand in its folders and config."""
from __future__ import annotations

import json
import os
import shutil
import socket

import pytest
from daemon_helpers import SAMPLES, log_events, make_config, start, stop, wait_for, wait_ready
from pipeline.cli import main
from pipeline.daemon import diskguard
from pipeline.daemon.daemon import Daemon, StartupError
from pipeline.daemon.diskguard import DiskGuard
from pipeline.daemon.settle import Tracker
from pipeline.daemon.watcher import Watcher


def test_guard_resumes_after_the_outbox_is_removed_to_free_space(tmp_path):
    """rev6e 3: rm -rf outbox while paused left claiming paused for good (a missing folder measured 0 bytes)."""
    folders = [tmp_path / n for n in ("work", "outbox", "failed")]
    for f in folders:
        f.mkdir()
    now = [0.0]
    guard = DiskGuard(lambda: folders, clock=lambda: now[0])
    guard.pause(folders[0])  # ENOSPC seen
    shutil.rmtree(folders[1])  # the person deletes last night's outbox to make room
    now[0] += diskguard.CHECK_SECONDS + 1
    assert not guard.paused() and not guard.pauses
    assert folders[1].is_dir()  # made again, so the next output has somewhere to go


def _reload(config, proc, old: str, new: str, count: int) -> None:
    config.write_text(config.read_text().replace(f"outbox: {old}", f"outbox: {new}"))
    wait_for(lambda: sum(e.get("event") == "config reloaded" for e in log_events(proc)) == count, 60, proc)


def test_a_reloaded_outbox_takes_effect_at_the_next_start_and_its_problems_are_told(tmp_path):
    """rev6e 4: the new outbox was used at once (the log said "at the next start"), and one that could not be
    made (/proc/...) was accepted silently, failing every later photo as too_many_attempts."""
    config = make_config(tmp_path)
    proc = start(config)
    try:
        wait_ready(proc)
        for n, (old, new) in enumerate((("outbox", "outbox2"), ("outbox2", "/proc/no_outbox_here")), 1):
            _reload(config, proc, old, new, n)
            shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / f"p{n}.jpg")
            wait_for(lambda: (tmp_path / "outbox" / "starry" / f"p{n}.png").exists(), 60, proc)
        events = log_events(proc)
    finally:
        assert stop(proc) == 0
    warned = [e for e in events if "next start" in e.get("event", "")]
    assert [w["changes"] for w in warned] == [[f"outbox: {tmp_path / 'outbox'} -> {tmp_path / 'outbox2'}"],
                                              [f"outbox: {tmp_path / 'outbox'} -> /proc/no_outbox_here"]]
    assert "next_start_problems" not in warned[0] and "cannot create" in warned[1]["next_start_problems"][0]
    assert not list((tmp_path / "outbox2").rglob("*.png")) and not list((tmp_path / "spool" / "failed").glob("*"))


def test_a_reload_that_raises_keeps_the_old_config_and_still_says_ready(tmp_path, monkeypatch):
    """rev6e suspected: inbox/<new recipe> a regular file made check_folders raise out of the reload, after
    RELOADING=1 and before READY=1 (systemd would wait for the reload to end)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    config = make_config(tmp_path)
    daemon = Daemon(config)
    (tmp_path / "inbox" / "fresh").write_text("a file where the new recipe's folder goes")
    config.write_text(config.read_text().replace("recipes:", "recipes:\n  fresh:\n    styles: [the_scream.jpg]"))
    daemon.reload_requested = True
    daemon._maybe_reload()
    assert listener.recv(4096).startswith(b"RELOADING=1") and listener.recv(4096) == b"READY=1"
    assert "fresh" not in daemon.config.recipes


@pytest.mark.parametrize("text", ["null", "[1, 2]", '{"pid": 1, "started_at": "2026',
                                  json.dumps({"pid": str(os.getpid()), "state": "running", "updated_at": "x"}),
                                  json.dumps({"pid": 0, "state": "running", "updated_at": "2999-01-01T00:00:00"})],
                         ids=["null", "a list", "cut short", "pid as text", "pid 0"])  # fixed ids: the pid differs
                         # from one xdist worker to the next, and workers must collect the same names
def test_status_reads_a_status_file_that_is_not_the_daemons_as_not_running(tmp_path, capsys, text):
    """rev6e 8: valid JSON but not an object (null -> TypeError, a list -> AttributeError), a pid as text
    (TypeError in os.kill) or 0 (our own process group) crashed or fooled `style-pipeline status`."""
    config = make_config(tmp_path)
    (tmp_path / "spool" / "failed").mkdir(parents=True)
    (tmp_path / "spool" / "status.json").write_text(text)
    (tmp_path / "spool" / "failed" / "x.jpg.error.json").write_text("[1]")
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "daemon: not running" in out and "failed: x.jpg: unreadable: its note x.jpg.error.json in failed/" in out, out


def test_a_photo_in_an_inbox_removed_and_made_again_is_seen_before_the_rescan(tmp_path):
    """rev6e 9: the inotify watch stayed on the removed folder and its thread alive: new photos waited for the
    rescan (here 120 s) and the recipe folders were not made again."""
    config = make_config(tmp_path, rescan_seconds=120, watch="native")
    proc = start(config)
    try:
        wait_ready(proc)
        shutil.rmtree(tmp_path / "inbox")
        (tmp_path / "inbox").mkdir()
        wait_for(lambda: (tmp_path / "inbox" / "starry").is_dir(), 60, proc)
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "a.jpg")
        wait_for(lambda: (tmp_path / "outbox" / "starry" / "a.png").exists(), 60, proc)
        assert any(e.get("event", "").startswith("the inbox was made again") for e in log_events(proc))
    finally:
        assert stop(proc) == 0


def test_the_watcher_sees_an_inbox_swapped_without_a_deletion_event(tmp_path):
    """rev6e 9, the other road: the inbox moved aside (or a share remounted) gives no delete event for it; its
    (st_dev, st_ino) changes. A folder merely missing is not a swap: nothing to watch until it is made again."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watcher = Watcher(inbox, Tracker(0.1), "native", 1.0)
    watcher.start()
    try:
        assert not watcher.replaced()
        inbox.rename(tmp_path / "old_inbox")
        assert not watcher.replaced()
        inbox.mkdir()
        assert watcher.replaced()
        watcher.restart()
        assert not watcher.replaced()
    finally:
        watcher.stop()


def test_a_recipe_folder_that_is_a_file_stops_the_start_with_a_clear_message(tmp_path):
    """rev6e suspected: inbox/<recipe> a regular file made check_folders raise FileExistsError at start-up,
    a bare traceback instead of a StartupError naming the path."""
    config = make_config(tmp_path)
    (tmp_path / "inbox" / "scream").write_text("not a folder")
    with pytest.raises(StartupError, match=r"inbox/scream: cannot make this folder \(File exists\)"):
        Daemon(config)


def test_a_reloaded_stall_seconds_reaches_the_heartbeat(tmp_path):
    """rev6e suspected: the heartbeat was built once, so a reloaded stall_seconds never applied."""
    config = make_config(tmp_path)
    daemon = Daemon(config)
    config.write_text(config.read_text() + "stall_seconds: 7\n")
    daemon.reload_requested = True
    daemon._maybe_reload()
    assert daemon.config.stall_seconds == 7 and daemon.heartbeat.stall_seconds == 7


def test_status_under_a_refused_config_edit_still_shows_the_running_daemons_folders(tmp_path, capsys):
    """rev7a: while config.yaml held an edit the daemon refused (it goes on with its last good config), `status`
    printed only the config's error and exited 2, hiding the queue and the failures. Now the problems come first
    and the status is read from the folders alone; a config whose folders cannot be read still exits 2."""
    config = make_config(tmp_path, recipes={"starry": {"styles": ["no_such_painting.jpg"]}})
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    (tmp_path / "spool" / "failed").mkdir(parents=True)
    (tmp_path / "spool" / "failed" / "x.jpg.error.json").write_text("[1]")
    assert main(["status", "--config", str(config)]) == 0
    shown = capsys.readouterr()
    assert "no_such_painting.jpg" in shown.err and "folders alone" in shown.err
    assert "queue: 1 waiting in the inbox" in shown.out and "x.jpg.error.json" in shown.out, shown.out
    assert main(["status", "--config", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.parametrize("command", [["status"], ["report", "--since", "1h"], ["install-service", "--out", "units"]])
def test_a_config_whose_folders_is_a_list_is_named_not_a_traceback(tmp_path, capsys, monkeypatch, command):
    """rev9d item 3: status, report and install-service read the folders with a second, unchecked reader of
    config.yaml (beside config_build's): `folders: [inbox]` gave them AttributeError: 'list' object has no
    attribute 'get' (a traceback, exit 1) where validate names the line. One reader now: exit 2, file and key."""
    (tmp_path / "config.yaml").write_text("recipes: {}\nfolders: [inbox]\n")
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--config", "config.yaml"]) == 2
    err = capsys.readouterr().err
    assert "config.yaml:2: folders: must be a mapping with inbox, outbox and spool" in err, err
