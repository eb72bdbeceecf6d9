"""The claim of a photo with its sidecar under kill -9, two daemons at once and refused calls (rev10d's findings).

Every job now holds its own copy of the sidecar before its photo leaves the inbox; the inbox's sidecar is removed
after the move (and again at recovery) by the last photo that reads it, and only while it is still the file that
was copied. Real subprocess daemons for the kills and the two-daemon race; the rest in process.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from daemon_helpers import SAMPLES, errors, make_config, start, stop, wait_for
from test_exactly_once import config_two_slots, invariants, killed, restart_and_settle

# kill -9 just after the photo's rename into work/, before anything is done about its sidecar
KILL_AFTER_PHOTO_MOVE = """
import os, signal
from pathlib import Path
_rename = os.rename
def rename(src, dst, *a, **k):
    _rename(src, dst, *a, **k)
    if Path(dst).parent.parent.name == "work" and Path(dst).name == "a.jpg":
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename
"""

# the sidecar cannot be renamed (EPERM: another user's, in a sticky inbox); kill -9 at the next unlink of the claim:
# the put-back's (the photo linked back into the inbox, its work/ name not yet unlinked) or the inbox sidecar's
KILL_AT_THE_CLAIMS_UNLINK = """
import errno, os, signal
from pathlib import Path
_rename, _unlink = os.rename, os.unlink
def rename(src, dst, *a, **k):
    if Path(src).name == "a.yaml" and Path(src).parent.name == "inbox":
        raise PermissionError(errno.EPERM, "Operation not permitted", str(src))
    return _rename(src, dst, *a, **k)
