"""rev11a: writers the claim met mid-write, and the settle check's memory over a long night.

1. An FTP or WebDAV upload makes the photo's final name first and writes its bytes as they come; stalled at 0 bytes
   with its writer's descriptor open, it was claimed after the broken file's short recheck (3 s) and failed as
   empty_file, and the bytes then landed in failed/ beside a note saying it was empty. Empty and not closed by its
   writer (no IN_CLOSE_WRITE seen), it now waits HOLE_WAIT; closed, it is really empty and fails after the recheck.
2. A sidecar still being written at the claim was copied cut short (`steps: 300` read as a valid `steps: 3`): the
   photo now waits until its sidecar is quiet, told once, as for a leased sidecar.
3. The settle check's entries for files gone from the inbox were never dropped: each rescan prunes them.
Each clock is handed in, so no wait here races the box's load.
"""
from __future__ import annotations

import errno
import os
import shutil
import types
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon_helpers import SAMPLES, make_config
from pipeline.daemon import settle
from pipeline.daemon.daemon import Daemon

SETTLE = 0.3  # make_config's settle_seconds


class Clock:
    """A clock the test moves: ``now`` seconds."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def daemon_with_clocks(tmp_path: Path, wall: float = 1.9e9) -> tuple[Daemon, Clock, Clock, list]:
    """A `once` daemon whose claims are handed to a list (nothing runs), its settle check on the test's clocks."""
    daemon = Daemon(make_config(tmp_path), once=True)
    mono, wall_clock = Clock(1000.0), Clock(wall)
    daemon.decode = settle.DecodeCheck(clock=mono, wall=wall_clock)
    submitted: list = []
    daemon.executor = types.SimpleNamespace(progress=lambda: types.SimpleNamespace(open_jobs=0), poll=lambda: [],
                                            submit=submitted.append)
    return daemon, mono, wall_clock, submitted


def test_an_empty_file_its_writer_holds_open_waits_the_holes_wait_and_one_closed_only_the_recheck(tmp_path):
    daemon, mono, _, submitted = daemon_with_clocks(tmp_path)
    upload, dropped = daemon.config.inbox / "upload.jpg", daemon.config.inbox / "zero.jpg"
    with open(upload, "wb"), open(dropped, "wb"):
        pass
    daemon.tracker.touch(upload, closed=False)  # created: the upload's writer holds it, no close seen
    daemon.tracker.touch(dropped, closed=True)  # IN_CLOSE_WRITE: its writer is done with it, at 0 bytes
    start = mono.now
    assert not daemon._claim(upload) and not daemon._claim(dropped)
    mono.now = start + settle.RECHECK_MIN
    assert daemon._claim(dropped), "closed at 0 bytes: really empty, claimed after the short recheck to fail"
    mono.now = start + settle.HOLE_WAIT / 2  # a 30 s stall: far past the recheck that claimed it mid-upload
    assert not daemon._claim(upload) and upload.exists(), "claimed at 0 bytes while its writer held it open"
    mono.now = start + settle.HOLE_WAIT
    assert daemon._claim(upload), "unchanged a minute: claimed as it is (a stalled transfer), never held for good"
    assert [job.name for job in submitted] == ["zero.jpg", "upload.jpg"]


def test_a_photo_waits_while_its_sidecar_is_still_being_written_and_takes_it_whole(tmp_path):
    daemon, _, wall, submitted = daemon_with_clocks(tmp_path)
    photo, sidecar = daemon.config.inbox / "a.jpg", daemon.config.inbox / "a.yaml"
    shutil.copy(SAMPLES / "coffee.jpg", photo)
    sidecar.write_text("recipe: scream\nsteps: 3")  # `steps: 300` half-written: valid YAML, a different run
    os.utime(sidecar, ns=(int(wall.now * 1e9),) * 2)  # written just now
    daemon.tracker.seen(photo)
    wall.now += SETTLE / 3
    with capture_logs() as logs:
        assert [daemon._claim(photo) for _ in range(3)] == [False] * 3, "claimed with its sidecar cut short"
    said = [(e["event"], e["file"], e["sidecar"]) for e in logs if "sidecar" in e["event"]]
    assert said == [("the photo waits: its sidecar is still being written", str(photo), str(sidecar))], logs
    assert daemon.decode.held_listing(daemon.config.inbox) == [
        {"file": "a.jpg", "path": str(photo), "sidecar": "a.yaml", "why": "its sidecar is still being written"}]
    sidecar.write_text("recipe: scream\nsteps: 300\n")  # the rest arrives
    os.utime(sidecar, ns=(int(wall.now * 1e9),) * 2)
    wall.now += SETTLE * 3
    assert daemon._claim(photo), "quiet now: claimed with the whole sidecar"
    assert (submitted[0].dir / "a.yaml").read_text() == "recipe: scream\nsteps: 300\n"
    assert daemon.decode.held_listing(daemon.config.inbox) == []


