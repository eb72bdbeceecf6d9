"""A dropped file under a kernel lease is waited for, bounded; an open error that may pass leaves it in the inbox.

rev6d: fsio.open_regular opens with O_NONBLOCK (a FIFO never holds a reader), and on a file under a kernel write
lease (Samba's kernel oplocks, an NFS server's delegation) such an open answers EAGAIN at once where a plain open()
waited for the holder to let go: settle claimed a half-written photo, and a leased sidecar failed its photo as
bad_sidecar for good. A real process holds the lease here (fcntl F_SETLEASE) and lets go after the break signal,
as a client acknowledges an oplock break; or never lets go within the test.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from PIL import Image

from daemon_helpers import ROOT, SAMPLES, make_config
from pipeline import fsio
from pipeline.daemon import settle
from pipeline.daemon.config import load as load_config
from pipeline.daemon.config_build import check_folders
from pipeline.daemon.jobs import JobLife
from pipeline.daemon.prechecks import pre_check_readable, pre_check_sidecar
from pipeline.daemon.spool import Spool
from pipeline.fsio import FileBusy, NotRegularFile, open_regular

HOLDER = """
import fcntl, os, signal, sys, time
path, let_go_after = sys.argv[1], float(sys.argv[2])  # seconds after the break signal; < 0: never
fd = os.open(path, os.O_RDWR)
def on_break(*_):
    if let_go_after >= 0:
        time.sleep(let_go_after)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
signal.signal(signal.SIGIO, on_break)
try:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
except OSError as exc:
    print("refused", exc, flush=True)
    sys.exit(3)
