"""rev8b findings 2 and 4: an outbox that cannot be written (remounted read-only, replaced by a file) is the machine's
fault, never the photo's: the photo waits in work/ uncharged, claiming pauses, status and one notice name the folder
and the real fix, and the photo is styled by itself once the folder is fixed. Real daemons, a real tmpfs remounted
read-only (root only: skipped with the reason where mount is not allowed)."""
from __future__ import annotations

import errno
import shutil
import subprocess
import types
from pathlib import Path

import pytest

from daemon_helpers import (SAMPLES, errors, make_config, mounted_tmpfs, outputs, start, status_json, stop, wait_for,
                            wait_ready)
from pipeline.daemon import diskguard
from pipeline.daemon.diskguard import DiskGuard
from pipeline.daemon.folder_faults import folder_fault
from pipeline.daemon.jobs import Outcome
from pipeline.daemon.state import JobBook


@pytest.fixture
def outbox_mount(tmp_path):
    """The outbox on its own 16 MB tmpfs, so it can be remounted read-only as ext4's errors=remount-ro does."""
    yield from mounted_tmpfs(tmp_path / "outbox", "the read-only outbox is not tested here; the file-in-place "
                             "test covers the same pause")


def _notices(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _start_with_notices(tmp_path: Path):
    notices = tmp_path / "notices.txt"
    config = make_config(tmp_path, settle_seconds=0.3, max_attempts=2,
                         notify=f"sh -c 'echo \"$STYLE_PIPELINE_EVENT $STYLE_PIPELINE_MESSAGE\" >> {notices}'")
    proc = start(config)
    wait_ready(proc)
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "first.jpg")
    wait_for(lambda: len(outputs(tmp_path)) == 1, 60, proc)
    return proc, notices


def _paused_on(tmp_path: Path, proc, notices: Path, wording: str) -> str:
    """Two photos dropped after the fault: both wait (none failed), status and ONE notice say the folder's fix."""
    for name in ("rocket", "astronaut"):
        shutil.copy(SAMPLES / f"{name}.jpg", tmp_path / "inbox" / f"{name}.jpg")
    state = wait_for(lambda: (s := status_json(tmp_path).get("state", "")).startswith("paused:") and s, 60, proc)
    wait_for(lambda: any(line.startswith("paused") for line in _notices(notices)), 30, proc)
    assert wording in state and ".tmp" not in state, state
    assert errors(tmp_path) == {}, f"sent to failed/ as the photos' fault: {sorted(errors(tmp_path))}"
    told = [line for line in _notices(notices) if line.startswith("paused")]
    assert len(told) == 1 and wording in told[0], _notices(notices)
    assert not any(line.startswith("failed") for line in _notices(notices))
    return state


def _resumed(tmp_path: Path, proc, notices: Path, written: int = 3) -> None:
    """The folder fixed, nobody touches the daemon: every photo styled once, none failed, the pause told once."""
    wait_for(lambda: len(outputs(tmp_path)) == written, 120, proc)
    wait_for(lambda: status_json(tmp_path).get("state") == "running", 10, proc)
    assert errors(tmp_path) == {}
    assert sorted(p.name for p in (tmp_path / "spool" / "done").iterdir()) == ["astronaut.jpg", "first.jpg",
                                                                               "rocket.jpg"]
    assert len([line for line in _notices(notices) if line.startswith("paused")]) == 1


def test_a_read_only_outbox_pauses_claiming_and_names_the_mount(tmp_path, outbox_mount):
    proc, notices = _start_with_notices(tmp_path)
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(outbox_mount)], check=True)
        state = _paused_on(tmp_path, proc, notices, "is on a read-only mount: mount it read-write")
        assert str(outbox_mount / "starry") in state, state
        subprocess.run(["mount", "-o", "remount,rw", str(outbox_mount)], check=True)
        _resumed(tmp_path, proc, notices)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(outbox_mount)], check=False)
        stop(proc)


def test_an_outbox_replaced_by_a_file_pauses_claiming_and_says_move_it_away(tmp_path):
    outbox = tmp_path / "outbox"
    proc, notices = _start_with_notices(tmp_path)
    try:
        shutil.rmtree(outbox)
        outbox.write_text("oops\n")  # a script's `> outbox`, a sync tool
        state = _paused_on(tmp_path, proc, notices, "the outbox must be a folder: move the file away")
        assert f"{outbox} is a file" in state, state
        outbox.rename(tmp_path / "outbox.moved")  # the fix: the daemon makes the folder again
        _resumed(tmp_path, proc, notices, written=2)  # first.jpg's output went away with the old outbox
    finally:
        stop(proc)


