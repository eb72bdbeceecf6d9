"""rev10c: the pause's two kinds kept apart. A guarded folder that fails the resume's probe for a folder fault (a file or
a dangling link in its place, a read-only remount) is that fault, with its fix and notice, not a full disk; a real
full disk still reads as one, and one held beside a folder fault is logged and named by status too. The daemon's own guard and book (built, not started), so its wiring is what is tested."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon_helpers import make_config, mounted_tmpfs
from pipeline.daemon import diskguard
from pipeline.daemon.daemon import Daemon
from pipeline.daemon.folder_faults import write_fault


def _daemon(tmp_path: Path):
    """A daemon on tmp_path, not started, its guard on a clock the test moves and its notices kept in a list."""
    daemon = Daemon(make_config(tmp_path))
    now, told = [0.0], []
    daemon.disk.clock = lambda: now[0]
    daemon.book.listener = lambda kind, data: told.append((kind, data))
    return daemon, now, told


def _look(daemon, now: list[float]) -> bool:
    """The main loop's next look, CHECK_SECONDS later."""
    now[0] += diskguard.CHECK_SECONDS + 1
    return daemon.disk.paused()


@pytest.mark.parametrize("in_its_place", ["file", "dangling link"])
def test_an_outbox_fault_met_while_a_full_disk_waits_is_that_fault_not_a_full_disk(tmp_path, in_its_place):
    """The pause begins on a full work/; meanwhile the outbox becomes a file (a sync tool) or a link to a share not
    mounted. Status said `paused: disk full (74734 MB free in .../outbox)`, no fix, and no notice."""
    daemon, now, told = _daemon(tmp_path)
    outbox = daemon.config.outbox
    daemon.book.pause(daemon.config.work)  # ENOSPC met in work/
    os.rmdir(outbox)
    if in_its_place == "file":
        outbox.write_text("a sync tool made the outbox a file")
        fix = "is a file: the outbox must be a folder: move the file away"
    else:
        outbox.symlink_to(tmp_path / "nas" / "gallery")
        fix = f"is a link to {tmp_path / 'nas' / 'gallery'}, which is not there (a share not mounted?)"
    assert _look(daemon, now), "the outbox cannot be written: still paused"
    said = daemon.reporter.health()
    assert "disk full" not in said and f"{outbox} {fix}" in said, said
    assert [kind for kind, _ in told] == ["paused"] and fix in told[0][1]["fix"], told
    assert _look(daemon, now) and len(told) == 1, "told once a pause, not at each look"
    outbox.unlink()  # the person fixes it
    assert not _look(daemon, now) and outbox.is_dir(), daemon.reporter.health()


@pytest.fixture
def outbox_mount(tmp_path):
    """The outbox on its own 16 MB tmpfs: remounted read-only, or filled."""
    yield from mounted_tmpfs(tmp_path / "outbox", "the read-only and full outbox are not tested here")


def test_an_outbox_remounted_read_only_while_a_full_disk_waits_is_told_as_read_only(tmp_path, outbox_mount):
    daemon, now, told = _daemon(tmp_path)
    daemon.book.pause(daemon.config.work)  # ENOSPC met in work/
    subprocess.run(["mount", "-o", "remount,ro", str(outbox_mount)], check=True)
    assert _look(daemon, now)
    said = daemon.reporter.health()
    assert said == (f"paused: {outbox_mount} is on a read-only mount: mount it read-write; claiming resumes by itself "
                    "once it can be written"), said
    assert [kind for kind, _ in told] == ["paused"] and told[0][1]["reason"] == "EROFS", told
    subprocess.run(["mount", "-o", "remount,rw", str(outbox_mount)], check=True)
    assert not _look(daemon, now), daemon.reporter.health()


def test_an_outbox_out_of_space_is_still_a_full_disk(tmp_path, outbox_mount):
    """ENOSPC (or less than the floor free) stays a full disk: no fix, no notice, its free MB named."""
    daemon, now, told = _daemon(tmp_path)
    daemon.book.pause(daemon.config.work)
    filler = _fill(outbox_mount)
    assert _look(daemon, now)
    said = daemon.reporter.health()
    assert said == f"paused: disk full (0 MB free in {outbox_mount})", said
    assert told == []
    filler.unlink()
    assert not _look(daemon, now), daemon.reporter.health()