print("held", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def leased(path: Path, let_go_after: float):
    """``path`` under a write lease held by another process for the block; skipped where leases are refused."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(let_go_after)], stdout=subprocess.PIPE,
                              text=True)
    try:
        said = holder.stdout.readline().strip()
        if said != "held":
            pytest.skip(f"this machine refuses a file lease (fcntl F_SETLEASE: {said or 'no answer'}; "
                        "fs.leases-enable=0, or a filesystem without leases)")
        yield
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


@contextlib.contextmanager
def lease_waits():
    """The seconds fsio's open slept in the block waiting out leases (its retry loop's sleeps), counted instead of
    timed: "never waits" is then exact, where a wall-clock bound could be broken by a loaded box."""
    slept: list[float] = []
    real = fsio.time

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        real.sleep(seconds)
    fsio.time = types.SimpleNamespace(**{name: getattr(real, name) for name in dir(real) if not name.startswith("_")})
    fsio.time.sleep = sleep
    try:
        yield slept
    finally:
        fsio.time = real


def half_png(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.merge("RGB", [Image.effect_noise((48, 40), 60)] * 3).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return buf.getvalue()


def test_a_lease_let_go_after_its_break_is_waited_for_as_a_plain_open_did(tmp_path):
    photo = tmp_path / "a.jpg"
    shutil.copy(SAMPLES / "coffee.jpg", photo)
    with leased(photo, 0.5):
        started = time.monotonic()
        with open_regular(photo) as file:
            assert file.read() == photo.read_bytes()
        assert time.monotonic() - started >= 0.3  # it waited for the holder, not around it
    with leased(photo, 0.5):
        pre_check_readable(type("J", (), {"input": photo, "source": "a.jpg"})())  # the worker's check: no raise
    fifo = tmp_path / "pipe.jpg"
    subprocess.run(["mkfifo", str(fifo)], check=True)
    answers: list = []  # the FIFO protection stays: answered, not a reader waiting for a writer that never comes

    def open_fifo() -> None:
        try:
            open_regular(fifo).close()
            answers.append("opened")
        except Exception as exc:  # noqa: BLE001 - asserted below, in the test's thread
            answers.append(exc)
    opener = threading.Thread(target=open_fifo, daemon=True)
    opener.start()
    opener.join(30)  # only an open that blocks takes this long: it fails here, not at pytest-timeout's 300 s
    try:
        assert not opener.is_alive(), "open_regular blocked on a FIFO with no writer"
    finally:  # a blocked open is let go (a writer comes, O_RDWR never waits on Linux): no thread left stuck
        if opener.is_alive():
            os.close(os.open(fifo, os.O_RDWR))
            opener.join(30)
    assert len(answers) == 1 and isinstance(answers[0], NotRegularFile), answers


def test_a_lease_not_let_go_is_file_busy_and_settle_waits_for_the_photo(tmp_path):
    """On the main loop: a half-written photo whose writer holds its lease is "not yet" (False), answered within
    the short wait; it was claimed at once (True). Let go, the decode check goes on as ever."""
    photo = tmp_path / "a.png"
    whole = half_png(photo)
    check = settle.DecodeCheck()
    with leased(photo, -1):
        with lease_waits() as slept:
            assert check.ready(photo, 10**8, 0.5) is False
        assert slept == []  # the loop is not stalled
        with pytest.raises(FileBusy) as busy:
            open_regular(photo, busy_wait=0.3)
        assert busy.value.errno == errno.EAGAIN and busy.value.filename == str(photo)
        assert "held open by another program" in busy.value.strerror
    assert check.ready(photo, 10**8, 0.5) is False  # let go, still half: the decode wait, as before
    photo.write_bytes(whole)
    assert check.ready(photo, 10**8, 0.5) is True


MANY_HOLDER = """
import fcntl, os, signal, sys, time
signal.signal(signal.SIGIO, lambda *_: None)  # a client that does not answer the break
fds = [os.open(path, os.O_RDWR) for path in sys.argv[1:]]
for fd in fds:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
print("held", flush=True)
time.sleep(60)
"""


def test_leased_files_never_stall_the_main_loop(tmp_path):
    """rev6f A1: each leased file cost the main loop 0.2 s a pass in settle and again in batching.header_size:
    25 of them 5.01 s a pass (1,000: ~200 s, past WatchdogSec). Now a pass looks at each once and goes on."""
    from pipeline.daemon.batching import header_size
    paths = []
    for k in range(25):
        paths.append(tmp_path / f"p{k}.png")
        Image.new("RGB", (32, 32), (k, 0, 0)).save(paths[-1])
    holder = subprocess.Popen([sys.executable, "-c", MANY_HOLDER, *map(str, paths)], stdout=subprocess.PIPE,
                              text=True)
    try:
        if holder.stdout.readline().strip() != "held":
            pytest.skip("this machine refuses a file lease")
        check = settle.DecodeCheck()
        with lease_waits() as slept:
            verdicts = [check.ready(p, 10**8, 0.3) for p in paths]
            sizes = [header_size(type("J", (), {"input": p})()) for p in paths]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert verdicts == [False] * 25 and sizes == [None] * 25
    assert slept == [], f"{sum(slept):.2f} s waited out over 25 leased files (settle and header_size)"
    assert [check.ready(p, 10**8, 0.3) for p in paths] == [True] * 25  # let go: claimed on a later pass


def settled(sidecar: Path) -> None:
    """Written an hour ago: quiet, so the claim takes it at once (settle.DecodeCheck.sidecar_settled)."""
    past = time.time() - 3600
    os.utime(sidecar, (past, past))


def claimed_with_sidecar(tmp_path: Path):
    config = load_config(make_config(tmp_path))
    check_folders(config)
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    shutil.copy(SAMPLES / "coffee.jpg", config.inbox / "a.jpg")
    (config.inbox / "a.yaml").write_text("recipe: scream\n")
    return config, spool, spool.claim(config.inbox / "a.jpg", "2026-11-28T00:00:00Z", config.inbox / "a.yaml")


def test_a_leased_sidecar_is_read_once_let_go_and_retried_never_failed_while_held(tmp_path, monkeypatch):
    config, spool, job = claimed_with_sidecar(tmp_path)
    with leased(job.dir / "a.yaml", 0.5):
        assert pre_check_sidecar(job, config) == ("scream", {})
    monkeypatch.setattr(fsio, "BUSY_WAIT", 0.3)
    life = JobLife(spool, lambda: config, threading.Event())
    try:
        with leased(job.dir / "a.yaml", -1):
            assert life.open(job) is None
    finally:
        life.prefetch.close()
    assert [o.kind for o in life.drain()] == ["waiting"], "a held sidecar is 'not yet', not bad_sidecar"
    assert "held open by another program" in job.last_error and "a.yaml" in job.last_error
    assert job.attempts == 0, "a lease is not the photo's fault: no attempt charged"
    assert not any(config.failed.iterdir()) and (job.dir / "a.jpg").exists() and (job.dir / "a.yaml").exists()


def _photo_with_a_sidecar(tmp_path, submit):
    """A `once` daemon with a.jpg and its settled a.yaml in the inbox, seen by the tracker; its executor is the part
    of the interface the claim and drained() use (nothing runs here), `submit` taking what is claimed."""
    from pipeline.daemon.daemon import Daemon

    daemon = Daemon(make_config(tmp_path), once=True)
    photo = daemon.config.inbox / "a.jpg"
    shutil.copy(SAMPLES / "coffee.jpg", photo)
    (daemon.config.inbox / "a.yaml").write_text("recipe: scream\n")
    settled(daemon.config.inbox / "a.yaml")
    daemon.tracker.seen(photo)
    daemon.executor = types.SimpleNamespace(progress=lambda: types.SimpleNamespace(open_jobs=0), poll=lambda: [],
                                            submit=submit)
    return daemon, photo


def test_a_photo_whose_sidecar_is_leased_at_the_claim_waits_told_once_and_is_claimed_once_let_go(tmp_path):
    """rev10e: the claim met the sidecar under its writer's lease and answered None; the main loop forgot the photo,
    so `once` exited 0 with it unstyled in the inbox and no word why, and `run` retried it unsaid each rescan. Now
    the photo waits as one whose own writer holds it does (drained() false: `once` waits), told once."""
    from structlog.testing import capture_logs

    submitted = []
    daemon, photo = _photo_with_a_sidecar(tmp_path, submitted.append)
    with leased(daemon.config.inbox / "a.yaml", -1), capture_logs() as logs:
        assert [daemon._claim(photo) for _ in range(3)] == [False] * 3
        assert not daemon.drained(), "`once` would exit with the photo unstyled"
    said = [entry for entry in logs if "sidecar" in entry["event"]]
    assert [(e["event"], e["file"], e["sidecar"]) for e in said] == [
        ("the photo waits: its sidecar is held open by another program", str(photo),
         str(daemon.config.inbox / "a.yaml"))], logs
    assert photo.exists() and list(daemon.config.work.iterdir()) == [], "no job folder left by a refused claim"
    assert daemon._claim(photo) and [job.sidecar for job in submitted] == ["a.yaml"], "let go: claimed with it"
    assert (submitted[0].dir / "a.yaml").read_text() == "recipe: scream\n" and daemon.drained()


def test_status_lists_a_photo_waiting_on_its_leased_sidecar_until_it_is_claimed(tmp_path):
    """A photo waiting because its sidecar is held open under a lease was logged once (rev10e) but `status` did not
    show it, though it lists the other files held in the inbox: status.json's ``sidecar_held`` names it, with why."""
    from pipeline.daemon import status

    daemon, photo = _photo_with_a_sidecar(tmp_path, lambda job: None)

    def shown_by_status() -> tuple[list, str]:
        executor, daemon.executor = daemon.executor, None  # facts() asks a real executor more than this one has
        daemon.reporter.write_status(status.snapshot(daemon.reporter.facts()))
        daemon.executor = executor
        data = status.read(daemon.config)
        return data["sidecar_held"], status.render(data)

    with leased(daemon.config.inbox / "a.yaml", -1):
        assert not daemon._claim(photo)
        held, said = shown_by_status()
    assert held == [{"file": "a.jpg", "path": str(photo), "sidecar": "a.yaml",
                     "why": "its sidecar is held open by another program"}], held
    assert "waiting in the inbox: a.jpg: its sidecar is held open by another program (a.yaml)" in said, said
    assert daemon._claim(photo) and shown_by_status()[0] == [], "claimed once let go: no longer listed"


