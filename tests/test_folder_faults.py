"""rev8b findings 2 and 4: an outbox that cannot be written (remounted read-only, replaced by a file) is the machine's
fault, never the photo's: the photo waits in work/ uncharged, claiming pauses, status and one notice name the folder
and the real fix, and the photo is styled by itself once the folder is fixed. Real daemons, a real tmpfs remounted
read-only (root only: skipped with the reason where mount is not allowed)."""
from __future__ import annotations

import errno
import os
import shutil
import time
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
    try:
        wait_ready(proc)
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "first.jpg")
        wait_for(lambda: len(outputs(tmp_path)) == 1, 60, proc)
    except BaseException:  # a start that timed out left its daemon running, for good, beside the next tests
        stop(proc)
        raise
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
    wait_for(lambda: status_json(tmp_path).get("state") == "running", 30, proc)
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
    assert guard.pause(tmp_path / "x", fault) is False and guard.faults() == [fault]
    now[0] += diskguard.TELL_AGAIN
    guard.pauses = {}
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



@pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("setpriv")), reason="needs root and setpriv")
def test_a_work_folder_without_write_access_pauses_claiming_with_one_notice(tmp_path):
    """rev9b finding 2: spool/work unwritable for the service user (a chown/chmod -R slip) failed each claim's mkdir,
    and each photo got its own "unclaimable" notice (a night's 200 photos, 200 notices), claiming never paused. Now
    it is a folder fault: ONE `paused` notice naming work/, no photo listed, and the photos are taken once it is
    fixed."""
    from test_daemon_faults import NO_ROOT_POWERS

    notices = tmp_path / "notices.txt"
    config = make_config(tmp_path, rescan_seconds=1,
                         notify=f"sh -c 'echo \"$STYLE_PIPELINE_EVENT $STYLE_PIPELINE_MESSAGE\" >> {notices}'")
    proc = start(config, prefix=NO_ROOT_POWERS)
    work = tmp_path / "spool" / "work"
    try:
        wait_ready(proc)
        work.chmod(0o555)
        for name in ("rocket", "astronaut", "coffee"):
            shutil.copy(SAMPLES / f"{name}.jpg", tmp_path / "inbox" / f"{name}.jpg")
        state = wait_for(lambda: (s := status_json(tmp_path).get("state", "")).startswith("paused:") and s, 30, proc)
        assert str(work) in state and "needs write access" in state, state
        wait_for(lambda: _notices(notices), 30, proc)  # the hook runs after the pause is shown: wait for it
        time.sleep(4)  # four rescans: each used to try (and tell) every photo again
        assert _notices(notices) and all(line.startswith("paused") for line in _notices(notices)), _notices(notices)
        assert len(_notices(notices)) == 1, _notices(notices)
        assert not status_json(tmp_path).get("unclaimable"), status_json(tmp_path).get("unclaimable")
        work.chmod(0o755)
        wait_for(lambda: len(outputs(tmp_path)) == 3, 90, proc)
        assert errors(tmp_path) == {}
    finally:
        work.chmod(0o755)
        stop(proc)


def test_a_claims_rename_refused_is_the_photos_folder_not_work(tmp_path):
    """The claim's mkdir or record refused under work/ is work/'s fault; its rename's EACCES (filename2 set: the
    job folder was just made in work/) is the inbox folder's, so that photo alone stays unclaimable."""
    from pipeline.daemon.folder_faults import claim_fault

    config = types.SimpleNamespace(outbox=tmp_path / "outbox", spool=tmp_path / "spool", work=tmp_path / "spool/work",
                                   done=tmp_path / "spool/done", failed=tmp_path / "spool/failed")
    made = claim_fault(PermissionError(errno.EACCES, "Permission denied", str(config.work / "2ec3c1fab0")), config)
    assert made.folder == config.work and made.code == "permission_denied"
    moved = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "inbox/starry/a.jpg"), None,
                            str(config.work / "2ec3c1fab0" / "a.jpg"))
    assert claim_fault(moved, config) is None


