"""A drop that can never be a picture fails at the door, not behind the queue (mend12a).

A text file named .jpg, a PDF renamed .png: it went to failed/ only when the worker reached it, behind every photo
dropped before it (hours behind a night's backlog), and whoever dropped it heard nothing meanwhile. Now the daemon
reads its header once it is quiet (settle.DecodeCheck.not_a_picture) and fails it through the executor's reject
(JobLife.conclude: the one failure path). The order is made by a gate, not by time: the worker's engine holds the
first photo until the test lets it go, so no photo of the backlog can be done before the bad drops are failed.
"""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import threading
import time
from datetime import datetime

from PIL import Image

from daemon_helpers import SAMPLES, errors, make_config, outputs, wait_for
from pipeline.daemon import settle
from pipeline.daemon.daemon import Daemon
from pipeline.daemon.settle import Entry
from pipeline.daemon.spool import Spool
from pipeline.errors import Reason

GOOD = ("a.jpg", "b.jpg", "c.jpg", "d.jpg")
BAD = {"notes.jpg": b"shopping list: eggs, milk\n" * 40, "scan.png": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 900}


def test_a_bad_drop_behind_a_backlog_fails_before_the_backlog_is_done(tmp_path, engine, monkeypatch):
    config = make_config(tmp_path, defaults={"size": 32, "steps": 3})
    gate, held = threading.Event(), threading.Event()
    real = engine.stylize

    def gated(*args, **kwargs):  # the backlog's first photo waits here until the bad drops are in failed/
        held.set()
        assert gate.wait(300), "the gate was never opened"
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "stylize", gated)
    told: list[tuple[str, str]] = []
    daemon = Daemon(config, once=True, engine=engine)
    listener = daemon.book.listener
    daemon.book.listener = lambda kind, data: (told.append((kind, data["file"])), listener(kind, data))
    inbox = tmp_path / "inbox"
    for name in GOOD:
        shutil.copy(SAMPLES / "coffee.jpg", inbox / name)
    for name, data in BAD.items():  # dropped last: today they wait for the four photos before them
        (inbox / name).write_bytes(data)
    (inbox / "a.yaml").write_text("steps: 3\n")  # a sidecar is no picture either: it goes with its photo
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: held.is_set(), 120)
        failed = wait_for(lambda: (found := errors(tmp_path)).keys() >= BAD.keys() and found, 120)
        assert outputs(tmp_path) == [] and not gate.is_set(), "no photo of the backlog is done yet"
        for name in BAD:
            assert failed[name]["code"] == "bad_image" and failed[name]["file"] == name
            assert failed[name]["message"] == "not an image Pillow can read" and "JPEG" in failed[name]["fix"]
            assert (tmp_path / "spool" / "failed" / name).read_bytes() == BAD[name], "kept whole"
        # the notice is the main loop's, from the outcome it polls after the note is written: waited for, not raced
        wait_for(lambda: sorted(file for kind, file in told if kind == "failed") == sorted(BAD), 120)
        waiting = [p for p in inbox.glob("*.jpg")] + list((tmp_path / "spool" / "work").iterdir())
        assert len(waiting) >= len(GOOD), "the backlog still waits behind the held photo"
    finally:
        gate.set()
        thread.join(300)
    assert not thread.is_alive()
    done = sorted(os.listdir(tmp_path / "spool" / "done"))
    assert done == sorted([*GOOD, "a.yaml"]), "each photo done once, the sidecar with its photo"
    assert sorted(p.name for p in outputs(tmp_path)) == [f"{n[0]}.png" for n in GOOD], "one output each"
    assert sorted(errors(tmp_path)) == sorted(BAD), "nothing else failed"
    assert [p for p in inbox.rglob("*") if p.is_file()] == [] and os.listdir(tmp_path / "spool" / "work") == []
    assert sorted(file for kind, file in told if kind == "done") == sorted(GOOD)
    log = json.loads((tmp_path / "outbox" / "starry" / "a.json").read_text())
    assert log["steps"] == 3