@pytest.fixture
def site_mount(tmp_path):
    """The whole site (inbox, spool, outbox: one filesystem, as check_folders asks) on its own 16 MB tmpfs."""
    yield from mounted_tmpfs(tmp_path / "site", "a full disk beside a folder fault is not tested here")


def _fill(folder: Path) -> Path:
    """Write into ``folder`` until its filesystem refuses (ENOSPC); the filler, to free it again."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        with pytest.raises(OSError):
            while True:
                out.write(b"\0" * (1 << 20))
    return filler


def test_a_full_disk_met_while_a_folder_fault_is_held_is_logged_and_named_by_status(site_mount):
    """Both pauses are held (af553e1), but status named the folder faults only, saying nothing of the full disk until
    every fault was fixed, and the full disk met while a fault was held was not logged either (not news)."""
    daemon, now, told = _daemon(site_mount)
    outbox, work = daemon.config.outbox, daemon.config.work
    os.rmdir(outbox)
    outbox.write_text("a sync tool made the outbox a file")
    fault = write_fault(outbox, daemon.config)
    daemon.book.pause(fault.folder, fault)
    filler = _fill(work)
    with capture_logs() as logs:
        daemon.book.pause(work)  # ENOSPC met in work/ while the outbox's fault is held
        assert _look(daemon, now)
    assert [entry["event"] for entry in logs] == ["disk full: claiming paused until space returns"], logs
    fixed = f"paused: {fault.fix}; disk full (0 MB free in {work})"
    assert daemon.reporter.health() == fixed, daemon.reporter.health()
    assert [kind for kind, _ in told] == ["paused"], "the full disk is logged, never a `paused` notice"
    filler.unlink()  # space returns; the outbox is still a file
    assert _look(daemon, now) and daemon.reporter.health() == f"paused: {fault.fix}", daemon.reporter.health()
    outbox.unlink()
    assert not _look(daemon, now), daemon.reporter.health()


def test_an_io_error_in_a_folder_with_space_is_a_fault_naming_it_not_a_full_disk(tmp_path, monkeypatch):
    """rev10e: the pause begins on a full work/; space returns, but the outbox's disk answers EIO (failing, an NFS
    server gone). Status read `paused: disk full (68561 MB free in .../outbox)`, no fix and no notice."""
    daemon, now, told = _daemon(tmp_path)
    outbox = daemon.config.outbox
    daemon.book.pause(daemon.config.work)  # ENOSPC met in work/
    real = diskguard.probe_write
    monkeypatch.setattr(diskguard, "probe_write", lambda folder, data, kind: OSError(
        errno.EIO, os.strerror(errno.EIO), str(folder / "p")) if folder == outbox else real(folder, data, kind))
    assert _look(daemon, now), "the outbox cannot be written: still paused"
    fix = f"{outbox}: cannot be written (Input/output error): check the disk or the share"
    said = daemon.reporter.health()
    assert said == f"paused: {fix}; claiming resumes by itself once it can be written", said
    assert [(kind, data["reason"]) for kind, data in told] == [("paused", "cannot_write")], told
    assert _look(daemon, now) and len(told) == 1, "told once a pause, not at each look"
    monkeypatch.setattr(diskguard, "probe_write", real)  # the disk answers again
    assert not _look(daemon, now), daemon.reporter.health()


def test_two_full_folders_hold_one_full_disk_named_by_the_latest(tmp_path):
    """rev10f #4: the disk-full pause was keyed by its folder, so ENOSPC met in work/ and then in the outbox held two,
    and status and the look's recheck saw only the first (work/, as when it was met). One full disk is held now,
    its folder the latest met."""
    daemon, now, told = _daemon(tmp_path)
    daemon.book.pause(daemon.config.work)
    daemon.book.pause(daemon.config.outbox)
    assert [p.folder for p in daemon.disk.pauses.values()] == [daemon.config.outbox]
    assert daemon.disk.full().folder == daemon.config.outbox and str(daemon.config.outbox) in daemon.reporter.health()
