"""A drop that can never be a picture fails at the door, not behind the queue (mend12a).

A text file named .jpg, a PDF renamed .png: it went to failed/ only when the worker reached it, behind every photo
dropped before it (hours behind a night's backlog), and whoever dropped it heard nothing meanwhile. Now the daemon
reads its header once it is quiet (settle.DecodeCheck.not_a_picture) and fails it through the executor's reject
(JobLife.conclude: the one failure path). The order is made by a gate, not by time: the worker's engine holds the
first photo until the test lets it go, so no photo of the backlog can be done before the bad drops are failed.
"""
from __future__ import annotations

import json
import os
import shutil
import threading

from daemon_helpers import SAMPLES, errors, make_config, outputs, wait_for
from pipeline.daemon import settle
from pipeline.daemon.daemon import Daemon

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
