"""Exactly once under kill -9, with two CPU slots and batching (real subprocess daemons; rev7c's findings).

Each scenario ends with the invariant checker: every dropped photo has exactly one outcome (an output with its JSON
log in the outbox, or one photo + one .error.json in failed/), done/ holds it once, nothing is left in work/ or the
inbox after a clean stop, and no stray temp file lies in the outbox.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from daemon_helpers import SAMPLES, log_events, make_config, start, stop, wait_for
from pipeline.daemon.spool_count import SIDECARS


def config_two_slots(root: Path, **more) -> Path:
    return make_config(root, devices=["cpu", "cpu"], batch=2, **more)


def invariants(root: Path, drops: list[str]) -> list[str]:
    """Problems with the spool and outbox after a clean stop; ``drops``: the stems dropped (one drop each)."""
    problems = []
    outbox, spool = root / "outbox", root / "spool"
    images = [p for p in outbox.rglob("*") if p.suffix in (".png", ".jpg") and not p.name.startswith(".")
              and not p.name.endswith(".sheet.png")]
    logs = [p for p in outbox.rglob("*.json") if not p.name.startswith(".")]
    notes = list((spool / "failed").glob("*.error.json"))
    done = [p for p in (spool / "done").iterdir() if not p.name.startswith(".") and not p.name.endswith(SIDECARS)] \
        if (spool / "done").is_dir() else []  # a sidecar is kept beside its photo
    failed_photos = [p for p in (spool / "failed").iterdir() if not p.name.endswith((".error.json",) + SIDECARS)
                     and not p.name.startswith(".")] if (spool / "failed").is_dir() else []
    if len(images) + len(notes) != len(drops):
        problems.append(f"{len(drops)} drops but {len(images)} outputs + {len(notes)} failure notes: "
                        f"{sorted(p.name for p in images)} {sorted(p.name for p in notes)}")
    if len(logs) != len(images):
        problems.append(f"{len(images)} outputs but {len(logs)} JSON logs")
    if len(done) != len(images):
        problems.append(f"done/ holds {sorted(p.name for p in done)} for {len(images)} outputs")
    if len(failed_photos) != len(notes):
        problems.append(f"failed/ holds photos {sorted(p.name for p in failed_photos)} for {len(notes)} notes")
    leftovers = [p for p in (spool / "work").rglob("*")] if (spool / "work").is_dir() else []
    if leftovers:
        problems.append(f"left in work/: {[str(p.relative_to(spool)) for p in leftovers]}")
    inbox = [p for p in (root / "inbox").rglob("*") if p.is_file()]
    if inbox:
        problems.append(f"left in the inbox: {inbox}")
    temps = [p for p in outbox.rglob(".*.tmp")]
    if temps:
        problems.append(f"temp files left in the outbox: {[p.name for p in temps]}")
    return problems


def finished(root: Path, count: int) -> bool:
    outbox = [p for p in (root / "outbox").rglob("*") if p.suffix == ".png" and not p.name.startswith(".")]
    notes = list((root / "spool" / "failed").glob("*.error.json"))
    return len(outbox) + len(notes) >= count and not any(
        (f / "job.json").exists() for f in (root / "spool" / "work").iterdir() if f.is_dir())


def restart_and_settle(config: Path, count: int) -> None:
    """A plain daemon until ``count`` outcomes exist and work/ holds no job, then a few seconds more, stopped."""
    proc = start(config)
    try:
        try:
            wait_for(lambda: finished(config.parent, count), 120, proc)
        except AssertionError:  # fewer outcomes than drops: the invariants say which
            pass
        time.sleep(3)  # a second run of a recovered job would show by now
    finally:
        assert stop(proc) == 0


# A kill -9 at one chosen instant, in the daemon itself (patches run before the CLI).
KILL_AFTER_DONE_LINK = """
import os, signal
from pathlib import Path
_real = os.unlink
def unlink(path, *a, **k):
    p = Path(path)
    if p.parent.parent.name == "work" and p.suffix == ".jpg":
        if (p.parent.parent.parent / "done" / p.name).exists():  # linked into done/, not yet unlinked from work/
            os.kill(os.getpid(), signal.SIGKILL)
    return _real(path, *a, **k)
os.unlink = unlink
"""

KILL_AFTER_ERROR_NOTE = """
import os, signal
from pathlib import Path
_real = os.unlink
def unlink(path, *a, **k):
    p = Path(path)
    if p.parent.parent.name == "work" and p.suffix == ".jpg":
        if (p.parent.parent.parent / "failed" / (p.name + ".error.json")).exists():  # note written, input not gone
            os.kill(os.getpid(), signal.SIGKILL)
    return _real(path, *a, **k)