@pytest.mark.parametrize("nested", [False, True], ids=["recipe_folder", "subfolder"])
def test_a_file_in_place_of_a_recipes_outbox_folder_pauses_never_fails_the_photo(tmp_path, engine, nested):
    """rev8d finding 1: JobLife.publish made outbox/starry itself, so a file there raised FileExistsError (no folder
    fault): every starry photo was styled, retried and failed as too_many_attempts with no fix. In-process daemon."""
    import threading

    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path, max_attempts=2, retry_backoff_seconds=0.1)
    (tmp_path / "outbox" / "starry").mkdir(parents=True)
    in_the_way = tmp_path / "outbox" / "starry" / ("vacation" if nested else "")
    if not nested:
        in_the_way.rmdir()
    in_the_way.write_text("a sync tool's file where the folder must be\n")
    drop = tmp_path / "inbox" / ("vacation" if nested else "") / "rocket.jpg"
    drop.parent.mkdir(exist_ok=True)
    shutil.copy(SAMPLES / "rocket.jpg", drop)
    daemon = Daemon(config, engine=engine)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        state = wait_for(lambda: ((s := status_json(tmp_path).get("state", "")).startswith("paused:") and s)
                         or errors(tmp_path), 60)
        assert errors(tmp_path) == {}, f"the photo failed as its own fault: {errors(tmp_path)}"
        assert f"{in_the_way} is a file: it must be a folder: move the file away" in state, state
        in_the_way.unlink()  # the fix: nobody touches the daemon
        wait_for(lambda: outputs(tmp_path), 60)
        assert [p.relative_to(tmp_path / "outbox") for p in outputs(tmp_path)] == [in_the_way.relative_to(
            tmp_path / "outbox") / "rocket.png"]
        assert errors(tmp_path) == {}
    finally:
        daemon.stop.set()
        thread.join(60)


def test_a_folder_fault_names_the_folder_never_the_daemons_temp_file(tmp_path):
    """EACCES on write_atomic's temp file in the outbox names its folder; the photo's own errors are not a folder's."""
    outbox, spool = tmp_path / "outbox", tmp_path / "spool"
    temp = outbox / "starry" / ".2ec3c1fab0.0a7c.12529.4befb535.tmp"
    fault = folder_fault(PermissionError(errno.EACCES, "Permission denied", str(temp)), outbox, [spool])
    assert fault.folder == outbox / "starry" and f"chmod g+w {outbox / 'starry'}`" in fault.fix
    assert ".tmp" not in fault.fix
    photo = tmp_path / "elsewhere" / "holiday.jpg"
    assert folder_fault(PermissionError(errno.EACCES, "Permission denied", str(photo)), outbox, [spool]) is None
    ro = folder_fault(OSError(errno.EROFS, "Read-only file system", str(temp)), outbox, [spool])
    assert ro.code == "EROFS" and ro.fix.startswith(f"{outbox / 'starry'} is on a read-only mount")


def test_one_folder_fault_is_told_at_most_once_an_hour(tmp_path):
    """A fault the probe write cannot see (it passes, the job's own write fails again) pauses at each try: the notice
    is not sent each time."""
    now = [0.0]
    guard = DiskGuard(lambda: [tmp_path], clock=lambda: now[0])
    fault = folder_fault(PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x" / "y")), tmp_path, [])
    assert guard.pause(tmp_path / "x", fault) is True
    now[0] += diskguard.CHECK_SECONDS + 1
    assert not guard.paused(), "the probe write passes: claiming resumes"
    assert guard.pause(tmp_path / "x", fault) is False and guard.state["fix"] == fault.fix
    now[0] += diskguard.TELL_AGAIN
    guard.state = None
    assert guard.pause(tmp_path / "x", fault) is True


def test_a_second_real_outage_after_a_resume_is_told_again(tmp_path):
    """rev8d finding 2: the hour's silence is for a fault the probe cannot see. One the probe DID see (outbox/starry a
    file, fixed, claiming resumed) that comes back 20 minutes later is a new pause: told, not silent all night."""
    now = [1000.0]
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    guard = DiskGuard(lambda: [outbox], clock=lambda: now[0])
    told = []
    book = JobBook(guard, lambda kind, data: told.append((kind, data)), clocks=(lambda: now[0], lambda: now[0]))
    starry = outbox / "starry"

    def outage(n: int) -> str:
        if starry.is_dir():  # remade by the resume's check: the sync tool replaces it again
            starry.rmdir()
        starry.write_text("a sync tool wrote a file where the recipe's folder must be")
        fault = folder_fault(NotADirectoryError(errno.ENOTDIR, "Not a directory", str(starry / "x.png")), outbox, [])
        book.take([Outcome(types.SimpleNamespace(id=f"job{n}", not_before=0.0), "paused", retry_at=0.0,
                           disk_full=str(fault.folder), fault=fault)])
        now[0] += diskguard.CHECK_SECONDS + 1
        assert guard.paused(), "the probe sees the file: paused"
        return fault.fix

    fix = outage(1)
    assert [k for k, _ in told] == ["paused"] and told[0][1]["fix"] == fix and "move the file away" in fix
    starry.unlink()  # the person fixes it
    now[0] += diskguard.CHECK_SECONDS + 1
    assert not guard.paused(), "fixed: claiming resumed"
    now[0] += 20 * 60  # the sync tool does it again
    outage(2)
    assert [k for k, _ in told] == ["paused", "paused"], "a second real outage after a resume must be told"