def test_a_photo_leased_in_the_worker_waits_uncharged_and_runs_once_let_go(tmp_path, monkeypatch):
    """rev6f A2: a kernel lease survives the claim's rename into work/; pre_check_readable's FileBusy was a
    transient error charged an attempt, and at max_attempts: 1 the photo went to failed/ as too_many_attempts.
    Now it waits (like defer), uncharged, however often; once let go it opens and runs."""
    config = load_config(make_config(tmp_path, max_attempts=1))
    check_folders(config)
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    shutil.copy(SAMPLES / "coffee.jpg", config.inbox / "a.jpg")
    job = spool.claim(config.inbox / "a.jpg", "2026-11-28T00:00:00Z", None)
    monkeypatch.setattr(fsio, "BUSY_WAIT", 0.2)
    life = JobLife(spool, lambda: config, threading.Event())
    try:
        with leased(job.input, -1):
            assert life.open(job) is None and life.open(job) is None
            kinds = [(o.kind, o.retry_at is not None) for o in life.drain()]
        assert kinds == [("waiting", True)] * 2 and job.attempts == 0, kinds
        assert not any(config.failed.iterdir()), "never failed while held"
        opened = life.open(job)
    finally:
        life.prefetch.close()
    assert opened is not None and opened[1].content.size == Image.open(SAMPLES / "coffee.jpg").size
    assert job.attempts == 1 and not any(config.failed.iterdir())