os.unlink = unlink
"""

def killed(config: Path, patches: str) -> None:
    proc = start(config, patches=patches)
    try:
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -9, f"the patched kill never came:\n{Path(proc.log_path).read_text()[-2000:]}"


def test_a_kill_between_the_done_link_and_the_unlink_keeps_the_photo_once_in_done(tmp_path):
    """A kill -9 while the finished photo is moved to done/ (linked there, not yet unlinked from work/): the restart
    finds the output written (already_written) and finishes that move; it linked the same photo again as done/a-1.jpg
    before (rev7c finding 3), so done/ held one drop twice and the JSON log was amended to a-1.jpg."""
    config = config_two_slots(tmp_path)
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "a.jpg")
    killed(config, KILL_AFTER_DONE_LINK)
    restart_and_settle(config, 1)
    assert invariants(tmp_path, ["a"]) == []


def test_a_kill_after_the_failure_note_fails_the_photo_once(tmp_path):
    """A kill -9 in spool.fail after the photo is linked into failed/ and its .error.json written, before the work/
    copy is unlinked: the restart sees the note naming this job (job.failing_as, saved before linking) and only
    clears work/. It ran the job again before and failed it again as a-1.jpg with a second note (rev7c finding 2)."""
    config = config_two_slots(tmp_path)
    (tmp_path / "inbox" / "stary").mkdir()  # a typo of a recipe's folder: fails at once as unknown_recipe
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "stary" / "a.jpg")
    killed(config, KILL_AFTER_ERROR_NOTE)
    restart_and_settle(config, 1)
    assert invariants(tmp_path, ["a"]) == []


HELD_OUTPUT = """
import time
from pipeline.daemon import outputs
real_write = outputs.write
def write(folder, stem, fmt, data, record):
    if record.get("source", "").endswith("a.jpg"):  # a.jpg's stem is saved in its job.json; its write never comes
        time.sleep(600)
    return real_write(folder, stem, fmt, data, record)
outputs.write = write
from pipeline.daemon import spool
real_claim = spool.Spool.claim
def claim(self, path, *args, **kwargs):  # A takes a.jpg alone: a.png goes to the neighbour, whose landing is free
    return real_claim(self, path, *args, **kwargs) if path.name == "a.jpg" else None
spool.Spool.claim = claim
"""


def output_stem_saved(root: Path, name: str) -> bool:
    for record in (root / "spool" / "work").glob("*/job.json"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if data.get("name") == name and data.get("output_stem"):
            return True
    return False


def test_a_neighbours_output_of_the_same_stem_is_never_taken_for_ours_after_a_crash(tmp_path):
    """Daemon A saved a.jpg's output stem 'starry/a' (publish) and died before writing it; meanwhile daemon B styled
    a.png (same stem) to outbox/starry/a.png. A's job is recovered: already_written took *an* a.png for its own and
    completed a.jpg without an output, a failure or a word (rev7c finding 1). Only a log naming the job is its own:
    a.jpg now runs again, to a-1.png, and B's a.png and its log are left as they were."""
    from PIL import Image
    config = config_two_slots(tmp_path)
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "a.jpg")
    a = start(config, patches=HELD_OUTPUT)
    b = None
    try:
        wait_for(lambda: output_stem_saved(tmp_path, "a.jpg"), 120, a)
        b = start(config)  # A still holds its job's lock: B leaves it alone at its start
        wait_for(lambda: b'"event": "watching"' in Path(b.log_path).read_bytes(), 60, b)
        Image.open(SAMPLES / "rocket.jpg").save(tmp_path / "inbox" / "a.png")
        wait_for(lambda: (tmp_path / "outbox" / "starry" / "a.png").exists(), 120, b)
        a.kill()  # A's machine dies with a.jpg's write pending
        a.wait()
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        if b is not None:
            stop(b)
    neighbours = {p.name: p.read_bytes() for p in (tmp_path / "outbox" / "starry").iterdir()}
    restart_and_settle(config, 2)
    assert invariants(tmp_path, ["a", "a"]) == []
    outbox = tmp_path / "outbox" / "starry"
    assert {name: (outbox / name).read_bytes() for name in neighbours} == neighbours  # B's output untouched
    assert json.loads((outbox / "a-1.json").read_text())["input"]["name"] == "a.jpg"