def _restart_while_paused(tmp_path: Path, fault, unfault, wording: str) -> None:
    """rev9b finding 1: paused on a folder fault, then restarted (a watchdog kill, an upgrade, a reboot with the NAS
    still read-only): the new daemon starts paused, says the fix in status and one `paused` notice, and takes the
    waiting photo once the folder is fixed. Before, `run` exited 2 ("not writable by this user; fix its
    permissions", "cannot create (File exists)") and systemd restarted it every 10 s."""
    proc, notices = _start_with_notices(tmp_path)
    config = tmp_path / "config.yaml"
    try:
        fault()
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
        wait_for(lambda: status_json(tmp_path).get("state", "").startswith("paused:"), 60, proc)
    finally:
        stop(proc)
    notices.unlink()
    again = start(config)  # the fault still there
    try:
        paused = lambda s: s.get("pid") == again.pid and s.get("state", "").startswith("paused:") and s["state"]  # noqa
        state = wait_for(lambda: again.poll() is not None or paused(status_json(tmp_path)), 90)
        tail = Path(again.log_path).read_text(errors="replace")[-800:]
        assert again.poll() is None, f"the restarted daemon exited {again.returncode} instead of pausing:\n{tail}"
        assert wording in state, state
        told = wait_for(lambda: [line for line in _notices(notices) if line.startswith("paused")], 30, again)
        assert len(told) == 1 and wording in told[0], _notices(notices)
        unfault()
        wait_for(lambda: (tmp_path / "spool" / "done" / "rocket.jpg").exists(), 60, again)
        assert errors(tmp_path) == {}
    finally:
        stop(again)


def test_a_restart_with_a_read_only_outbox_starts_paused(tmp_path, outbox_mount):
    remount = lambda how: subprocess.run(["mount", "-o", f"remount,{how}", str(outbox_mount)], check=True)  # noqa
    try:
        _restart_while_paused(tmp_path, lambda: remount("ro"), lambda: remount("rw"), "mount it read-write")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(outbox_mount)], check=False)


def test_a_restart_with_a_file_in_place_of_the_outbox_starts_paused(tmp_path):
    outbox = tmp_path / "outbox"

    def fault():
        shutil.rmtree(outbox)
        outbox.write_text("oops\n")

    _restart_while_paused(tmp_path, fault, lambda: outbox.rename(tmp_path / "outbox.moved"), "move the file away")


@pytest.mark.parametrize("where", ["inbox", "spool/work", "outbox", "spool/done", "spool/failed"])
def test_only_an_inbox_or_work_fault_refuses_to_start(tmp_path, where):
    """Without the inbox or work/ nothing can be claimed: a refusal (exit 2) naming the folder. The outbox, done/
    and failed/ are where finished jobs go: a pause the daemon starts in, with the fix."""
    from pipeline.daemon.daemon import Daemon
    from pipeline.errors import StartupError

    config = make_config(tmp_path)
    folder = tmp_path / where
    if folder.is_dir():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("a file where the folder must be\n")
    if where in ("inbox", "spool/work"):
        with pytest.raises(StartupError, match=str(folder)):
            Daemon(config)
        return
    daemon = Daemon(config)
    assert list(daemon.waits) == [folder]
    assert f"{folder} is a file" in daemon.waits[folder].fix and "move the file away" in daemon.waits[folder].fix


@pytest.mark.parametrize("where", ["spool/done", "spool/failed"])
def test_a_done_or_failed_link_whose_target_is_gone_starts_paused(tmp_path, where):
    """rev10a: start_faults found spool/done a link to a folder not there and passed it on to be skipped, but
    check_folders' filesystem check stat()ed it anyway: exit 2, "cannot make this folder; move away what is there"
    (a wrong fix: the link is the person's), repeated by systemd every 10 s."""
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    folder = tmp_path / where
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.symlink_to(tmp_path / "kept" / folder.name)  # spool/done -> /srv/photos/kept/done, removed
    daemon = Daemon(config)
    assert list(daemon.waits) == [folder]
    assert f"{folder} is a link to" in daemon.waits[folder].fix and "mount it or make that folder" in (
        daemon.waits[folder].fix)


@pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("setpriv")), reason="needs root and setpriv")
def test_a_removed_done_folder_in_a_spool_the_service_cannot_write_starts_paused_and_resumes_once_made(tmp_path):
    """rev10a, the EACCES road: done/ removed (`rm -rf spool/done` to free space) in a spool folder the service user
    cannot write (work/ and failed/ its own). The start exited 2 ("move away what is there"); now it starts paused
    naming the spool's permission, and resumes once done/ is made: probed in done/, not in the spool folder, which
    still refuses the service."""
    import json

    from test_daemon_faults import NO_ROOT_POWERS

    config = make_config(tmp_path)
    spool = tmp_path / "spool"
    shutil.rmtree(spool / "done", ignore_errors=True)
    for name in ("work", "failed"):
        (spool / name).mkdir(parents=True, exist_ok=True)
    os.chown(spool, 65534, 65534)
    spool.chmod(0o755)
    spare = tmp_path / ".style-pipeline" / "config.yaml.status.json"  # the spool folder refuses status.json
    state = lambda: json.loads(spare.read_text())["state"] if spare.exists() else ""  # noqa: E731
    proc = start(config, prefix=NO_ROOT_POWERS)
    try:
        paused = wait_for(lambda: state().startswith("paused:") and state(), 60, proc)
        assert f"needs write access to {spool}:" in paused, paused
        (spool / "done").mkdir()  # root's: the service (root without its file powers) can write it
        wait_for(lambda: state() == "running", 30, proc)
    finally:
        stop(proc)
        os.chown(spool, 0, 0)


