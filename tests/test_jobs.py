"""A job's life (pipeline/daemon/jobs.py) in the paths no other test walks: a try that ends (or a daemon killed)
between writing the output and moving the input, ``after_success: delete``, and running out of memory."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import torch

from daemon_helpers import ROOT, SAMPLES, assert_deleted_as_the_try_began, make_config, outputs
from pipeline.daemon.daemon import Daemon
from pipeline.daemon.spool import Spool


def test_a_try_ending_after_the_output_is_written_finishes_without_a_second_copy(tmp_path, engine, monkeypatch):
    """The README's promise: the output's stem is recorded first, so the next try sees the image and only moves
    the input (JobLife.already_written); without it the retry would style the photo again as rocket-1.png."""
    real, calls = Spool.complete, []

    def dies_once(self, job, *args, **kwargs):
        calls.append(job.name)
        if len(calls) == 1:
            raise OSError(errno.EIO, "injected: the try ends here, the output already written")
        return real(self, job, *args, **kwargs)

    monkeypatch.setattr(Spool, "complete", dies_once)
    config = make_config(tmp_path)
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    assert Daemon(config, once=True, engine=engine).run() == 0
    assert calls == ["rocket.jpg", "rocket.jpg"]
    assert [p.name for p in outputs(tmp_path)] == ["rocket.png"]
    assert [p.name for p in (tmp_path / "spool" / "done").rglob("*.jpg")] == ["rocket.jpg"]


def test_after_success_delete_removes_the_input_and_the_log_says_so(tmp_path, engine):
    config = make_config(tmp_path, after_success="delete")
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    assert Daemon(config, once=True, engine=engine).run() == 0
    [image] = outputs(tmp_path)
    record = json.loads(image.with_suffix(".json").read_text())
    assert record["input"]["kept_as"] is None and record["input"]["name"] == "rocket.jpg"
    assert not list((tmp_path / "spool" / "done").rglob("rocket*")), "deleted, not kept"
    assert not list((tmp_path / "inbox").rglob("rocket*")) and not list((tmp_path / "spool" / "work").iterdir())



def test_a_reload_during_a_job_changes_neither_its_log_nor_what_happens_to_its_input(tmp_path, engine, monkeypatch):
    """rev9d item 2: complete() kept or deleted the input by the config the try opened with, but the JSON log
    (JobLife.record) asked get_config() again, i.e. whatever a reload swapped in meanwhile: an edit `delete` ->
    `move` landing while the photo ran deleted the input and logged kept_as done/rocket.jpg (the report then looks
    there for its thumbnail). A running job never sees an edit (Config's promise): both follow `delete`."""
    import dataclasses

    from pipeline.daemon.jobs import JobLife

    config = make_config(tmp_path, after_success="delete")
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    daemon = Daemon(config, once=True, engine=engine)
    real = JobLife.finish

    def reload_lands_mid_job(self, job, config, *args, **kwargs):
        daemon.config = dataclasses.replace(daemon.config, after_success="move")  # what a reload swaps in
        return real(self, job, config, *args, **kwargs)

    monkeypatch.setattr(JobLife, "finish", reload_lands_mid_job)
    assert daemon.run() == 0
    assert_deleted_as_the_try_began(tmp_path)


KILL_WHEN_MOVING_THE_INPUT = """import os, signal, sys
from pipeline.cli import main
from pipeline.daemon.spool import Spool
Spool.complete = lambda self, job, **kw: os.kill(os.getpid(), signal.SIGKILL)  # kill -9, output already written
sys.exit(main(["once", "--config", sys.argv[1]]))
"""


def run_once(config, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv, str(config)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=180)


def test_kill_9_after_the_output_is_written_and_before_the_input_moves_leaves_one_copy(tmp_path):
    """The same promise with a real kill -9 of a daemon process, at the moment it would move the input; the next
    start resumes the job from work/, finds the image under the recorded stem and only moves the input."""
    config = make_config(tmp_path)
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    killed = run_once(config, "-c", KILL_WHEN_MOVING_THE_INPUT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [p.name for p in outputs(tmp_path)] == ["rocket.png"]
    assert list((tmp_path / "spool" / "work").rglob("rocket.jpg")), "the input is still in work/"
    again = run_once(config, "-m", "pipeline.cli", "once", "--config")
    assert again.returncode == 0, again.stderr[-2000:]
    events = [json.loads(line) for line in (again.stdout + again.stderr).splitlines() if line.startswith("{")]
    assert any(e["event"] == "resuming a job left in work/" for e in events)
    assert not any(e["event"] == "job started" for e in events), "the photo is not styled a second time"
    assert [p.name for p in outputs(tmp_path)] == ["rocket.png"], "no rocket-1.png"
    assert [p.name for p in (tmp_path / "spool" / "done").rglob("*.jpg")] == ["rocket.jpg"]
    assert not list((tmp_path / "spool" / "work").iterdir())


def test_out_of_memory_falls_back_for_the_job_and_fails_it_only_when_even_the_fallback_runs_out(
        tmp_path, engine, monkeypatch):
    """The daemon's side of the engine's out-of-memory path: an OOM on the device retries this job on the
    fallback device (the log records it); an OOM there too is transient, retried up to max_attempts, then failed."""
    monkeypatch.setattr(engine, "fallback_device", torch.device("cpu", 0))  # stands in for the fallback device
    monkeypatch.setattr(engine, "fault_hook", lambda device: oom() if str(device) == "cpu" else None)
    config = make_config(tmp_path, max_attempts=2, retry_backoff_seconds=0.1)
    shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / "rocket.jpg")
    assert Daemon(config, once=True, engine=engine).run() == 0
    record = json.loads((tmp_path / "outbox" / "starry" / "rocket.json").read_text())
    assert record["device"] == "cpu:0" and record["attempts"] == 1
    assert record["retries"] == ["out of memory on cpu; this job retried on cpu:0 (the next job starts on cpu again)"]

    monkeypatch.setattr(engine, "fault_hook", lambda device: oom())  # not even the fallback has room
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "coffee.jpg")
    assert Daemon(config, once=True, engine=engine).run() == 0
    [error] = [json.loads(p.read_text()) for p in (tmp_path / "spool" / "failed").glob("*.error.json")]
    assert error["file"] == "coffee.jpg" and error["code"] == "too_many_attempts" and error["attempts"] == 2
    assert "OutOfMemoryError" in error["message"] and (tmp_path / "spool" / "failed" / "coffee.jpg").exists()
    assert engine.device == torch.device("cpu"), "the engine itself stays on its device"