def owners(root: Path) -> set[int]:
    """The pids of the daemons whose claims lie in work/ (job.json's owner, host:pid)."""
    found = set()
    for record in (root / "spool" / "work").glob("*/job.json"):
        try:
            found.add(int(json.loads(record.read_text())["owner"].rpartition(":")[2]))
        except (OSError, ValueError, KeyError):
            pass
    return found


NEVER_WRITES = """
import time
from pipeline.daemon import outputs
def write(*args, **kwargs):  # this daemon's jobs never finish: its claims are in work/ when it is killed
    time.sleep(600)
outputs.write = write
"""


def test_a_dead_neighbours_claims_are_taken_up_by_the_live_daemon(tmp_path):
    """Two daemons on one inbox (README: supported, 'the rename decides'). One is killed -9 (its machine died) while
    it holds claims: its jobs lie in work/ with their locks free. The live daemon looked for orphans only at its own
    start, so they waited in work/ all night (rev7c finding 4); now it takes them up at its next rescan."""
    config = config_two_slots(tmp_path, rescan_seconds=1)
    for k in range(4):
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / f"p{k}.jpg")
    a = start(config, patches=NEVER_WRITES)
    b = None
    try:
        wait_for(lambda: owners(tmp_path) == {a.pid} and not list((tmp_path / "inbox").glob("*.jpg")), 60, a)
        b = start(config)
        wait_for(lambda: b'"event": "watching"' in Path(b.log_path).read_bytes(), 60, b)
        time.sleep(1.5)  # B's start and a rescan while A lives: A's jobs hold their locks, B leaves them alone
        assert not list((tmp_path / "outbox").rglob("*.png")) and owners(tmp_path) == {a.pid}
        a.kill()
        a.wait()
        try:
            wait_for(lambda: finished(tmp_path, 4), 60, b)
        except AssertionError:
            pass
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        if b is not None:
            assert stop(b) == 0
    assert invariants(tmp_path, [f"p{k}" for k in range(4)]) == [], "the live daemon left them in work/"


# --- the same half-made moves, in process: each branch of Spool._moved_before and Spool.failed_before ---------------

def spool_with_pair(tmp_path: Path):
    """A spool with a.jpg and its sidecar a.yaml claimed into work/."""
    from pipeline.daemon.spool import Spool, now_iso
    folders = [tmp_path / name for name in ("inbox", "work", "done", "failed")]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    spool = Spool(*folders)
    shutil.copy(SAMPLES / "coffee.jpg", folders[0] / "a.jpg")
    (folders[0] / "a.yaml").write_text("recipe: starry\n")
    job = spool.claim(folders[0] / "a.jpg", now_iso(), folders[0] / "a.yaml")
    return spool, job


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_half_move_to_done_is_finished_and_a_split_pair_moves_again_as_one(tmp_path):
    """Killed after both links: the work/ names go, done/ keeps one pair. Killed between the photo's link and the
    sidecar's: the photo's link is undone and the pair moves as one (never a.jpg with a-1.yaml)."""
    spool, job = spool_with_pair(tmp_path)
    spool.plan_done(job)
    os.link(job.input, spool.done / "a.jpg")
    os.link(job.dir / "a.yaml", spool.done / "a.yaml")
    assert spool.complete(job) == spool.done / "a.jpg"
    assert names(spool.done) == ["a.jpg", "a.yaml"] and names(spool.work) == []
    spool, job = spool_with_pair(tmp_path / "split")
    spool.plan_done(job)
    os.link(job.input, spool.done / "a.jpg")  # the sidecar's link never came
    assert spool.complete(job) == spool.done / "a.jpg"
    assert names(spool.done) == ["a.jpg", "a.yaml"] and names(spool.work) == []
    assert (spool.done / "a.yaml").read_text() == "recipe: starry\n"


