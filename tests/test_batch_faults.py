"""Faults around a batch (rev6a's review of the daemon): each photo gets one outcome, its own; a good photo is never
failed, stranded or charged for another's fault, and the main loop never waits on a photo. Pools on the CPU with
``batch: N`` (the CPU batches when told to) and real daemons in subprocesses; the real engine, tiny photos."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time

import pytest
import structlog
import structlog.testing

from daemon_helpers import (SAMPLES, STYLES, errors, log_events, make_config, outputs, start, status_json, stop,
                            wait_for, wait_ready)
from pipeline.daemon.batching import batch_key, header_size
from pipeline.daemon.config import load as load_config
from pipeline.daemon.config_build import check_folders
from pipeline.daemon.spool import Spool

pytestmark = pytest.mark.usefixtures("torch_threads")


@contextlib.contextmanager
def logs_with_context():
    """The log entries made meanwhile, with their bound context (job_id, file), which capture_logs leaves out."""
    before, capture = structlog.get_config(), structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        structlog.configure(**before)


# --- 1: a FIFO while batching ---------------------------------------------------------------------------------
def _keyed_in_time(job, config) -> list:
    """batch_key(job) in a thread: [the key] once it returns, [] while it still waits after 5 s."""
    found: list = []
    thread = threading.Thread(target=lambda: found.append(batch_key(job, config)), daemon=True)
    thread.start()
    thread.join(5)
    return found


def test_a_fifo_or_a_link_to_one_gets_no_batch_key_and_is_never_opened(tmp_path):
    """Queueing a job works out its batch key on the main loop's thread; a FIFO's header read waited for a writer
    forever. A FIFO, a link to one and a link to a photo: no key (each runs alone, to fail unread); a photo: its key."""
    config = load_config(make_config(tmp_path, batch=2))
    check_folders(config)
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    os.mkfifo(tmp_path / "pipe")
    for name, make in (("x.jpg", lambda p: os.mkfifo(p)), ("l.jpg", lambda p: os.symlink(tmp_path / "pipe", p)),
                       ("s.jpg", lambda p: os.symlink(SAMPLES / "coffee.jpg", p)),
                       ("a.jpg", lambda p: shutil.copy(SAMPLES / "coffee.jpg", p))):
        make(config.inbox / name)
        job = spool.claim(config.inbox / name, "2026-11-28T00:00:00Z", None)
        found = _keyed_in_time(job, config)
        assert found, f"{name}: the batch key is still waiting on the file after 5 s"
        assert (found[0] is None) == (name != "a.jpg"), (name, found)
    assert header_size(job) is not None


def test_a_fifo_dropped_while_batching_fails_alone_and_never_blocks_the_daemon(tmp_path):
    """A FIFO named like a photo (settle and the scan let it through, to fail in the worker unread), then a photo,
    with ``batch: 2``: the photo is written, the FIFO goes to failed/ as not_a_regular_file with a log line naming
    it, and SIGTERM stops the daemon cleanly (the main loop hung in open() before: nothing claimed or written)."""
    config = make_config(tmp_path, batch=2)
    inbox = tmp_path / "inbox"
    proc = start(config)
    try:
        wait_ready(proc)
        os.mkfifo(inbox / "x.jpg")
        time.sleep(1.0)
        shutil.copy(SAMPLES / "coffee.jpg", inbox / "a.jpg")
        wait_for(lambda: "a.png" in {p.name for p in outputs(tmp_path)} and "x.jpg" in errors(tmp_path), 40, proc)
    finally:
        assert stop(proc) == 0
    assert errors(tmp_path)["x.jpg"]["code"] == "not_a_regular_file"
    assert [e for e in log_events(proc) if e.get("event") == "job failed" and e.get("file") == "x.jpg"
            and e.get("reason") == "not_a_regular_file"], "one log line names the FIFO and why"
    assert not list((tmp_path / "spool" / "work").iterdir()), "nothing left behind"


# --- 2: a batch extra whose failure path fails ----------------------------------------------------------------
def test_an_extra_whose_failure_path_fails_waits_alone_and_its_batchmates_land(tmp_path, engine, monkeypatch):
    """a, b, c of one shape in one batch; b is truncated after its claim (its header reads, its decode fails: a
    pre-check failure) and its failure path fails (failed/ refuses b: EACCES, as for a service user). failed/ not
    writable is the machine's fault (folder_faults.py): b waits in work/ uncharged, its outcome a pause naming
    failed/ (a log line naming b); a and c are written; every job closed once. Before, b's open raised out of the
    batch: a, the good photo in hand, got the last resort and c was stranded, never closed. Handed back once failed/
    takes b (as the daemon's retry queue does when the pause lifts), b goes to failed/ once, for its own fault."""
    from test_batch_landing import _pool

    real_fail = Spool.fail
    refused = [True]

    def fail(self, job, *args, **kwargs):
        if job.name == "b.jpg" and refused[0]:
            raise PermissionError(13, "Permission denied", str(self.failed / job.name))
        return real_fail(self, job, *args, **kwargs)

    def truncate_b(jobs):
        b = next(job for job in jobs if job.name == "b.jpg")
        b.input.write_bytes(b.input.read_bytes()[: b.input.stat().st_size // 3])

    monkeypatch.setattr(Spool, "fail", fail)
    with logs_with_context() as logs:
        pool, closed = _pool(tmp_path, engine, monkeypatch, dict.fromkeys(("a.jpg", "b.jpg", "c.jpg"), "coffee.jpg"),
                             batch=3, edit=truncate_b)
        try:
            wait_for(lambda: len(closed) >= 3, 30)
            found = list(pool.poll())
            outcomes = sorted((o.job.name, o.kind) for o in found)
            assert outcomes == [("a.jpg", "done"), ("b.jpg", "paused"), ("c.jpg", "done")], outcomes
            b = next(o for o in found if o.job.name == "b.jpg")
            assert b.retry_at is not None and b.disk_full == str(tmp_path / "spool" / "failed"), b
            assert b.fault.code == "permission_denied" and str(tmp_path / "spool" / "failed") in b.fault.fix
            assert sorted(p.name for p in outputs(tmp_path)) == ["a.png", "c.png"] and errors(tmp_path) == {}
            assert len(closed) == 3 and pool.progress().open_jobs == 0 and pool.slots[0].extra == []
            assert [e for e in logs if e["event"].startswith("a folder cannot be written: job kept in work/")
                    and e.get("file") == "b.jpg"]
            kept = list((tmp_path / "spool" / "work").glob("*/b.jpg"))
            assert kept and json.loads((kept[0].parent / "job.json").read_text())["attempts"] == 0, "uncharged"
            refused[0] = False  # failed/ takes writes again: the daemon hands b back
            pool.submit(b.job)
            wait_for(lambda: "b.jpg" in errors(tmp_path), 30)
            wait_for(lambda: len(closed) >= 4, 60)
        finally:
            pool.close(10)
    assert [o.kind for o in pool.poll()] == ["failed"]
    assert errors(tmp_path)["b.jpg"]["code"] == "bad_image", errors(tmp_path)["b.jpg"]
    assert sorted(p.name for p in outputs(tmp_path)) == ["a.png", "c.png"]
    assert not list((tmp_path / "spool" / "work").iterdir()), "nothing left in work/"


@pytest.mark.skipif(not (os.geteuid() == 0 and shutil.which("setpriv")), reason="needs root and setpriv")
def test_a_typod_folder_in_a_batch_with_failed_unwritable_strands_nothing(tmp_path):
    """A real daemon, ``batch: 3``, failed/ not writable by it (root without its file powers): inbox/stary/b.jpg
    (a typo'd recipe folder gets the default recipe's batch key) joins a's batch, fails unknown_recipe, and cannot
    be moved to failed/: the machine's fault (folder_faults.py), so b waits in work/ uncharged and claiming pauses,
    status naming failed/; a and c are written once. failed/ made writable again, with no restart, b goes to failed/
    there once, as unknown_recipe, and nothing is written twice or left in work/. (Before the folder pause, b was
    held in work/ until the next start.)"""
    from test_daemon_faults import NO_ROOT_POWERS

    config = make_config(tmp_path, batch=3)
    proc = start(config, prefix=NO_ROOT_POWERS)
    inbox, failed = tmp_path / "inbox", tmp_path / "spool" / "failed"
    try:
        wait_ready(proc)
        os.chmod(failed, 0o555)
        (inbox / "scream" / "w.yaml").write_text("steps: 60\n")  # w keeps the slot busy while a, c, b queue
        shutil.copy(SAMPLES / "rocket.jpg", inbox / "scream" / "w.jpg")
        wait_for(lambda: any(e.get("event") == "job started" for e in log_events(proc)), 60, proc)
        (inbox / "stary").mkdir()
        for names in (("a.jpg", "c.jpg"), ("stary/b.jpg",)):  # claimed in this order: a in hand, c and b its extras
            for name in names:
                shutil.copy(SAMPLES / "coffee.jpg", inbox / name)
            wait_for(lambda: set(names) <= {e.get("file") for e in log_events(proc) if e.get("event") == "claimed"},
                     10, proc)
        wait_for(lambda: {"a.png", "c.png"} <= {p.name for p in outputs(tmp_path)}, 60, proc)
        state = wait_for(lambda: (s := status_json(tmp_path).get("state", "")).startswith("paused:") and s, 60, proc)
        assert f"write access to {failed}" in state, state
        assert errors(tmp_path) == {} and list((tmp_path / "spool" / "work").glob("*/b.jpg")), "b waits in work/"
        os.chmod(failed, 0o755)  # the fix; nobody touches the daemon
        wait_for(lambda: "b.jpg" in errors(tmp_path), 30, proc)
        wait_for(lambda: status_json(tmp_path).get("state") == "running", 60, proc)
    finally:
        os.chmod(failed, 0o755)
        assert stop(proc) == 0
    events = [(e.get("event"), e.get("file"), e.get("batch")) for e in log_events(proc)]
    paused = events.index(("a folder cannot be written: job kept in work/, claiming paused until it can",
                           "stary/b.jpg", None))
    claimed = [e["file"] for e in log_events(proc) if e.get("event") == "claimed"]
    assert claimed == ["scream/w.jpg", "a.jpg", "c.jpg", "stary/b.jpg"], claimed
    assert events.index(("claimed", "stary/b.jpg", None)) < events.index(("job done", "scream/w.jpg", None)), \
        "b was queued before the slot took a: taken into a's batch"
    assert paused < events.index(("job started", "a.jpg", 2)), "b set aside while its batch was gathered"
    assert ("job started", "c.jpg", 2) in events
    assert [e for e in events if e[0] == "job failed" and e[1] == "stary/b.jpg"] == [("job failed", "stary/b.jpg",
                                                                                        None)], "failed once"
    assert not [e for e in events if e[0].startswith("cannot move the file to failed/")]
    assert errors(tmp_path)["b.jpg"]["code"] == "unknown_recipe"
    assert sorted(p.name for p in outputs(tmp_path)) == ["a.png", "c.png", "w.png"], "each written once"
    assert not list((tmp_path / "spool" / "work").iterdir())


# --- 4: a prefetch thread that cannot start -------------------------------------------------------------------
@pytest.mark.parametrize("batch", [None, 2])
def test_a_prefetch_thread_that_cannot_start_fails_no_photo(tmp_path, engine, monkeypatch, batch):
    """"can't start new thread" as the prefetcher starts its thread (the box out of threads), for the lone worker
    and a batching pool: submit, the main loop's call, returns (it raised, and the main loop logged a claimed photo
    as 'cannot claim this file'); the photo in hand is written, not sent to failed/ by the slot's last resort
    (prefetching is only a speed-up); a warning says the photos are not prepared ahead."""
    from pipeline.daemon.pool import Pool
    from pipeline.daemon.worker import Worker
    from test_pool import _queued

    real_start = threading.Thread.start

    def start_thread(self):
        if self.name.startswith("prefetch"):
            raise RuntimeError("can't start new thread")
        return real_start(self)

    config, jobs = _queued(tmp_path, {"a.jpg": "coffee.jpg", "b.jpg": "rocket.jpg"}, batch=batch)
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    executor = (Pool([engine], spool, lambda: config, threading.Event()) if batch
                else Worker(engine, spool, lambda: config, threading.Event()))
    monkeypatch.setattr(threading.Thread, "start", start_thread)
    with logs_with_context() as logs:
        for job in jobs:
            executor.submit(job)
        executor.start()
        found = []
        wait_for(lambda: found.extend(executor.poll()) or len(found) >= 2, 60)
        executor.close(10)
    assert errors(tmp_path) == {}, "a good photo failed because a prefetch thread could not start"
    assert sorted((o.job.name, o.kind) for o in found) == [("a.jpg", "done"), ("b.jpg", "done")]
    assert sorted(p.name for p in outputs(tmp_path)) == ["a.png", "b.png"]
    assert [e for e in logs if e["event"].startswith("photos not prepared ahead")]


# --- 5: out of host memory ------------------------------------------------------------------------------------
HOST_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 10000000000000 bytes. Error code 12")  # torch's words (the real one: the test below)


def _raise_host_oom_from(module: str, times: int = 10**9):
    """An engine fault_hook raising the CPU allocator's error where a run starts, when called from ``module``."""
    import sys

    raised = []

    def hook(device):
        if sys._getframe(1).f_code.co_filename.endswith(module) and len(raised) < times:
            raised.append(device)
            raise RuntimeError(HOST_OOM)
    return hook


def test_out_of_memory_knows_the_gpus_and_the_hosts():
    """torch's CPU allocator raises a plain RuntimeError (a 4 PiB tensor: past any address space, overcommit or
    not); numpy's (and Pillow's) a MemoryError (rev6c finding 2: a batch's working copies failed every photo);
    the GPU's is torch.OutOfMemoryError, or a CUDA call's error (torch.AcceleratorError, a RuntimeError) in
    torch's words. Any other error is no out of memory."""
    import numpy as np
    import torch

    from pipeline.engine.device import out_of_memory

    with pytest.raises(RuntimeError) as caught:
        torch.empty(2**50)
    assert out_of_memory(caught.value), str(caught.value)
    with pytest.raises(MemoryError) as caught:
        np.ones(2**60, dtype=np.uint8)
    assert out_of_memory(caught.value), f"{type(caught.value).__name__}: {caught.value}"
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory")) and out_of_memory(RuntimeError(HOST_OOM))
    for words in ("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other "
                  "API call", "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"):
        assert out_of_memory(torch.AcceleratorError(words)) and out_of_memory(RuntimeError(words)), words
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not out_of_memory(torch.AcceleratorError("CUDA error: an illegal memory access was encountered"))


def test_a_batch_out_of_host_memory_runs_each_photo_alone(engine, monkeypatch):
    """The batch runs out of host memory (``batch: N`` on a CPU box; host RAM on a GPU box): each photo then runs
    alone, as after a CUDA out of memory; before, the error left stylize_batch and the slot failed every photo."""
    from PIL import Image

    from pipeline.engine import Settings
    from pipeline.engine.result import Result

    monkeypatch.setattr(engine, "fault_hook", _raise_host_oom_from("batch.py"))
    photos = [Image.open(SAMPLES / name).convert("RGB") for name in ("coffee.jpg", "coffee.jpg")]
    style = Image.open(STYLES / "starry_night.jpg").convert("RGB")
    results = engine.stylize_batch(photos, [style], Settings(size=32, steps=2, early_stop_tol=0))
    assert len(results) == 2 and all(isinstance(r, Result) and r.steps == 2 for r in results), results


def test_a_batch_out_of_host_memory_in_numpy_runs_each_photo_alone(engine, monkeypatch):
    """numpy's out of host memory (a MemoryError, as images.to_bytes or a Pillow resize in a batch raise it):
    each photo then runs alone; before, it left stylize_batch and the slot failed every photo (rev6c finding 2)."""
    import sys

    import numpy as np
    from PIL import Image

    from pipeline.engine import Settings
    from pipeline.engine.result import Result

    with pytest.raises(MemoryError) as caught:
        np.ones(2**60, dtype=np.uint8)
    raised = []

    def hook(device):
        if sys._getframe(1).f_code.co_filename.endswith("batch.py") and not raised:
            raised.append(device)
            raise caught.value

    monkeypatch.setattr(engine, "fault_hook", hook)
    photos = [Image.open(SAMPLES / "coffee.jpg").convert("RGB")] * 2
    style = Image.open(STYLES / "starry_night.jpg").convert("RGB")
    results = engine.stylize_batch(photos, [style], Settings(size=32, steps=2, early_stop_tol=0))
    assert raised and all(isinstance(r, Result) and r.steps == 2 for r in results), results


def test_a_cpu_engines_lone_run_out_of_host_memory_retries_smaller(engine, monkeypatch):
    """A real ``device: cpu`` engine (fallback cpu, the engine's own device) treats the host's out of memory as
    a GPU engine its own: retried at 3/4 the size above 256 px. Before (rev6c finding 1), the fallback being the
    device itself raised it at once, and the daemon retried the same size until too_many_attempts. At 256 px or
    under there is nowhere left to go (the fallback is itself): the error is raised. Any other error as before."""
    import torch
    from PIL import Image

    from pipeline.engine import Settings

    assert engine.device == engine.fallback_device == torch.device("cpu")
    monkeypatch.setattr(engine, "fault_hook", _raise_host_oom_from("transfer.py", times=1))
    photo = Image.open(SAMPLES / "coffee.jpg").convert("RGB")
    style = Image.open(STYLES / "starry_night.jpg").convert("RGB")
    engine.cache[("held", "by", "an earlier run")] = None  # cached style targets: host memory on a CPU engine
    result = engine.stylize(photo, [style], Settings(size=260, steps=1, early_stop_tol=0))
    assert result.retries == ["out of memory at 260 px on cpu; retried at 195 px"], result.retries
    assert ("held", "by", "an earlier run") not in engine.cache  # let go before the retry (rev6d: CUDA's only)
    assert result.device == "cpu" and max(result.image.size) == 195
    monkeypatch.setattr(engine, "fault_hook", _raise_host_oom_from("transfer.py"))
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        engine.stylize(photo, [style], Settings(size=260, steps=1, early_stop_tol=0))  # 260, 195, then raised
    monkeypatch.setattr(engine, "fault_hook", lambda device: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        engine.stylize(photo, [style], Settings(size=260, steps=1, early_stop_tol=0))


# --- 3: a kill during a batch ---------------------------------------------------------------------------------
POISON = """
import os, signal, time
from pipeline.daemon import worker as _worker

_on_step = _worker.Worker._on_step


def _dies_at_b(self, job, plan):  # b.jpg kills the daemon at its first step (the OOM killer), batched or alone
    if job.name == "b.jpg":
        return lambda info: os.kill(os.getpid(), signal.SIGKILL)
    step = _on_step(self, job, plan)
    if job.name != "w.jpg":
        return step
    deadline = time.monotonic() + 60  # one for all of w's steps, not 60 s at each

    def held(info):  # w's steps wait (60 s in all) until a, b and c are claimed: its 30 steps alone were the
        # time they had to queue as one batch, on a loaded box perhaps too short
        while len(list(self.spool.work.glob("*/[abc].jpg"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        return step(info)
    return held


_worker.Worker._on_step = _dies_at_b
"""


def test_a_poison_photo_in_a_batch_fails_alone_and_its_batchmates_are_written(tmp_path):
    """a, b, c in one batch (``batch: 3``, ``max_crashes: 1``); b kills the daemon whenever it runs. The kill during
    the batch is no photo's own crash (each record says it ran in a batch: batch_crashes), it only sends each to run
    alone; the second kill is b's alone: b fails as crashed_daemon naming itself, a and c are written once. Before,
    the batch's kill charged each a crash: at max_crashes: 1 all three went to failed/ as crashed_daemon."""
    config = make_config(tmp_path, batch=3, max_crashes=1)
    inbox = tmp_path / "inbox"
    runs = [start(config, patches=POISON)]
    try:
        wait_ready(runs[0])
        (inbox / "w.yaml").write_text("steps: 30\n")  # w keeps the slot busy while a, b, c queue: one batch of 3
        shutil.copy(SAMPLES / "rocket.jpg", inbox / "w.jpg")
        wait_for(lambda: any(e.get("event") == "job started" for e in log_events(runs[0])), 60, runs[0])
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            shutil.copy(SAMPLES / "coffee.jpg", inbox / name)
        assert runs[0].wait(120) == -9, "b killed the daemon in its batch"
    finally:  # a daemon b did not kill (or a failure before) is not left running into the next tests
        if runs[0].poll() is None:
            runs[0].kill()
            runs[0].wait()
    runs.append(start(config, patches=POISON))
    try:
        wait_for(lambda: runs[1].poll() is not None or len(errors(tmp_path)) >= 3, 120)
    finally:
        if runs[1].poll() is None:
            stop(runs[1])
    assert runs[1].returncode == -9, f"b killed the daemon when its turn came, alone; failed: {errors(tmp_path)}"
    proc = start(config, patches=POISON)
    try:
        wait_for(lambda: len(outputs(tmp_path)) + len(errors(tmp_path)) == 4, 60, proc)
    finally:
        assert stop(proc) == 0
    started = [[(e["file"], e.get("batch")) for e in log_events(p) if e.get("event") == "job started"]
               for p in (*runs, proc)]
    assert started[0] == [("w.jpg", None), ("a.jpg", 3), ("b.jpg", 3), ("c.jpg", 3)], started
    assert ("b.jpg", None) in started[1] and all(batch is None for run in started[1:] for _, batch in run), started
    assert ("b.jpg", None) not in started[2], "b, at max_crashes, failed before it ran"
    assert {name: e["code"] for name, e in errors(tmp_path).items()} == {"b.jpg": "crashed_daemon"}
    assert "b.jpg" in errors(tmp_path)["b.jpg"]["fix"]
    assert [e for e in log_events(proc) if e.get("event") == "job failed" and e.get("file") == "b.jpg"]
    assert sorted(p.name for p in outputs(tmp_path)) == ["a.png", "c.png", "w.png"], "each written once"
    for name in "ac":  # the batch's kill noted apart, never counted toward max_crashes
        record = json.loads((tmp_path / "outbox" / "starry" / f"{name}.json").read_text())
        assert (record["crashes"], record["batch_crashes"]) == (0, 1), record
    assert (errors(tmp_path)["b.jpg"]["crashes"], errors(tmp_path)["b.jpg"]["batch_crashes"]) == (1, 1)
    assert not list((tmp_path / "spool" / "work").iterdir())
