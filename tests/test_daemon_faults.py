"""Issue 9: the daemon never stops silently. Real daemons in subprocesses, a real tmpfs, real permissions."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon_helpers import (ROOT, SAMPLES, errors, fill_disk, log_events, make_config, mounted_tmpfs, outputs, start,
                            status_json, stop, wait_for, wait_ready)

NO_ROOT_POWERS = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")  # root then obeys file modes
BOMB = "\n".join(["a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
                 + [f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")]) + "\n"


def _can_drop_root_powers() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def _slow_write(src: Path, dest: Path, pause: float) -> None:
    """Half, a pause longer than the old grace (3 x settle), then the rest: an upload over a slow link."""
    data = src.read_bytes()
    with open(dest, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        time.sleep(pause)
        handle.write(data[len(data) // 2:])


@pytest.mark.skipif(not _can_drop_root_powers(), reason="needs root and setpriv to make a file unreadable")
def test_odd_inputs_never_stop_the_worker_and_each_fails_with_its_own_class(tmp_path):
    """Long names (ASCII, CJK), a long-named bad file, an unreadable file, a YAML bomb sidecar, a slow writer,
    folders named like pictures and hidden folders: each gets its outcome, and the worker stays alive."""
    config = make_config(tmp_path, settle_seconds=0.3)
    proc = start(config, prefix=NO_ROOT_POWERS)
    inbox = tmp_path / "inbox"
    long_ascii, long_cjk, long_bad = "a" * 251 + ".jpg", "写真" * 41 + ".jpg", "b" * 250 + ".png"
    try:
        wait_ready(proc)
        slow = threading.Thread(target=_slow_write, args=(SAMPLES / "astronaut.jpg", inbox / "slow.jpg", 1.6))
        slow.start()
        shutil.copy(SAMPLES / "coffee.jpg", inbox / long_ascii)
        shutil.copy(SAMPLES / "rocket.jpg", inbox / long_cjk)
        (inbox / long_bad).write_text("not a picture\n")
        shutil.copy(SAMPLES / "coffee.jpg", inbox / "locked.jpg")
        os.chmod(inbox / "locked.jpg", 0)
        shutil.copy(SAMPLES / "coffee.jpg", inbox / "bomb.jpg")
        (inbox / "bomb.yaml").write_text(BOMB)
        (inbox / "x.jpg").mkdir()
        (inbox / ".hidden").mkdir()
        shutil.copy(SAMPLES / "rocket.jpg", inbox / ".hidden" / "inside.jpg")
        slow.join()
        wait_for(lambda: len(outputs(tmp_path)) == 3 and len(errors(tmp_path)) == 3, 120, proc)

        names = sorted(p.name for p in outputs(tmp_path))
        assert "slow.png" in names, "a writer pausing longer than the settle time is not claimed mid-write"
        long_outputs = [n for n in names if n != "slow.png"]
        for name in long_outputs:  # shortened deterministically: start of the stem, ~hash, extension
            assert len(name.encode()) <= 255 and name.endswith(".png") and "~" in name
            assert (tmp_path / "outbox" / "starry" / (name[:-4] + ".json")).exists()
        assert any(n.startswith("aaaa") for n in long_outputs) and any(n.startswith("写真") for n in long_outputs)
        assert sorted(p.name for p in (tmp_path / "spool" / "done").iterdir()) == sorted([long_ascii, long_cjk,
                                                                                            "slow.jpg"])
        failed = errors(tmp_path)
        assert failed[long_bad]["code"] == "bad_image" and len(failed[long_bad]["kept_as"].encode()) <= 244
        assert failed["locked.jpg"]["code"] == "permission_denied"
        assert "readable" in failed["locked.jpg"]["fix"] and "again" not in failed["locked.jpg"]["message"]
        assert failed["bomb.jpg"]["code"] == "bad_sidecar" and "aliases" in failed["bomb.jpg"]["message"]
        assert (tmp_path / "spool" / "failed" / "bomb.yaml").exists()

        status = wait_for(lambda: (s := status_json(tmp_path)).get("skipped") and s, 60, proc)
        assert status["state"] == "running" and status["healthy"] and status["worker"]["alive"]
        assert {s["folder"] for s in status["skipped"]} == {"x.jpg", ".hidden"}
        warned = {e["folder"] for e in log_events(proc) if e.get("event") == "skipped a folder in the inbox"}
        assert warned == {"x.jpg", ".hidden"}
        shown = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "--config", str(config)],
                               capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
        assert "skipped folder: inbox/x.jpg" in shown
        assert not any(e.get("level") == "error" for e in log_events(proc)), "no error outside a job"
    finally:
        assert stop(proc) == 0


def test_two_processes_writing_status_never_collide(tmp_path):
    """Two daemons on one inbox write one status.json: a shared temp name killed one of them (issue 9)."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom pipeline.daemon import status\n"
            "t0 = float(sys.argv[2])\nwhile time.time() < t0: time.sleep(0.001)\n"
            "for i in range(1500): status.write(Path(sys.argv[1]), {'i': i, 'pad': 'x' * 300})\n")
    t0 = str(time.time() + 4)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), t0], cwd=ROOT, stderr=subprocess.PIPE)
             for _ in range(2)]
    results = [(p.wait(120), p.stderr.read().decode()[-500:]) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"], "no temp file left behind"
    assert json.loads((tmp_path / "status.json").read_text())["i"] == 1499


def test_crashes_are_counted_apart_from_attempts_and_a_poison_pill_fails(tmp_path):
    """kill -9 mid-job: the restart adds a crash, not an attempt; N crashes in a row fail it as crashed_daemon."""
    config = make_config(tmp_path, max_crashes=2, defaults={"size": 32, "steps": 40, "format": "png",
                                                           "early_stop_tol": 0, "checkpoint_every": 5,
                                                           "checkpoint_seconds": 0})
    inbox = tmp_path / "inbox"
    shutil.copy(SAMPLES / "coffee.jpg", inbox / "good.jpg")
    proc = start(config)
    try:
        _kill_when_started(proc, "good.jpg")
        shutil.copy(SAMPLES / "rocket.jpg", inbox / "pill.jpg")
        (inbox / "pill.yaml").write_text("steps: 100000\n")  # never ends here: each start is killed in it
        proc = start(config)
        wait_for(lambda: outputs(tmp_path), 120, proc)
        record = json.loads((tmp_path / "outbox" / "starry" / "good.json").read_text())
        assert (record["attempts"], record["crashes"]) == (1, 1), "a crash is not charged to the photo"
        _kill_when_started(proc, "pill.jpg")
        proc = start(config)
        _kill_when_started(proc, "pill.jpg")
        proc = start(config)
        wait_ready(proc)
        wait_for(lambda: errors(tmp_path), 60, proc)
        failure = errors(tmp_path)["pill.jpg"]
        assert failure["code"] == "crashed_daemon" and failure["crashes"] == 2 and failure["attempts"] == 0
        assert "pill.jpg" in failure["fix"]
        assert (tmp_path / "spool" / "failed" / "pill.jpg").exists() and proc.poll() is None
    finally:
        stop(proc)


def _kill_when_started(proc: subprocess.Popen, name: str) -> None:
    """kill -9 as soon as ``name``'s try is begun (saved as running before its "job started" line): mid-job. It came
    0.5 s later, within which a fast machine could finish good.jpg's 40 steps at 32 px (then no crash to count)."""
    wait_for(lambda: any(e.get("event") == "job started" and e.get("file") == name for e in log_events(proc)),
             120, proc, step=0.02)
    proc.kill()
    proc.wait()


def test_reload_applies_before_the_next_job_not_after_the_backlog(tmp_path):
    config = make_config(tmp_path, defaults={"size": 32, "steps": 25, "format": "png", "early_stop_tol": 0})
    for i in range(4):
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / f"shot{i}.jpg")
    proc = start(config)
    try:
        wait_for(lambda: any(e.get("event") == "job started" for e in log_events(proc)), 120, proc)
        config.write_text(config.read_text().replace("size: 32", "size: 40"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(outputs(tmp_path)) == 4, 180, proc)
        events = log_events(proc)
        reloaded = next(i for i, e in enumerate(events) if e.get("event") == "config reloaded")
        after = [e["size"] for e in events[reloaded:] if e.get("event") == "job started"]
        assert len(after) >= 2 and set(after) == {40}, f"jobs after the reload ran at {after}"
    finally:
        assert stop(proc) == 0


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 16 MB tmpfs, to fill for real (root only; skipped where mount is not allowed)."""
    yield from mounted_tmpfs(tmp_path / "fs", "the in-process ENOSPC tests cover the worker path")


def _fill(folder: Path, leave: int) -> Path:
    """Write until ENOSPC, then give back ``leave`` bytes (rounded up to pages)."""
    filler = folder / "filler.bin"
    size = fill_disk(filler)
    pages = -(-leave // 4096)
    os.truncate(filler, max(0, size - size % 4096 - pages * 4096))
    return filler


def test_a_full_disk_pauses_claiming_says_so_and_resumes_by_itself(tmp_path, small_tmpfs):
    config = make_config(small_tmpfs, settle_seconds=0.3)
    log = tmp_path / "daemon.log"  # the log lives off the full disk so the test can read it
    proc = start(config, log=log)
    try:
        wait_ready(proc)
        photo = SAMPLES / "coffee.jpg"
        filler = _fill(small_tmpfs, photo.stat().st_size)
        shutil.copy(photo, small_tmpfs / "inbox" / "coffee.jpg")
        status = wait_for(lambda: (s := status_json(small_tmpfs)).get("state", "").startswith("paused: disk full")
                          and s, 30, proc)
        assert "MB free in" in status["state"] and not status["healthy"]
        assert any(e.get("event", "").startswith("disk full") for e in log_events(proc))
        time.sleep(3)
        assert proc.poll() is None and outputs(small_tmpfs) == []
        assert stop(proc) == 0, "a shutdown on a full disk exits cleanly"
        proc = start(config, log=tmp_path / "daemon2.log")  # restarted while still full: it stays up
        wait_ready(proc)
        time.sleep(3)
        assert proc.poll() is None
        filler.unlink()  # space returns: nobody touches the daemon
        wait_for(lambda: outputs(small_tmpfs), 60, proc)
        assert any(e.get("event") == "disk space is back; claiming resumes" for e in log_events(proc))
        assert (small_tmpfs / "spool" / "done" / "coffee.jpg").exists() and errors(small_tmpfs) == {}
        wait_for(lambda: status_json(small_tmpfs).get("state") == "running", 60, proc)
    finally:
        assert stop(proc) == 0


def test_a_log_that_cannot_be_written_never_stops_the_daemon(tmp_path):
    """stderr on a full disk (here /dev/full: every write is ENOSPC): the daemon works on, silently."""
    config = make_config(tmp_path)
    proc = start(config, log=Path("/dev/full"))
    try:
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
        wait_for(lambda: outputs(tmp_path), 120, proc)
        assert proc.poll() is None and status_json(tmp_path).get("state") == "running"
    finally:
        assert stop(proc) == 0


def test_an_unclaimable_photo_waiting_behind_a_backlog_is_not_told_again_after_two_restarts(tmp_path):
    """rev8d finding 4: the told memory across restarts is status.json's list, which held a file only once the run
    had tried its claim again (behind a backlog: hours). A run restarted meanwhile wrote status.json without it, and
    the start after that told it again. In-process: three daemons' start-up (no run), the spool's status.json."""
    import errno

    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    photo = tmp_path / "inbox" / "scream" / "holiday.jpg"
    photo.parent.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", photo)
    # EPERM (the sticky bit): an EACCES entry leaves the listing once its folder is writable, which it is to root
    # in-process (test_unclaimable_fixed.py); this test is about what a restart remembers, not the fix.
    denied = PermissionError(errno.EPERM, "Operation not permitted", str(photo))
    told = []

    def run(tries_the_claim: bool) -> None:
        """One run: a daemon's start-up, perhaps its claim of the photo, and the status.json it leaves."""
        daemon = Daemon(config)
        daemon.unclaimable.tell = lambda kind, data: told.append(data["file"])
        if tries_the_claim:
            daemon.unclaimable.add(photo, denied)
        status = tmp_path / "spool" / "status.json"
        status.write_text(json.dumps({"state": "stopped", "unclaimable": daemon.unclaimable.listing()}))

    run(tries_the_claim=True)
    assert told == ["scream/holiday.jpg"]
    run(tries_the_claim=False)  # restarted while the photo waits behind a backlog: still listed as told
    assert [e["file"] for e in json.loads((tmp_path / "spool" / "status.json").read_text())["unclaimable"]] == [
        "scream/holiday.jpg"], "status and the report name it meanwhile"
    run(tries_the_claim=True)
    assert told == ["scream/holiday.jpg"], "told again after two restarts"
    photo.unlink()  # taken away: no longer listed
    run(tries_the_claim=False)
    assert json.loads((tmp_path / "spool" / "status.json").read_text())["unclaimable"] == []


@pytest.mark.skipif(not _can_drop_root_powers(), reason="needs root and setpriv to make a folder unwritable")
def test_a_photo_that_cannot_be_claimed_is_told_once_and_listed_until_it_is_taken(tmp_path):
    """A recipe folder made without write access for the service user: the claim's rename gets EACCES. Before
    (rev7d finding 3) the daemon logged it at every rescan and forgot it; status, the report, failed/ and the
    notices said nothing. Now: one log line and one notice with the fix, and `status` and the report name it
    until the folder is fixed, when the photo is styled and the listing empties. A restart sent one more notice for
    each such file (the list lived in memory): the last run's notices are known from its status.json."""
    notices = tmp_path / "notices.txt"
    config = make_config(tmp_path, rescan_seconds=1,
                         notify=f"sh -c 'echo \"$STYLE_PIPELINE_EVENT $STYLE_PIPELINE_MESSAGE\" >> {notices}'")
    folder = tmp_path / "inbox" / "scream"
    folder.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", folder / "holiday.jpg")
    folder.chmod(0o555)  # readable, not writable: the photo cannot be renamed out of it
    proc = start(config, prefix=NO_ROOT_POWERS)
    try:
        wait_ready(proc)
        listed = wait_for(lambda: status_json(tmp_path).get("unclaimable"), 30, proc)
        assert [e["file"] for e in listed] == ["scream/holiday.jpg"] and "chmod g+w" in listed[0]["fix"]
        assert str(folder) in listed[0]["fix"], listed[0]["fix"]
        time.sleep(2.5)  # two more rescans (rescan_seconds: 1) find it again
        # the notice goes out on its own thread (a shell command): read once it is in, not as soon as listed
        wait_for(lambda: notices.exists() and "unclaimable" in notices.read_text(), 30, proc)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        shown = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "--config", str(config)], cwd=ROOT,
                               env=env, capture_output=True, timeout=60).stdout.decode()
        subprocess.run([sys.executable, "-m", "pipeline.cli", "report", "--config", str(config)], cwd=ROOT, env=env,
                       capture_output=True, timeout=60)
        page = (tmp_path / "outbox" / "report.html").read_text()
        said = [e for e in log_events(proc) if e.get("event", "").startswith("cannot claim")]
        assert len(said) == 1, f"logged {len(said)} times"
        told = [line for line in notices.read_text().splitlines() if line.startswith("unclaimable")]
        assert len(told) == 1 and "scream/holiday.jpg" in told[0] and "chmod g+w" in told[0], notices.read_text()
        assert "scream/holiday.jpg" in shown and "chmod g+w" in shown, shown
        assert "scream/holiday.jpg: cannot be taken from the inbox" in page and "chmod g+w" in page
        stop(proc)  # a restart: holiday.jpg was told (its notice is known from status.json), later.jpg is new
        shutil.copy(SAMPLES / "coffee.jpg", folder / "later.jpg")
        proc = start(config, prefix=NO_ROOT_POWERS)
        wait_ready(proc)  # its start (torch's import) is not the listing's to wait for: 30 s did not cover both
        wait_for(lambda: len(status_json(tmp_path).get("unclaimable") or []) == 2, 30, proc)
        wait_for(lambda: "later.jpg" in notices.read_text(), 30, proc)
        time.sleep(1)  # a second notice for holiday.jpg, sent with later.jpg's, would be in by now
        told = [line for line in notices.read_text().splitlines() if line.startswith("unclaimable")]
        assert len(told) == 2 and "holiday.jpg" in told[0] and "later.jpg" in told[1], notices.read_text()
        folder.chmod(0o755)  # the fix: the next rescan takes the photos
        wait_for(lambda: len(outputs(tmp_path)) == 2, 60, proc)
        wait_for(lambda: status_json(tmp_path).get("unclaimable") == [], 60, proc)
    finally:
        folder.chmod(0o755)
        stop(proc)
    assert not list((tmp_path / "spool" / "failed").glob("*.error.json"))