def _once(config: Path) -> subprocess.CompletedProcess:
    import os
    import sys

    from daemon_helpers import ROOT

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    try:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(config)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or b"")[-600:]
        raise AssertionError(f"`once` still running after 90 s (paused for good):\n{tail}") from None


def test_once_stopped_at_start_counts_the_photos_in_the_inbox_and_promises_nothing_it_cannot(tmp_path):
    """rev9f #3: with a file where the outbox must be, cron's mail said "0 photos wait in work/" while the photo
    waited in the inbox, and "claiming resumes by itself", which a `once` that has exited never does."""
    config = make_config(tmp_path)
    (tmp_path / "outbox").write_text("a sync tool's file where the outbox must be\n")
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    done = _once(config)
    line = [t for t in done.stderr.splitlines() if t.startswith("style-pipeline once: stopped")]
    assert done.returncode == 3 and line, done.stderr[-800:]
    assert (tmp_path / "inbox" / "rocket.jpg").exists()
    assert "1 photo waits (1 in the inbox, 0 in work/)" in line[0] and "resumes by itself" not in line[0], line[0]
    assert "the next `once` takes them up" in line[0], line[0]


@pytest.mark.parametrize("photo", [False, True], ids=["nothing-waiting", "a-photo-waiting"])
def test_once_meets_a_file_where_a_recipes_outbox_folder_must_be_at_start(tmp_path, photo):
    """rev10b #6: README says `once` exits 3 for this fault, with nothing waiting too; it exited 0 without a word, and
    with a photo waiting it was styled in full before the output's write found the fault (`run` too)."""
    config = make_config(tmp_path)
    starry = tmp_path / "outbox" / "starry"
    starry.parent.mkdir()
    starry.write_text("a sync tool's file where the recipe's folder must be\n")
    if photo:
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    done = _once(config)
    assert done.returncode == 3, (done.returncode, done.stderr[-600:])
    assert f"{starry} is a file" in done.stderr and "move the file away" in done.stderr, done.stderr[-600:]
    assert f"{int(photo)} photo" in done.stderr and f"({int(photo)} in the inbox, 0 in work/)" in done.stderr
    assert not list((tmp_path / "spool" / "work").iterdir()) and errors(tmp_path) == {}
    assert (tmp_path / "inbox" / "rocket.jpg").exists() == photo and starry.read_text().startswith("a sync tool")


def test_once_paused_on_a_folder_fault_exits_with_the_fix_and_keeps_the_photo(tmp_path):
    """rev9b finding 5: README's `once` "processes what is waiting and exits" (cron). A file where outbox/starry must
    be paused claiming and `once` then ran until killed, cron starting another beside it each time. Now it releases
    the waiting job to work/ (unlocked: nothing lost), exits 3 with the pause's fix on stderr, and the next `once`
    after the fix styles the photo once. A file at outbox/starry itself is met at start since rev10b #6 (the test
    above): an album's folder below it, made only by the first output, is still met at the photo's landing."""
    config = make_config(tmp_path)
    starry = tmp_path / "outbox" / "starry" / "album"
    starry.parent.mkdir(parents=True)
    starry.write_text("a sync tool's file where the album's folder must be\n")
    (tmp_path / "inbox" / "starry" / "album").mkdir(parents=True)
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "starry" / "album" / "rocket.jpg")
    done = _once(config)
    assert done.returncode == 3, (done.returncode, done.stderr[-600:])
    assert f"{starry} is a file" in done.stderr and "move the file away" in done.stderr, done.stderr[-600:]
    assert "1 photo waits (0 in the inbox, 1 in work/)" in done.stderr, done.stderr[-600:]
    waiting = list((tmp_path / "spool" / "work").iterdir())
    assert len(waiting) == 1 and (waiting[0] / "rocket.jpg").exists() and errors(tmp_path) == {}
    starry.unlink()  # the fix
    again = _once(config)
    assert again.returncode == 0, again.stderr[-600:]
    assert [p.name for p in outputs(tmp_path)] == ["rocket.png"] and errors(tmp_path) == {}
    assert [p.name for p in (tmp_path / "spool" / "done").iterdir()] == ["rocket.jpg"]
    assert not list((tmp_path / "spool" / "work").iterdir())