EMFILE_PROBE = """
import os, resource, sys
from pathlib import Path
from pipeline.daemon.settle import DecodeCheck
check, half = DecodeCheck(), Path(sys.argv[1])
print(check.ready(half, 10**8, 0.5))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
try:
    verdict = check.ready(half, 10**8, 0.5)
except OSError as exc:
    verdict = f"raised {exc.errno}"
for fd in held:
    os.close(fd)
print(verdict)
"""


def test_settle_raises_an_open_error_that_may_pass_instead_of_claiming_the_photo(tmp_path):
    """Out of file descriptors (EMFILE, real, in a child with a low limit): the half-written photo is not claimed
    (it was: True); the error goes up to the loop, which leaves the file for the next rescan."""
    half_png(tmp_path / "half.png")
    out = subprocess.run([sys.executable, "-c", EMFILE_PROBE, str(tmp_path / "half.png")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "raised", str(errno.EMFILE)], out.stdout


EDITOR = """
import fcntl, os, signal, sys, time
path, text = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR); signal.signal(signal.SIGIO, lambda *_: None)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
os.ftruncate(fd, 0); os.pwrite(fd, text.encode(), 0)  # the client's save, through its own handle
print("held", flush=True)
time.sleep(float(sys.argv[3]))  # the client answers the break late; then it lets go (exits)
"""


def test_a_config_edit_saved_under_a_lease_is_applied_once_let_go(tmp_path):
    """A config.yaml saved over Samba or NFS can be held by the client's lease for a while. The reload read it as
    invalid ("keeping the old one") and had used up its mtime, so the edit was never applied until another save
    (rev6f A3). Now the same edit is read again at each pass until the holder lets go, and the loop never waits
    out the lease (a short busy wait a read)."""
    import yaml

    from daemon_helpers import log_events, start, stop, wait_for, wait_ready

    config = make_config(tmp_path)
    proc = start(config)
    try:
        wait_ready(proc)
        data = yaml.safe_load(config.read_text())
        data["recipes"]["added"] = {"styles": ["the_scream.jpg"]}
        editor = subprocess.Popen([sys.executable, "-c", EDITOR, str(config), yaml.safe_dump(data), "2"],
                                  stdout=subprocess.PIPE, text=True)
        if editor.stdout.readline().strip() != "held":
            pytest.skip("this kernel refuses file leases (fs.leases-enable=0)")
        wait_for(lambda: any("held by another program" in e.get("event", "") for e in log_events(proc)), 30, proc)
        editor.wait(30)  # let go: the file now reads fine
        wait_for(lambda: any(e.get("event") == "config reloaded" for e in log_events(proc)), 60, proc)
        events = log_events(proc)
    finally:
        stop(proc)
    reloaded = [e for e in events if e.get("event") == "config reloaded"]
    assert "added" in reloaded[-1]["recipes"]
    assert not any(e.get("event") == "the new config is invalid; keeping the old one" for e in events)


def test_a_permanently_unreadable_inbox_file_is_claimed_after_a_few_passes(tmp_path, monkeypatch):
    """rev6f A4: an inbox file whose open fails for good (EIO, ESTALE) raised on every pass: a traceback each
    rescan, forever, and no failed/ record. After settle.UNREADABLE_PASSES it is claimed, so the worker fails it
    with that error; the daemon's own shortage (EMFILE) is never counted against a file."""
    photo, other = tmp_path / "a.jpg", tmp_path / "b.jpg"
    for path in (photo, other):
        shutil.copy(SAMPLES / "coffee.jpg", path)
    real = settle.open_regular

    def failing(path, busy_wait=None):
        if Path(path) == photo:
            raise OSError(errno.EIO, "Input/output error", str(path))
        if Path(path) == other:
            raise OSError(errno.EMFILE, "Too many open files", str(path))
        return real(path, busy_wait)
    monkeypatch.setattr(settle, "open_regular", failing)
    check = settle.DecodeCheck()
    for _ in range(settle.UNREADABLE_PASSES - 1):
        with pytest.raises(OSError):
            check.ready(photo, 10**8, 0.3)
    assert check.ready(photo, 10**8, 0.3) is True, "claimed: the worker fails it with its reason"
    for _ in range(settle.UNREADABLE_PASSES + 2):
        with pytest.raises(OSError):
            check.ready(other, 10**8, 0.3)


@contextlib.contextmanager
def all_leased(paths: list[Path]):
    """Every one of ``paths`` under a write lease whose holder never answers the break, for the block."""
    holder = subprocess.Popen([sys.executable, "-c", MANY_HOLDER, *map(str, paths)], stdout=subprocess.PIPE,
                              text=True)
    try:
        if holder.stdout.readline().strip() != "held":
            pytest.skip("this machine refuses a file lease")
        yield
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_scan_over_leased_text_files_never_stalls_and_claims_none_of_them_yet(tmp_path):
    """rev7e finding 1: scan() reads the head of every .json/.txt/.html in the inbox (watcher.written_by_us), and it
    waited out each lease for 0.2 s (fsio.BUSY_WAIT_SHORT) where settle and batching did not wait at all: 10 Takeout
    .json files beside their photos cost the main loop's rescan, and `status`, 2.01 s. Now none waits (fsio.NO_WAIT);
    a held text file is not a candidate until its writer lets go, so a held report of ours is never claimed."""
    from pipeline.daemon.watcher import OWN_MARK, scan
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    held = []
    for k in range(10):
        Image.new("RGB", (32, 32), (k, 0, 0)).save(inbox / f"p{k}.png")
        held.append(inbox / f"notes{k}.json")  # a text file scan() reads the head of (Takeout's own are ignored)
        held[-1].write_text('{"title": "p%d.png"}\n' % k)
    held.append(inbox / "report.html")
    held[-1].write_bytes(b"<!-- " + OWN_MARK + b" -->\n<html></html>\n")
    with all_leased(held), lease_waits() as slept:
        found = list(scan(inbox))
    assert slept == [], f"scan() waited {sum(slept):.2f} s over 11 leased text files (0.2 s each was 2.2 s)"
    assert found == sorted(inbox / f"p{k}.png" for k in range(10)), "held text files are no candidates yet"
    assert sorted(scan(inbox)) == sorted([*found, *held[:10]]), "let go: read, and our own report left alone"


def test_a_config_reload_under_a_lease_answers_again_without_waiting(tmp_path):
    """rev7e finding 1: reload_config's docstring said "read without waiting out the lease" and it waited 0.2 s
    each pass (~3 a second) while an editor's save over Samba held the config."""
    from pipeline.daemon.reload import AGAIN, reload_config
    path = make_config(tmp_path)
    old = load_config(path)
    with all_leased([path]), lease_waits() as slept:
        answers = [reload_config(old, path) for _ in range(5)]
    assert answers == [AGAIN] * 5
    assert slept == [], f"5 reloads of a held config waited {sum(slept):.2f} s (0.2 s each was 1.0 s)"
    assert reload_config(old, path).recipes.keys() == old.recipes.keys()  # let go: read