def test_a_sidecar_stamped_by_a_clock_ahead_is_taken_once_unchanged_for_the_settle_time(tmp_path):
    """A share's server clock an hour ahead (or the local clock stepped back): its mtime never ages; the sidecar is
    quiet once seen unchanged for settle_seconds, so the photo is not held for the hour."""
    daemon, mono, wall, submitted = daemon_with_clocks(tmp_path)
    photo, sidecar = daemon.config.inbox / "a.jpg", daemon.config.inbox / "a.yaml"
    shutil.copy(SAMPLES / "coffee.jpg", photo)
    sidecar.write_text("recipe: scream\n")
    os.utime(sidecar, ns=(int((wall.now + 3600) * 1e9),) * 2)
    assert not daemon._claim(photo)
    mono.now += SETTLE * 2
    assert daemon._claim(photo) and [job.sidecar for job in submitted] == ["a.yaml"]


def test_each_rescan_forgets_the_settle_checks_files_gone_from_the_inbox(tmp_path, monkeypatch):
    daemon, _, wall, _ = daemon_with_clocks(tmp_path)
    inbox = daemon.config.inbox
    data = (SAMPLES / "coffee.jpg").read_bytes()
    for name in ("broken.jpg", "kept.jpg"):
        (inbox / name).write_bytes(data[: len(data) // 2])
    shutil.copy(SAMPLES / "coffee.jpg", inbox / "unreadable.jpg")
    shutil.copy(SAMPLES / "coffee.jpg", inbox / "paired.jpg")
    (inbox / "paired.yaml").write_text("recipe: scream\n")
    os.utime(inbox / "paired.yaml", ns=(int(wall.now * 1e9),) * 2)
    real = settle.open_regular

    def failing(path, busy_wait=None):
        if Path(path).name == "unreadable.jpg":
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path, busy_wait)
    monkeypatch.setattr(settle, "open_regular", failing)
    assert not daemon._claim(inbox / "broken.jpg") and not daemon._claim(inbox / "kept.jpg")
    assert not daemon._claim(inbox / "paired.jpg")  # its sidecar was just written
    with pytest.raises(OSError):
        daemon._claim(inbox / "unreadable.jpg")
    for name in ("broken.jpg", "unreadable.jpg", "paired.jpg", "paired.yaml"):
        (inbox / name).unlink()  # taken away by hand: ready() is never asked about them again
    daemon._rescan()
    check = daemon.decode
    assert (set(check.first_failure), set(check.open_errors), set(check.held_sidecars)) == (
        {inbox / "kept.jpg"}, set(), set()), "entries for files gone stay all night"


def test_an_empty_file_its_writer_closed_and_opened_again_waits_the_holes_wait(tmp_path):
    """rev11c: Tracker.closed turned True on any IN_CLOSE_WRITE, so a writer that makes the name, closes it, opens it
    again (an upload's append) and stalls at 0 bytes was claimed after the 3 s recheck and failed as empty. The
    watcher's open events (watchdog's IN_OPEN and IN_CLOSE_NOWRITE, in inotify's order) count who holds the file:
    held again, it waits HOLE_WAIT; a reader's open and close (the daemon's own decode check) leave an empty file
    closed by its writer claimed after the recheck."""
    from watchdog.events import FileClosedEvent, FileClosedNoWriteEvent, FileCreatedEvent, FileOpenedEvent

    from pipeline.daemon.watcher import Handler

    daemon, mono, _, submitted = daemon_with_clocks(tmp_path)
    handler = Handler(daemon.config.inbox, daemon.tracker)
    upload, dropped = daemon.config.inbox / "upload.jpg", daemon.config.inbox / "zero.jpg"
    for path in (upload, dropped):
        path.write_bytes(b"")
        for event in (FileCreatedEvent, FileOpenedEvent, FileClosedEvent):  # made, opened, closed at 0 bytes
            handler.dispatch(event(str(path)))
    handler.dispatch(FileOpenedEvent(str(upload)))  # its writer back at it (an append), stalled before a byte
    start = mono.now
    assert not daemon._claim(upload) and not daemon._claim(dropped)
    for event in (FileOpenedEvent, FileClosedNoWriteEvent):  # the decode check's own read of each
        handler.dispatch(event(str(upload)))
        handler.dispatch(event(str(dropped)))
    mono.now = start + settle.RECHECK_MIN
    assert daemon._claim(dropped), "closed at 0 bytes and read since: really empty, claimed after the recheck"
    mono.now = start + settle.HOLE_WAIT / 2
    assert not daemon._claim(upload) and upload.exists(), "claimed at 0 bytes while its writer held it open again"
    mono.now = start + settle.HOLE_WAIT
    assert daemon._claim(upload), "unchanged a minute: claimed as it is (a stalled transfer), never held for good"
    assert [job.name for job in submitted] == ["zero.jpg", "upload.jpg"]