def test_a_recipe_folder_linked_to_a_share_not_mounted_says_mount_it(tmp_path):
    """rev9b finding 3: outbox/starry -> a share's folder, the share not mounted tonight. Status and the `paused`
    notice said "outbox/starry is a file: ... move the file away": there is no file, and doing so removed the
    person's link (the outputs then landed locally, not in the gallery). Now they name the link and its target, and
    the photo lands in the share once it is there."""
    notices = tmp_path / "notices.txt"
    config = make_config(tmp_path, notify=f"sh -c 'echo \"$STYLE_PIPELINE_EVENT $STYLE_PIPELINE_MESSAGE\" >> {notices}'")
    gallery = tmp_path / "gallery"  # the share's mount point, nothing mounted
    link = tmp_path / "outbox" / "starry"
    link.parent.mkdir()
    link.symlink_to(gallery / "starry")
    proc = start(config)
    try:
        wait_ready(proc)
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
        state = wait_for(lambda: ((s := status_json(tmp_path).get("state", "")).startswith("paused:") and s)
                         or errors(tmp_path), 60, proc)
        assert errors(tmp_path) == {}
        wording = f"{link} is a link to {gallery / 'starry'}, which is not there (a share not mounted?): mount it"
        assert wording in state and "move the file away" not in state, state
        told = wait_for(lambda: [line for line in _notices(notices) if line.startswith("paused")], 30, proc)
        assert len(told) == 1 and wording in told[0] and "move the file away" not in told[0], told
        (gallery / "starry").mkdir(parents=True)  # the share is back
        wait_for(lambda: list((gallery / "starry").glob("rocket*.png")), 60, proc)
        assert link.is_symlink(), "the person's link is kept"
    finally:
        stop(proc)



def test_an_outbox_linked_into_a_share_not_mounted_at_start_pauses_and_makes_nothing_there(tmp_path):
    """rev9f #2: a reboot before the NAS is up, outbox -> /mnt/nas/gallery. The config resolved the link, and the
    start's mkdir(parents=True) made gallery on the local disk under the mount point: no pause, and the night's
    outputs were hidden once the share was mounted over them. Now the start pauses with "mount it or make that
    folder", makes nothing there, and the photo lands in the share once it is there."""
    config = make_config(tmp_path)
    mount_point = tmp_path / "mnt" / "nas"  # an empty folder while the share is not mounted
    mount_point.mkdir(parents=True)
    outbox = tmp_path / "outbox"
    shutil.rmtree(outbox, ignore_errors=True)
    outbox.symlink_to(mount_point / "gallery")
    proc = start(config)
    try:
        wait_ready(proc)
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
        state = wait_for(lambda: ((s := status_json(tmp_path).get("state", "")).startswith("paused:") and s), 60, proc)
        assert f"{outbox} is a link to {mount_point / 'gallery'}, which is not there" in state, state
        assert "mount it or make that folder" in state and list(mount_point.iterdir()) == [], state
        (mount_point / "gallery").mkdir()  # the share is mounted
        wait_for(lambda: list((mount_point / "gallery").glob("**/rocket*.png")), 90, proc)
        assert outbox.is_symlink() and errors(tmp_path) == {}
    finally:
        stop(proc)


@pytest.fixture
def data_mount(tmp_path):
    """The inbox and the spool on one 16 MB tmpfs (the spool must share the inbox's filesystem)."""
    yield from mounted_tmpfs(tmp_path / "data", "the read-only spool is not tested here")