def unlink(path, *a, **k):
    p = Path(path)
    put_back = p.parent.parent.name == "work" and p.name == "a.jpg" and (p.parents[3] / "inbox" / "a.jpg").exists()
    if put_back or (p.parent.name == "inbox" and p.name == "a.yaml"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _unlink(path, *a, **k)
os.rename, os.unlink = rename, unlink
"""


def styled(root: Path) -> list[tuple[str, str, int]]:
    """(input name, recipe, steps) of each output's JSON log: which recipe each photo was styled with."""
    logs = [json.loads(p.read_text()) for p in (root / "outbox").rglob("*.json") if not p.name.startswith(".")]
    return sorted((log["input"]["name"], log["recipe"], log["settings"]["steps"]) for log in logs)


def drop_pair(root: Path) -> None:
    shutil.copy(SAMPLES / "coffee.jpg", root / "inbox" / "a.jpg")
    (root / "inbox" / "a.yaml").write_text("recipe: scream\nsteps: 3\n")


def test_a_kill_right_after_the_photo_moves_styles_it_with_its_sidecar_once(tmp_path):
    """rev10d #2: the photo's move and its sidecar's were two renames; a kill between them left the job without
    its sidecar (styled with the default recipe) and a.yaml in the inbox for the next photo named a."""
    config = config_two_slots(tmp_path)
    drop_pair(tmp_path)
    killed(config, KILL_AFTER_PHOTO_MOVE)
    restart_and_settle(config, 1)
    assert styled(tmp_path) == [("a.jpg", "scream", 3)]
    assert invariants(tmp_path, ["a"]) == []  # the inbox sidecar is gone too (recovery let it go)


def test_a_kill_inside_the_claim_of_a_sidecar_that_cannot_be_moved_styles_the_photo_once(tmp_path):
    """rev10d #1: the put-back (the photo linked back into the inbox, then unlinked from work/) killed halfway left
    the photo in both places: the restart styled it twice, once from work/ without its sidecar. The claim no
    longer moves the sidecar nor puts a photo back; a kill before the inbox sidecar's removal is finished at
    recovery."""
    config = config_two_slots(tmp_path)
    drop_pair(tmp_path)
    killed(config, KILL_AT_THE_CLAIMS_UNLINK)
    restart_and_settle(config, 1)
    assert styled(tmp_path) == [("a.jpg", "scream", 3)]
    assert invariants(tmp_path, ["a"]) == []


EACH_AT_ITS_OWN_PHOTO = """
import time
from pipeline.daemon import daemon as d, sidecars
real_rba, real_claim = sidecars.read_by_another, d.Daemon._claim
def read_by_another(*a, **k):  # the other daemon is at its own photo of the pair meanwhile
    answer = real_rba(*a, **k)
    time.sleep(1.5)
    return answer
def _claim(self, path, *rest):  # each daemon at its own photo of the pair (its settle saw that one first)
    return False if path.name != %r else real_claim(self, path, *rest)
d.read_by_another = sidecars.read_by_another = read_by_another
d.Daemon._claim = _claim
"""


def test_two_daemons_claiming_the_two_photos_of_a_shared_sidecar_at_once_leave_nothing_in_the_inbox(tmp_path):
    """rev10d #3: each daemon asked whether the other photo still waited before either moved: both copied the
    shared pair.yaml, neither removed it, and the next pair.jpg read it. Each now asks after its own move."""
    config = make_config(tmp_path)
    inbox = tmp_path / "inbox"
    for name in ("pair.jpg", "pair.png"):
        shutil.copy(SAMPLES / "coffee.jpg", inbox / name)
    (inbox / "pair.yaml").write_text("recipe: scream\nsteps: 3\n")
    daemons = [start(config, patches=EACH_AT_ITS_OWN_PHOTO % name) for name in ("pair.jpg", "pair.png")]
    try:
        wait_for(lambda: len(styled(tmp_path)) == 2, 120, daemons[0])
        time.sleep(1)
    finally:
        codes = [stop(proc) for proc in daemons]
    assert codes == [0, 0]
    assert styled(tmp_path) == [("pair.jpg", "scream", 3), ("pair.png", "scream", 3)]
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == [], "left for the next photo named pair"


def spool_at(tmp_path: Path):
    from pipeline.daemon.spool import Spool
    folders = [tmp_path / name for name in ("inbox", "work", "done", "failed")]
    for folder in folders:
        folder.mkdir(exist_ok=True)
    return folders[0], Spool(*folders)


@pytest.mark.parametrize("code", [errno.EPERM, errno.EEXIST])
def test_a_sidecar_that_cannot_be_renamed_nor_the_photo_linked_back_stays_the_photos(tmp_path, monkeypatch, code):
    """rev10d #5: a refused sidecar rename with a refused put-back link (EPERM: fs.protected_hardlinks, a
    filesystem without hard links; EEXIST: the name dropped again) styled the photo without its sidecar, which
    stayed in the inbox for the next photo of its name. Neither call is needed now: the job holds a copy."""
    from pipeline.daemon import spool as spool_module

    inbox, spool = spool_at(tmp_path)
    drop_pair(tmp_path)
    real_rename, real_link = os.rename, os.link

    def rename(src, dst, *a, **k):
        if str(src).endswith("a.yaml"):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(src))
        return real_rename(src, dst, *a, **k)

    def link(src, dst, *a, **k):  # into the inbox: the put-back's link
        if Path(dst).parent == inbox:
            raise OSError(code, os.strerror(code), str(dst))
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(spool_module.os, "rename", rename)
    monkeypatch.setattr(spool_module.os, "link", link)
    try:
        job = spool.claim(inbox / "a.jpg", "now", inbox / "a.yaml")
    except OSError:
        job = None
    assert job is not None and job.sidecar == "a.yaml", sorted(os.listdir(inbox))
    assert (job.dir / "a.yaml").read_text() == "recipe: scream\nsteps: 3\n" and os.listdir(inbox) == []


def test_a_kill_before_the_photo_moves_or_a_resaved_sidecar_leave_the_inbox_as_it_was(tmp_path, monkeypatch):
    """The claim's safe points kept: a claim that died after its copy and record, before the photo moved, is
    discarded by recovery (the photo and sidecar still in the inbox); a sidecar saved again under its name after
    a claim died before removing it (another file) is never removed by recovery."""
    from pipeline.daemon import spool as spool_module
    from pipeline.daemon.spool import Spool

    inbox, spool = spool_at(tmp_path)
    drop_pair(tmp_path)
    real_rename = os.rename

    def killed_at_the_move(src, dst, *a, **k):
        if Path(dst).name == "a.jpg":
            raise KeyboardInterrupt  # stands for the kill: the folder is left as a kill leaves it (no _discard)
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(spool_module.os, "rename", killed_at_the_move)
    monkeypatch.setattr(Spool, "_discard", lambda self, folder: None)
    with pytest.raises(KeyboardInterrupt):
        spool.claim(inbox / "a.jpg", "now", inbox / "a.yaml")
    monkeypatch.undo()
    [left] = spool.work.iterdir()
    spool._unlock(left)  # the kill drops the claim's lock
    assert sorted(os.listdir(left)) == [".lock", "a.yaml", "job.json"]
    for path in (left, left / "job.json"):
        os.utime(path, (time.time() - 60, time.time() - 60))
    assert Spool(spool.inbox, spool.work, spool.done, spool.failed).recover() == []
    assert sorted(os.listdir(inbox)) == ["a.jpg", "a.yaml"] and os.listdir(spool.work) == []

    monkeypatch.setattr(Spool, "let_go_sidecar", lambda self, job: None)  # killed just after the photo's move
    job = spool.claim(inbox / "a.jpg", "now", inbox / "a.yaml")
    monkeypatch.undo()
    (inbox / "a.yaml").unlink()
    (inbox / "a.yaml").write_text("recipe: starry\n")  # saved again, for the next photo named a
    spool.release(job)
    assert [j.id for j in Spool(spool.inbox, spool.work, spool.done, spool.failed).recover()] == [job.id]
    assert (inbox / "a.yaml").read_text() == "recipe: starry\n"