def oom() -> None:
    raise torch.OutOfMemoryError("out of memory (injected)")


def test_a_painting_replaced_under_its_name_is_decoded_anew_and_its_old_version_let_go(tmp_path):
    """rev8c finding 1: decodes were kept by (path, mtime) and never let go, so each version of a painting replaced
    under its name (a re-export, a sync tool) stayed for the process's life (+258 MB of RSS over 10 versions of a
    2400 px painting in a real daemon). Now one decode a path, replaced when the file's (mtime, size, inode)
    changes: also when a copy kept the mtime (`cp -p`, `rsync -t`)."""
    import gc
    import threading
    import weakref

    from PIL import Image

    from pipeline.daemon.jobs import JobLife
    from pipeline.engine import Settings

    config = make_config(tmp_path)
    life = JobLife(Spool(*(tmp_path / "spool" / n for n in ("inbox", "work", "done", "failed"))), lambda: config,
                   threading.Event())
    painting, settings, same_time = tmp_path / "mine.png", Settings(), 10**18
    versions = []
    for night in range(7):
        Image.new("RGB", (40 + night, 30), (30 * night, 0, 0)).save(tmp_path / ".new.png")
        os.replace(tmp_path / ".new.png", painting)  # a new inode, as an editor's save or a sync tool's
        os.utime(painting, ns=(same_time, same_time) if night >= 5 else (same_time + night, same_time + night))
        decoded = life.style(painting, settings)
        assert decoded.size == (40 + night, 30), "the replaced painting was not decoded anew"
        assert life.style(painting, settings) is decoded, "an unchanged painting is decoded once"
        versions.append(weakref.ref(decoded))
        del decoded
    with open(painting, "r+b") as handle:  # rewritten in place (same inode), its mtime put back: only the size says
        Image.new("RGB", (80, 30), "blue").save(handle, "PNG")
    os.utime(painting, ns=(same_time, same_time))
    assert life.style(painting, settings).size == (80, 30)
    gc.collect()
    assert [v() is not None for v in versions] == [False] * 7, "old versions of the painting are still held"


def test_a_record_that_cannot_be_saved_is_one_warning_naming_the_file_and_the_try_still_ends(tmp_path,
                                                                                              monkeypatch):
    """rev9d finding 11: "save the job's record, warn if it fails" was written three times (failures.py, pool.py,
    worker.py) with three scopes and three wordings; two caught OSError alone, so any other error (a record JSON
    cannot write) escaped a cancelled try before its outcome was out. Now JobLife.save_or_warn: any error is one
    warning naming the file and the error's type, and the try ends its way (the job in memory is the truth)."""
    from structlog.testing import capture_logs

    from daemon_helpers import claimed

    config, spool, life, job = claimed(tmp_path)

    def unwritable(job):
        raise TypeError("Object of type Plan is not JSON serializable")

    monkeypatch.setattr(spool, "save", unwritable)
    with capture_logs() as logs:
        life.cancelled(job, step=3)  # the run window closed mid-job: not its fault, the record says so
    assert [outcome.kind for outcome in life.drain()] == ["cancelled"]
    [warning] = [e for e in logs if e["event"].startswith("job record not saved")]
    assert warning["file"] == job.source and warning["job_id"] == job.id
    assert warning["error"] == "TypeError: Object of type Plan is not JSON serializable"