def test_a_read_only_spool_disk_is_shown_paused_not_not_running(tmp_path, data_mount):
    """rev9b finding 4: the disk holding the inbox and the spool remounted read-only. status.json could not be
    written, so `status` said "not running" (healthy false, no folder, no fix) of a live daemon, and the metrics
    warning was logged every metrics_seconds. Now claiming pauses with the mount's fix, the status is written beside
    the config where `status` reads it once the spool's is stale, the metrics warning is logged once, and all
    clears on rw."""
    import json
    import os
    import sys

    import yaml

    from datetime import datetime

    from daemon_helpers import ROOT, RUN_CLI

    config = make_config(tmp_path, metrics_seconds=1)
    settings = yaml.safe_load(config.read_text())
    settings["folders"] = {"inbox": str(data_mount / "inbox"), "outbox": str(tmp_path / "outbox"),
                           "spool": str(data_mount / "spool")}
    config.write_text(yaml.safe_dump(settings))
    proc = start(config)
    spare = tmp_path / ".style-pipeline" / "config.yaml.status.json"
    try:
        wait_ready(proc)
        subprocess.run(["mount", "-o", "remount,ro", str(data_mount)], check=True)
        wait_for(lambda: spare.exists() and "read-only" in json.loads(spare.read_text()).get("state", ""), 30, proc)
        # the spool's status.json stale: `status` run with STALE_SECONDS 5 (30 s in service), not a 31 s sleep
        last = datetime.fromisoformat(status_json(data_mount)["updated_at"]).timestamp()
        wait_for(lambda: time.time() - last > 6, 30, proc)  # six metrics_seconds: each logged the warning again
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        stale_after_5 = "import pipeline.daemon.status as s; s.STALE_SECONDS = 5" + RUN_CLI
        out = subprocess.run([sys.executable, "-c", stale_after_5, "status", "--json", "--config", str(config)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60).stdout
        state = json.loads(out)["state"]
        assert state.startswith("paused:") and f"{data_mount / 'spool' / 'work'} is on a read-only mount" in state, (
            state)
        log = Path(proc.log_path).read_text(errors="replace")
        assert log.count("metrics file not written") == 1, log.count("metrics file not written")
        subprocess.run(["mount", "-o", "remount,rw", str(data_mount)], check=True)
        wait_for(lambda: not spare.exists() and status_json(data_mount).get("state") == "running", 30, proc)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(data_mount)], check=False)
        stop(proc)


@pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("setpriv")), reason="needs root and setpriv")
def test_a_spool_folder_that_refuses_only_status_json_still_styles_the_photos(tmp_path):
    """rev10a: the spool folder itself another user's (made by root, then `chown -R` of its subfolders only), work/,
    done/ and failed/ the service's own. A failed status.json write paused claiming on the spool folder, whose probe
    write never succeeded: no photo styled all night. Now only a work/ that refuses a probe write too pauses; the
    status goes beside the config (`status` reads it), and the photo is styled."""
    import json

    from test_daemon_faults import NO_ROOT_POWERS

    config = make_config(tmp_path)
    spool = tmp_path / "spool"
    for name in ("work", "done", "failed"):
        (spool / name).mkdir(parents=True, exist_ok=True)  # root's: writable by the root daemon without its powers
    os.chown(spool, 65534, 65534)
    spool.chmod(0o755)
    spare = tmp_path / ".style-pipeline" / "config.yaml.status.json"
    proc = start(config, prefix=NO_ROOT_POWERS)
    try:
        wait_ready(proc)
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
        wait_for(lambda: outputs(tmp_path), 90, proc)
        assert json.loads(spare.read_text())["state"] == "running"
        assert (spool / "done" / "rocket.jpg").exists() and errors(tmp_path) == {}
    finally:
        stop(proc)
        os.chown(spool, 0, 0)


def _paused_start_and_a_reload(tmp_path: Path, outbox_fault) -> tuple[object, list[dict]]:
    """A start paused on an outbox fault (``outbox_fault`` makes it), then a saved edit that adds the recipe pastel:
    the daemon's own reload step (_maybe_reload) run as its loop runs it; the reload's log entries."""
    import yaml
    from structlog.testing import capture_logs

    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    outbox_fault(tmp_path / "outbox")
    daemon = Daemon(config)
    assert list(daemon.waits) == [tmp_path / "outbox"], "a paused start"
    data = yaml.safe_load(config.read_text())
    data["recipes"]["pastel"] = {"styles": ["the_scream.jpg"]}
    config.write_text(yaml.safe_dump(data))
    os.utime(config, ns=(time.time_ns(), time.time_ns() + 10**9))
    with capture_logs() as logs:
        daemon._maybe_reload()
    return daemon, logs