def test_a_failure_killed_before_its_note_is_undone_and_one_with_its_note_is_kept(tmp_path):
    """Recovery after a kill inside fail(): links without a note are removed (the job runs again, its name free);
    a note naming this job means the failure was made: only work/ is cleared. Another job's note is not ours."""
    from pipeline.daemon.spool import Reason, Spool
    spool, job = spool_with_pair(tmp_path)
    job.failing_as = "a.jpg"
    spool.save(job)
    os.link(job.input, spool.failed / "a.jpg")
    os.link(job.dir / "a.yaml", spool.failed / "a.yaml")
    spool.release(job)
    again = Spool(spool.inbox, spool.work, spool.done, spool.failed)  # the next start
    recovered = again.recover()
    assert [j.id for j in recovered] == [job.id] and recovered[0].failing_as is None
    assert names(spool.failed) == []
    (spool.failed / "a.jpg.error.json").write_text(json.dumps({"job_id": "someone-else"}))  # not this job's note
    again.fail(recovered[0], Reason.UNKNOWN_RECIPE, "no such recipe", "rename the folder")
    assert names(spool.failed) == ["a-1.jpg", "a-1.jpg.error.json", "a-1.yaml", "a.jpg.error.json"]
    spool, job = spool_with_pair(tmp_path / "noted")
    job.failing_as = "a.jpg"
    spool.save(job)
    os.link(job.input, spool.failed / "a.jpg")
    (spool.failed / "a.jpg.error.json").write_text(json.dumps({"job_id": job.id}))
    spool.release(job)
    assert Spool(spool.inbox, spool.work, spool.done, spool.failed).recover() == []
    assert names(spool.work) == [] and names(spool.failed) == ["a.jpg", "a.jpg.error.json"]


def test_a_full_disk_at_the_claims_record_save_leaves_the_photo_and_its_sidecar_in_the_inbox(tmp_path, monkeypatch):
    """The claim's one record save (naming the sidecar's copy) comes before the photo moves: a full disk there fails
    the claim whole, nothing in work/ (rev10a's second save after the move, and its put-back, are gone: rev10d)."""
    import errno

    from pipeline.daemon.spool import Spool, now_iso

    folders = [tmp_path / name for name in ("inbox", "work", "done", "failed")]
    for folder in folders:
        folder.mkdir()
    spool, inbox = Spool(*folders), folders[0]
    shutil.copy(SAMPLES / "coffee.jpg", inbox / "a.jpg")
    (inbox / "a.yaml").write_text("steps: 2\n")

    def full(self, job):
        raise OSError(errno.ENOSPC, "No space left on device", str(job.dir / "job.json"))

    monkeypatch.setattr(Spool, "save", full)
    with pytest.raises(OSError):  # the claim's fault, as any: the caller pauses claiming (a full disk)
        spool.claim(inbox / "a.jpg", now_iso(), inbox / "a.yaml")
    assert names(inbox) == ["a.jpg", "a.yaml"] and names(folders[1]) == [], names(folders[1])


SLOW_CLAIM = """
import time
from pipeline.daemon import spool
real_lock = spool.Spool._lock
def slow_lock(self, folder):  # each claim's folder stands made and unlocked a while: the neighbour's rescans see it
    time.sleep(0.4)
    return real_lock(self, folder)
spool.Spool._lock = slow_lock
real_read = spool.read_job
def slow_read(folder):  # recovery reads a job record slowly (a busy disk) while it holds the folder's lock
    time.sleep(0.3)
    return real_read(folder)
spool.read_job = slow_read
"""


def test_two_live_daemons_looking_for_orphans_at_each_rescan_never_take_each_others_jobs(tmp_path):
    """Each rescan now looks for orphans in work/, so a live neighbour's claims must be told from a dead one's: a
    job's lock is held from just after its folder is made, and a young folder without its job.json (a claim being
    made) is never locked by the other daemon, which would break that claim ('locked by another process')."""
    config = config_two_slots(tmp_path, rescan_seconds=0.2)
    a, b = start(config, patches=SLOW_CLAIM), start(config, patches=SLOW_CLAIM)
    try:
        for proc in (a, b):
            wait_for(lambda: b'"event": "watching"' in Path(proc.log_path).read_bytes(), 60, proc)
        for k in range(8):
            shutil.copy(SAMPLES / ("coffee.jpg" if k % 2 else "rocket.jpg"), tmp_path / "inbox" / f"p{k}.jpg")
        wait_for(lambda: finished(tmp_path, 8), 120, a)
    finally:
        stopped = [stop(proc) for proc in (a, b)]
    assert stopped == [0, 0]
    assert invariants(tmp_path, [f"p{k}" for k in range(8)]) == []
    events = {proc.pid: log_events(proc) for proc in (a, b)}
    claims = {pid: sum(e.get("event") == "claimed" for e in found) for pid, found in events.items()}
    assert all(claims.values()), f"both daemons claimed photos: {claims}"
    for found in events.values():  # a claim broken by the neighbour's recovery is an error line (SpoolLocked)
        assert not [e for e in found if e.get("event") == "resuming a job left in work/" or e.get("level") == "error"]