def test_a_shared_sidecar_the_service_cannot_read_fails_both_photos_naming_it(tmp_path, engine, monkeypatch):
    """rev10d #4: the shared claim's copy raised EACCES out of the claim: neither photo was ever claimed, and both
    were told a wrong fix (chmod g+w on the folder). Now each fails as bad_sidecar naming the sidecar, as an
    unshared one did; the sidecar goes to failed/ with the last."""
    from pipeline.daemon import spool_sidecar as spool_module
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    inbox = tmp_path / "inbox"
    for name in ("pair.jpg", "pair.png"):
        shutil.copy(SAMPLES / "coffee.jpg", inbox / name)
    (inbox / "pair.yaml").write_text("recipe: scream\n")
    real_open = spool_module.open_regular

    def unreadable(path, *a, **k):  # pair.yaml saved 0600 by another user (umask 077); the tests run as root
        if str(path).endswith(".yaml"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(spool_module, "open_regular", unreadable)
    Daemon(config, once=True, engine=engine).run()
    found = errors(tmp_path)
    assert sorted(found) == ["pair.jpg", "pair.png"], sorted(os.listdir(inbox))
    for error in found.values():
        assert error["code"] == "bad_sidecar" and "pair.yaml cannot be read by the service user" in error["message"]
        assert "pair.yaml" in error["fix"] and "chmod g+w" not in error["fix"]
    assert [p for p in inbox.iterdir() if p.is_file()] == [] and "pair.yaml" in os.listdir(tmp_path / "spool" / "failed")


def test_a_folder_swapped_in_for_the_sidecar_stays_and_the_photo_fails_alone_with_its_note(tmp_path):
    """rev10f #2: a folder named a.yaml put where the sidecar was, between the scan and the claim, was renamed into
    the job folder; fail() then hard-linked it (EPERM) and kept failed/a.jpg without its .error.json, the job held
    in work/. The folder stays in the inbox now; the photo fails alone, its note naming the sidecar."""
    from pipeline.daemon.spool import Reason

    inbox, spool = spool_at(tmp_path)
    drop_pair(tmp_path)
    (inbox / "a.yaml").unlink()
    (inbox / "a.yaml").mkdir()
    job = spool.claim(inbox / "a.jpg", "now", inbox / "a.yaml")
    assert job is not None and job.sidecar == "a.yaml" and job.sidecar_error, job
    kept = spool.fail(job, Reason.BAD_SIDECAR, f"the sidecar a.yaml {job.sidecar_error}", "Replace a.yaml")
    note = json.loads((spool.failed / "a.jpg.error.json").read_text())
    assert kept == spool.failed / "a.jpg" and "a.yaml" in note["message"] and note["sidecar"] is None, note
    assert sorted(os.listdir(spool.failed)) == ["a.jpg", "a.jpg.error.json"] and os.listdir(spool.work) == []
    assert (inbox / "a.yaml").is_dir()


def test_a_sidecar_link_refused_undoes_the_photos_link(tmp_path):
    """rev10f #2: _link_pair undid the photo's link only when the sidecar's name was taken; any other refusal
    (EPERM: a folder in a job claimed before the claim rewrite) left failed/a.jpg without its note. The job stays
    whole in work/ and failed/ is left as it was."""
    from pipeline.daemon.spool import Reason

    inbox, spool = spool_at(tmp_path)
    drop_pair(tmp_path)
    job = spool.claim(inbox / "a.jpg", "now", inbox / "a.yaml")
    (job.dir / "a.yaml").unlink()
    (job.dir / "a.yaml").mkdir()
    with pytest.raises(OSError):
        spool.fail(job, Reason.BAD_SIDECAR, "the sidecar a.yaml is a folder", "Replace a.yaml")
    assert os.listdir(spool.failed) == [] and job.input.exists()