def test_a_recipe_added_while_paused_on_the_outbox_gets_its_inbox_folder(tmp_path):
    """closing9 (suspected, confirmed): check_folders returned on the outbox's problem before it made the recipes'
    inbox folders, so a recipe added by a reload during the pause had no inbox/pastel (a person looks for the folder
    to drop into). The edit itself is taken."""
    daemon, _ = _paused_start_and_a_reload(tmp_path, lambda outbox: outbox.write_text("oops\n"))
    assert "pastel" in daemon.config.recipes, "the edit is taken while the pause goes on"
    assert (tmp_path / "inbox" / "pastel").is_dir()


def test_a_reload_while_the_outbox_link_dangles_names_the_link_not_file_exists(tmp_path):
    """closing9: outbox -> a share not mounted. The start's pause says "is a link to ..., which is not there (a share
    not mounted?): mount it or make that folder"; a reload meanwhile logged "outbox: cannot create (File exists)".
    It now says what the start says."""
    mount_point = tmp_path / "mnt" / "nas"
    mount_point.mkdir(parents=True)
    _, logs = _paused_start_and_a_reload(tmp_path, lambda outbox: outbox.symlink_to(mount_point / "gallery"))
    said = [str(problem) for e in logs for problem in e.get("problems", [])]
    wording = f"{tmp_path / 'outbox'} is a link to {mount_point / 'gallery'}, which is not there (a share not mounted?)"
    assert said and all(wording in problem for problem in said), said
    assert not any("File exists" in problem for problem in said), said
    assert list(mount_point.iterdir()) == [], "nothing made under the empty mount point"


def test_two_folders_faulted_at_start_are_both_shown_and_claiming_waits_for_both(tmp_path):
    """closing9: DiskGuard held one fault at a time. With the outbox and spool/failed both files at start, both were
    told, `status` showed only the last, and claiming resumed as soon as that one was fixed (the outbox still a
    file). Now status names every faulted folder with its fix, and claiming waits until each takes a write."""
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    outbox, failed = tmp_path / "outbox", tmp_path / "spool" / "failed"
    failed.parent.mkdir()
    for folder in (outbox, failed):
        folder.write_text("a file where the folder must be\n")
    daemon = Daemon(config)
    told, now = [], [0.0]
    daemon.book.listener = lambda kind, data: told.append((kind, data["file"]))
    daemon.disk.clock = lambda: now[0]
    for fault in daemon.waits.values():  # as the start does (Daemon._start)
        daemon.book.pause(fault.folder, fault)
    assert sorted(told) == [("paused", str(outbox)), ("paused", str(failed))], told
    state = daemon.reporter.health()
    assert f"{outbox} is a file: the outbox must be a folder" in state and f"{failed} is a file" in state, state
    assert state.count("claiming resumes by itself") == 1, state
    failed.unlink()  # one of the two fixed
    now[0] += diskguard.CHECK_SECONDS + 1
    assert daemon.disk.paused(), "the outbox is still a file: claiming must wait"
    state = daemon.reporter.health()
    assert f"{outbox} is a file" in state and str(failed) not in state, state
    outbox.unlink()
    now[0] += diskguard.CHECK_SECONDS + 1
    assert not daemon.disk.paused() and daemon.reporter.health() == daemon.state


def test_folder_fault_codes_are_of_the_one_vocabulary_with_their_strings_unchanged(tmp_path):
    """closing9 (rev9d item 12): folder_faults sent "EROFS", "ENOTDIR" and "permission_denied" as bare strings
    outside errors.Reason. Each is a Reason now, its string as before (the notices and the log read it), and none
    of the folder's own codes is counted among the photos' failures in the metrics."""
    from pipeline.daemon.metrics import Metrics
    from pipeline.errors import Reason

    target = str(tmp_path / "outbox" / "starry" / "x.png")
    made = {number: folder_fault(OSError(number, os.strerror(number), target), tmp_path / "outbox", [])
            for number in (errno.EROFS, errno.EACCES)}
    (tmp_path / "outbox").write_text("a file where the outbox must be\n")
    made[errno.ENOTDIR] = folder_fault(NotADirectoryError(errno.ENOTDIR, "Not a directory", target),
                                       tmp_path / "outbox", [])
    codes = {number: fault.code for number, fault in made.items()}
    assert all(isinstance(code, Reason) for code in codes.values()), codes
    assert {number: str(code) for number, code in codes.items()} == {
        errno.EROFS: "EROFS", errno.EACCES: "permission_denied", errno.ENOTDIR: "ENOTDIR"}
    series = Metrics().render(queue=0, in_work=0, busy=False, gpu=False)
    assert 'reason="permission_denied"' in series and "EROFS" not in series and "ENOTDIR" not in series