def test_a_file_still_coming_is_not_failed_for_its_missing_header(tmp_path):
    """A writer that stalls before the header is whole (a prefix that names no format yet) is waited for, as a broken
    file is (the longer wait, unchanged): on a clock handed in, so no wait races the load."""
    now = [0.0]
    check = settle.DecodeCheck(clock=lambda: now[0])
    photo, text = tmp_path / "slow.jpg", tmp_path / "notes.jpg"
    whole = (SAMPLES / "coffee.jpg").read_bytes()
    photo.write_bytes(whole[:1])  # one byte: no format named yet
    text.write_bytes(b"not a picture at all\n")
    assert check.not_a_picture(photo, 0.3) is None and check.not_a_picture(text, 0.3) is None, "first look: waits"
    now[0] += settle.RECHECK_MIN - 0.1
    with open(photo, "ab") as out:  # the writer goes on before the longer wait is out
        out.write(whole[1:64])
    os.utime(photo, ns=(1, 1))
    assert check.not_a_picture(photo, 0.3) is None, "changed since: its wait starts again"
    now[0] += 0.2
    assert check.not_a_picture(photo, 0.3) is None
    failure = check.not_a_picture(text, 0.3)
    assert failure is not None and failure.problem == "not an image Pillow can read", "unchanged for the wait"
    with open(photo, "ab") as out:
        out.write(whole[64:])
    assert check.not_a_picture(photo, 0.3) is None and photo in check.pictures, "whole: a picture, remembered"
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(whole[: len(whole) // 2])
    now[0] += 100
    assert check.not_a_picture(truncated, 0.3) is None, "its header is whole: the worker's full decode fails it"


def _libtiff_tiff() -> bytes:
    """A TIFF as libtiff writes it (GIMP, ImageMagick, libvips, scanners; Pillow's own compressed ones): its
    directory after the image data, so no prefix of it is identified until it is whole."""
    buf = io.BytesIO()
    Image.open(SAMPLES / "coffee.jpg").save(buf, "TIFF", compression="tiff_lzw")
    data = buf.getvalue()
    assert int.from_bytes(data[4:8], "little") > len(data) // 2, "its directory after the data"
    return data


def _screening_daemon(tmp_path, engine) -> tuple[Daemon, list]:
    """A `once` daemon at noon, its window (22:00-07:00) closed, so only the screen claims; no watcher (its open
    counts are set by hand); the broken file's wait on a clock handed in."""
    config = make_config(tmp_path, schedule={"start": "22:00", "end": "07:00"})
    daemon = Daemon(config, engine=engine, once=True, clock=lambda: datetime(2026, 11, 27, 12, 0))
    fake = [1000.0]
    daemon.decode.clock = lambda: fake[0]
    daemon.start()
    return daemon, fake


def _quiet(daemon: Daemon, path, opens: int = 0) -> None:
    st = path.stat()
    daemon.tracker.entries[path] = Entry(0.0, 0.0, st.st_size, st.st_mtime, False, 0.0, opens)


def _passes(daemon: Daemon, fake: list, count: int = 3) -> None:
    """Passes across the broken file's longer wait, on the clock handed in: no sleep."""
    for _ in range(count):
        daemon.last_screen = 0.0
        daemon._pass(now=time.monotonic())
        fake[0] += settle.RECHECK_MIN + 1


def test_a_tiff_still_uploading_is_not_failed_at_the_door(tmp_path, engine):
    """rev12c: every prefix of a libtiff TIFF is unidentified, so a stalled upload was failed at the door, window
    closed, and its writer then finished it into failed/. A start a format's signature accepts is left to the claim;
    a text file beside it, as quiet as long, is failed (the wait was out)."""
    whole = _libtiff_tiff()
    daemon, fake = _screening_daemon(tmp_path, engine)
    photo, text = tmp_path / "inbox" / "scan.tif", tmp_path / "inbox" / "notes.jpg"
    try:
        photo.write_bytes(whole[: len(whole) // 2])
        text.write_bytes(BAD["notes.jpg"])
        _quiet(daemon, photo)
        _quiet(daemon, text)
        _passes(daemon, fake)
        with open(photo, "ab") as writer:  # the upload resumes and completes
            writer.write(whole[len(whole) // 2:])
    finally:
        daemon.stop.set()
        daemon._shutdown()
    failed = errors(tmp_path)
    assert sorted(failed) == ["notes.jpg"], f"a TIFF still being written failed at the door: {failed.get('scan.tif')}"
    assert photo.read_bytes() == whole, "still in the inbox, whole"


def test_a_file_its_writer_holds_open_is_not_failed_at_the_door(tmp_path, engine):
    """Whatever its start, a file someone holds open (the watcher's count) is not done: a stalled upload whose first
    bytes name nothing yet. Once closed, it is screened as any file."""
    daemon, fake = _screening_daemon(tmp_path, engine)
    text = tmp_path / "inbox" / "notes.jpg"
    try:
        text.write_bytes(BAD["notes.jpg"])
        _quiet(daemon, text, opens=1)
        _passes(daemon, fake)
        assert errors(tmp_path) == {} and text.exists(), "held open: left alone"
        daemon.tracker.entries[text].opens = 0  # its writer closed it
        _passes(daemon, fake)
    finally:
        daemon.stop.set()
        daemon._shutdown()
    assert sorted(errors(tmp_path)) == ["notes.jpg"]


def test_a_failure_path_fault_at_the_door_gets_the_last_resort(tmp_path, engine, monkeypatch):
    """rev12c: reject ran its failure path outside the worker's guard: EIO on failed/ reached the main loop, which
    logged "cannot claim this file" for a job claimed into work/, where it stayed with no outcome. Now it is kept in
    failed/ under its job id (JobLife.last_resort), and its failure is told."""
    real, calls = Spool.fail, []

    def fail_once(self, job, *args, **kwargs):
        calls.append(kwargs.get("kept_name"))
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error", str(self.failed / job.name))
        return real(self, job, *args, **kwargs)

    monkeypatch.setattr(Spool, "fail", fail_once)
    daemon, fake = _screening_daemon(tmp_path, engine)
    told: list[tuple[str, str]] = []
    listener = daemon.book.listener
    daemon.book.listener = lambda kind, data: (told.append((kind, data["file"])), listener(kind, data))
    text = tmp_path / "inbox" / "notes.jpg"
    try:
        text.write_bytes(BAD["notes.jpg"])
        _quiet(daemon, text)
        _passes(daemon, fake)  # the reject, then the outcome polled at the next pass
    finally:
        daemon.stop.set()
        daemon._shutdown()
    assert os.listdir(tmp_path / "spool" / "work") == [], "nothing stranded in work/"
    assert len(calls) == 2 and calls[1] is not None, "the last resort kept it under its job id"
    (name, note), = errors(tmp_path).items()
    assert note["code"] == str(Reason.GAVE_UP) and note["message"].startswith("internal error: OSError"), note
    assert name == "notes.jpg" and note["kept_as"] == calls[1], note
    assert (tmp_path / "spool" / "failed" / calls[1]).read_bytes() == BAD["notes.jpg"]
    assert ("failed", "notes.jpg") in told


def test_the_screen_never_reopens_a_file_by_name(tmp_path):
    """settle.py's rule: the main loop reads a file from the one open, never by name again (a FIFO swapped in blocks
    it; a leased file waits). The explainers read the bytes the screen read: an HEIC swapped for a text file after
    that read is still named by what was read, an HEIC."""
    now = [0.0]
    check = settle.DecodeCheck(clock=lambda: now[0])
    heic = tmp_path / "IMG_0001.jpg"  # an AirDrop's name: its ftyp box says what it is
    heic.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 200)
    assert check.not_a_picture(heic, 0.3) is None, "first look: waits"
    now[0] += settle.RECHECK_MIN + 1
    real = check._stale

    def swapped(path, st, wait):  # after the screen's read, before its verdict: the name now holds another file
        heic.write_bytes(BAD["notes.jpg"])
        return real(path, st, wait)

    check._stale = swapped
    failure = check.not_a_picture(heic, 0.3)
    assert failure is not None and failure.problem.startswith("an HEIC photo"), failure
    assert "Most Compatible" in failure.fix
