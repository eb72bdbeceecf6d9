"""A FIFO swapped in for a dropped file after a check by name never blocks a reader (rev6c findings 5, 6).

A plain open() of a FIFO waits for a writer forever: on the main loop (settle's decode check) the daemon hung; on
the worker (a sidecar read) the stall watchdog killed the service and the photo was charged a crash. Every reader
of a dropped file opens it with fsio.open_regular (no block, no link followed, the kind checked on the open file).
Each test runs the reader in a thread with a deadline: without the fix it is still waiting when the deadline
passes (the FIFO is then opened for writing to let it go) and the test fails; with it, it answers at once.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import time
import types
from pathlib import Path

import pytest

from daemon_helpers import SAMPLES, make_config
from pipeline.daemon import jobs, settle
from pipeline.daemon.config import ConfigError
from pipeline.daemon.config import load as load_config
from pipeline.daemon.config_build import check_folders
from pipeline.daemon.jobs import JobLife
from pipeline.daemon.prechecks import pre_check_regular_file as real_pre_check_regular_file
from pipeline.daemon.spool import Spool
from pipeline.daemon.watcher import written_by_us
from pipeline.errors import JobFailure
from pipeline.fsio import NotRegularFile, open_regular

DEADLINE = 60.0  # a limit on a hang (the reader blocked for good) only: a loaded box's slow answer is no failure


def answer_in_time(call, fifo: Path) -> list:
    """[what ``call`` returned or raised], or [] when it still waited on ``fifo`` after DEADLINE seconds."""
    found: list = []

    def run():
        try:
            found.append(call())
        except Exception as exc:  # noqa: BLE001 - a raise is an answer too; the test looks at it
            found.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(DEADLINE)
    answered = list(found)
    if not answered:  # let the stuck reader go, so the test process is not left with it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(DEADLINE)
    return answered


def test_open_regular_reads_a_file_and_refuses_the_rest_unread_naming_what_it_is(tmp_path):
    photo = tmp_path / "a.jpg"
    shutil.copy(SAMPLES / "coffee.jpg", photo)
    with open_regular(photo) as file:
        assert file.read() == photo.read_bytes() and os.get_blocking(file.fileno())
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "folder").mkdir()
    os.symlink(photo, tmp_path / "link")
    for name, kind in (("pipe", "a FIFO"), ("folder", "a folder"), ("link", "a symbolic link")):
        found = answer_in_time(lambda name=name: open_regular(tmp_path / name), tmp_path / "pipe")
        assert found and isinstance(found[0], NotRegularFile), (name, found)
        assert found[0].strerror.startswith(f"is {kind}") and found[0].filename == str(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "gone.jpg")
    os.mkfifo(tmp_path / "report.html")
    assert answer_in_time(lambda: written_by_us(tmp_path / "report.html"), tmp_path / "report.html") == [False]


class NamesSayAPhoto:
    """settle's ``os`` as it was a moment before the swap: every check by name (lstat, os.path.isfile/islink)
    says "a regular photo"; what the open file says (fstat) is the truth. The gap made deterministic."""

    def __init__(self, photo_stat: os.stat_result) -> None:
        self._stat = photo_stat
        self.path = types.SimpleNamespace(isfile=lambda p: True, islink=lambda p: False, exists=lambda p: True)

    def __getattr__(self, name):
        return getattr(os, name)

    def lstat(self, path, **_):
        return self._stat

    def stat(self, path, **_):
        return self._stat


def test_settle_decode_check_answers_at_once_for_a_fifo_swapped_in_after_the_name_checks(tmp_path, monkeypatch):
    """Finding 5: DecodeCheck.ready runs on the main loop; it checked by name, then open()ed and decoded by name."""
    path = tmp_path / "a.jpg"
    shutil.copy(SAMPLES / "coffee.jpg", path)
    photo_stat = os.lstat(path)
    check = settle.DecodeCheck()
    assert check.ready(path, 10**8, 0.1) is True  # a whole photo is claimed
    path.unlink()
    os.mkfifo(path)
    monkeypatch.setattr(settle, "os", NamesSayAPhoto(photo_stat))
    found = answer_in_time(lambda: check.ready(path, 10**8, 0.1), path)
    assert found, f"DecodeCheck.ready (the main loop) still waits on the FIFO after {DEADLINE} s"
    assert found == [True]  # claimed unread: the worker fails it as not_a_regular_file
    assert stat.S_ISFIFO(os.lstat(path).st_mode)


def test_settle_decode_check_still_waits_for_a_truncated_photo_and_forgets_a_gone_one(tmp_path):
    """What the decode check is for, unchanged: a photo cut short waits (its writer may be at it still) until it
    has stayed the same for the longer wait; a link is claimed unread; a vanished file is gone (None)."""
    path = tmp_path / "a.jpg"
    path.write_bytes((SAMPLES / "coffee.jpg").read_bytes()[:2000])
    check = settle.DecodeCheck()
    assert check.ready(path, 10**8, 0.0) is False
    check.first_failure[path] = (check.first_failure[path][0], time.monotonic() - settle.RECHECK_MIN)
    assert check.ready(path, 10**8, 0.0) is True  # unchanged and still broken: claimed, to fail with its reason
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "big.jpg")
    assert settle.DecodeCheck().ready(tmp_path / "big.jpg", 10, 0.0) is False  # over max_pixels: waits too
    os.symlink(SAMPLES / "coffee.jpg", tmp_path / "l.jpg")
    assert check.ready(tmp_path / "l.jpg", 10**8, 0.0) is True
    path.unlink()
    assert check.ready(path, 10**8, 0.0) is None and path not in check.first_failure


def test_a_fifo_sidecar_fails_the_photo_as_bad_sidecar_naming_it_and_loses_nothing(tmp_path):
    """Finding 6: the watcher pairs a regular sidecar, but the claim's rename moves whatever is there by then; the
    sidecar read (the worker's pre-checks) waited on a FIFO until the stall watchdog killed the service. Now the
    try ends at once: the photo and the FIFO go to failed/ under one name, with an error naming the sidecar."""
    config = load_config(make_config(tmp_path))
    check_folders(config)
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    shutil.copy(SAMPLES / "coffee.jpg", config.inbox / "a.jpg")
    os.mkfifo(config.inbox / "a.yaml")
    job = spool.claim(config.inbox / "a.jpg", "2026-11-28T00:00:00Z", config.inbox / "a.yaml")
    assert job.sidecar == "a.yaml"
    life = JobLife(spool, lambda: config, threading.Event())
    try:
        found = answer_in_time(lambda: life.open(job), job.dir / "a.yaml")
    finally:
        life.prefetch.close()
    assert found, f"the sidecar read (the worker) still waits on the FIFO after {DEADLINE} s"
    assert found == [None] and [o.kind for o in life.drain()] == ["failed"]
    error = json.loads((config.failed / "a.jpg.error.json").read_text())
    assert error["code"] == "bad_sidecar" and error["sidecar"] == "a.yaml", error
    assert "a.yaml is a FIFO" in error["message"] and "a.yaml" in error["fix"], error
    assert (config.failed / "a.jpg").read_bytes() == (SAMPLES / "coffee.jpg").read_bytes()
    assert stat.S_ISFIFO(os.lstat(config.failed / "a.yaml").st_mode) and not any(config.work.iterdir())


def test_a_config_that_is_a_fifo_is_refused_at_start_not_waited_on(tmp_path):
    path = make_config(tmp_path)
    path.unlink()
    os.mkfifo(path)
    found = answer_in_time(lambda: load_config(path), path)
    assert found and isinstance(found[0], ConfigError), found
    assert "is a FIFO" in found[0].problems[0], found[0].problems


def test_a_fifo_or_link_swapped_in_before_the_readable_check_fails_as_not_a_regular_file(tmp_path, monkeypatch):
    """rev6d nit: a FIFO or link put in place between pre_check_regular_file (lstat) and pre_check_readable (the
    open) raised NotRegularFile out of the pre-checks, retried as a transient error; it fails at once now, with the
    reason and fix pre_check_regular_file gives the same file."""
    config = load_config(make_config(tmp_path))
    check_folders(config)
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    os.mkfifo(config.inbox / "a.jpg")
    os.symlink(SAMPLES / "coffee.jpg", config.inbox / "b.jpg")
    monkeypatch.setattr(jobs, "pre_check_regular_file", lambda job: None)  # it looked before the swap
    life = JobLife(spool, lambda: config, threading.Event())
    try:
        for name in ("a.jpg", "b.jpg"):
            job = spool.claim(config.inbox / name, "2026-11-28T00:00:00Z")
            with pytest.raises(JobFailure) as said:
                real_pre_check_regular_file(job)
            assert answer_in_time(lambda job=job: life.open(job), job.input) == [None]
            assert [o.kind for o in life.drain()] == ["failed"], name
            error = json.loads((config.failed / f"{name}.error.json").read_text())
            assert (error["code"], error["message"], error["fix"]) == (
                "not_a_regular_file", said.value.problem, said.value.fix), error
    finally:
        life.prefetch.close()
    assert "symbolic link" in error["message"] and os.path.islink(config.failed / "b.jpg")
