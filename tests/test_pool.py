"""Issue 13, the daemon side: executor slots per device, batches filled from the queue, sheets off the worker."""
from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from daemon_helpers import ROOT, SAMPLES, make_config, outputs
from pipeline.daemon import config as config_module
from pipeline.daemon.config_build import check_folders
from pipeline.daemon import batching
from pipeline.daemon.batching import ANY, JobQueue, batch_key
from pipeline.daemon.pool import Pool
from pipeline.engine.images import fit_size
from pipeline.daemon.outputs import SHEET_HEIGHT, contact_sheet
from pipeline.daemon.sheets import SheetWriter
from pipeline.daemon.spool import Spool


def once(config: Path, timeout: float = 240) -> tuple[int, list[dict]]:
    """`style-pipeline once` in a subprocess: its exit status and its JSON log's events."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    events = []
    for line in proc.stdout.splitlines() + proc.stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.returncode, events


def test_two_slots_take_each_photo_exactly_once_and_sheets_stay_thumbnails(tmp_path):
    config = make_config(tmp_path, devices=["cpu", "cpu"], contact_sheet=True)
    photos = sorted(SAMPLES.glob("*.jpg"))
    for i in range(6):
        shutil.copy(photos[i % 3], tmp_path / "inbox" / f"p{i}.jpg")
    Image.open(photos[0]).resize((1600, 1600)).save(tmp_path / "inbox" / "big.jpg")  # its full-size sheet: 4800x1600
    _, events = once(config)
    names = [f"p{i}.jpg" for i in range(6)] + ["big.jpg"]
    done = collections.Counter(e["file"] for e in events if e.get("event") == "job done")
    assert done == collections.Counter(names), "each photo done exactly once"
    assert collections.Counter(e["file"] for e in events if e.get("event") == "claimed") == done
    assert {e["slot"] for e in events if e.get("event") == "job started"} == {0, 1}, "both slots ran jobs"
    assert len(outputs(tmp_path)) == 7
    assert sorted(p.name for p in (tmp_path / "spool" / "done").iterdir()) == sorted(names)
    assert not list((tmp_path / "inbox").glob("*.jpg"))
    sheets = sorted((tmp_path / "outbox").rglob("*.sheet.png"))
    assert len(sheets) == 7, "every sheet written before the daemon exited"
    for sheet in sheets:
        with Image.open(sheet) as img:
            assert img.height <= SHEET_HEIGHT and img.width <= 3 * 4 * SHEET_HEIGHT, (sheet.name, img.size)


def test_a_contact_sheet_is_a_thumbnail_whatever_the_photo(tmp_path):
    big = Image.new("RGB", (4000, 2600), "red")
    panorama = Image.new("RGB", (9000, 500), "blue")
    small = Image.new("RGB", (40, 30), "green")
    with Image.open(contact_sheet(big, panorama, small, tmp_path / "a.png")) as sheet:
        assert sheet.size == (round(4000 * 384 / 2600) + 4 * 384 + 40, 384)
    assert (tmp_path / "a.png").stat().st_size < 200_000


def test_the_sheet_writer_never_delays_the_caller_and_loses_nothing_at_close(tmp_path, monkeypatch):
    """submit only queues: the resize and the write are the writer thread's. Shown without a clock (a timed
    bound failed under load): every write is held until all five submits have returned."""
    from pipeline.daemon import sheets

    release, writer_threads = threading.Event(), set()
    real = sheets.outputs.contact_sheet

    def held(*args):
        writer_threads.add(threading.current_thread().name)
        if not release.is_set():
            assert threading.current_thread().name == "sheets", "a sheet written in the caller's thread"
            assert release.wait(60), "the writes were never released"
        return real(*args)

    monkeypatch.setattr(sheets.outputs, "contact_sheet", held)
    writer = SheetWriter()
    big = Image.new("RGB", (3000, 2000), "red")
    for i in range(5):
        writer.submit(big, big, big, tmp_path / f"s{i}.png")  # would block here if it wrote in this thread
    assert list(tmp_path.iterdir()) == [], "nothing written while the writes are held"
    release.set()
    writer.close(60)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"s{i}.png" for i in range(5)]
    assert writer_threads == {"sheets"}, "written by the writer thread, not the caller"
    writer.submit(big, big, big, tmp_path / "late.png")  # after close: written at once, not dropped
    assert (tmp_path / "late.png").is_file()


def _queued(tmp_path, names: dict[str, str], **overrides):
    """Claimed jobs from real files: {inbox path: sample}, and the config they were made under."""
    config_path = make_config(tmp_path, defaults={"size": 64}, **overrides)
    config = config_module.load(config_path)
    check_folders(config)
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    jobs = []
    for rel, sample in names.items():
        path = config.inbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / sample, path)
        jobs.append(spool.claim(path, "2026-01-01T00:00:00Z", None))
    return config, jobs


def test_a_batch_takes_the_queued_photos_of_its_recipe_and_shape_and_leaves_the_rest_in_order(tmp_path):
    config, jobs = _queued(tmp_path, {"a.jpg": "coffee.jpg", "b.jpg": "astronaut.jpg", "c.jpg": "rocket.jpg",
                                      "scream/d.jpg": "coffee.jpg", "e.jpg": "coffee.jpg", "f.jpg": "rocket.jpg"})
    queue = JobQueue(lambda job: batch_key(job, config))
    for job in jobs:
        queue.put(job)
    key = batch_key(jobs[0], config)
    assert key == ("starry", (64, 43)) == ("starry", fit_size((512, 341), 64))
    assert batch_key(jobs[2], config) == key, "rocket (512x342) works at coffee's 64x43: one batch"
    taken = queue.take(key, 2)
    assert [j.name for j in taken] == ["a.jpg", "c.jpg"]
    assert [queue.get_nowait().name for _ in range(queue.qsize())] == ["b.jpg", "d.jpg", "e.jpg", "f.jpg"]
    assert queue.take(ANY, 5) == [], "an empty queue gives nothing at once: no wait to fill a batch"
    assert queue.keys == {}, "a job's key leaves with it"


def test_a_pool_reads_each_queued_picture_once_and_takes_a_batch_by_its_stored_key(tmp_path, monkeypatch, engine):
    """Taking a batch used to reopen every queued picture's header, under the queue's lock, on every take."""
    config, jobs = _queued(tmp_path, {"a.jpg": "coffee.jpg", "b.jpg": "astronaut.jpg", "c.jpg": "rocket.jpg",
                                      "e.jpg": "coffee.jpg"}, batch=3)
    opened: list[str] = []
    header_size = batching.header_size
    monkeypatch.setattr(batching, "header_size", lambda job: opened.append(job.name) or header_size(job))
    pool = Pool([engine], Spool(config.inbox, config.work, config.done, config.failed), lambda: config,
                threading.Event())
    try:
        for job in jobs:
            pool.submit(job)
        assert sorted(opened) == ["a.jpg", "b.jpg", "c.jpg", "e.jpg"], "each picture's header read once, as queued"
        key = ("starry", (64, 43))
        assert [j.name for j in pool._jobs.take(key, 1)] == ["a.jpg"]
        assert [j.name for j in pool._jobs.take(key, 5)] == ["c.jpg", "e.jpg"]
        assert pool._jobs.take(key, 5) == []
        assert [j.name for j in pool._jobs.take(ANY, 5)] == ["b.jpg"]
        assert len(opened) == 4, "taking reopened no picture"
    finally:  # submit began preparing the queued photos ahead: the never-started pool's prefetch thread ends here
        pool.life.prefetch.close()  # (left running, it decoded rocket.jpg inside the next test's patches)


@pytest.mark.parametrize("text, message", [
    ("devices: [banana]", "devices.0: unknown device 'banana'"),
    ("devices: [cpu, auto]", "devices.1: auto names no one device"),
    ("devices: 2", "devices: must be auto, or a list of GPU numbers"),
    ("devices: []", "devices: must be auto, or a list"),
    ("batch: 0", "batch: must be auto or a whole number >= 1 (got 0)"),
    ("batch: lots", "batch: must be auto or a whole number >= 1 (got 'lots')"),
])
def test_bad_devices_and_batch_are_refused_with_the_line_and_the_fix(tmp_path, text, message):
    path = make_config(tmp_path)
    path.write_text(path.read_text() + text + "\n")
    with pytest.raises(config_module.ConfigError) as info:
        config_module.load(path)
    assert message in str(info.value), str(info.value)


def test_devices_and_batch_read(tmp_path):
    assert config_module.load(make_config(tmp_path, devices=[0, "cuda:1", "cpu"], batch=4)).devices == (
        "cuda:0", "cuda:1", "cpu")
    loaded = config_module.load(make_config(tmp_path, devices="auto", batch="auto"))
    assert loaded.devices is None and loaded.batch is None


def test_a_batch_is_filled_from_the_queue_and_an_odd_photo_runs_alone(tmp_path):
    config = make_config(tmp_path, batch=3)
    for i in range(4):  # coffee (512x341) and rocket (512x342) both work at 32x21: one recipe, one shape
        shutil.copy(SAMPLES / ("coffee.jpg" if i % 2 else "rocket.jpg"), tmp_path / "inbox" / f"p{i}.jpg")
    shutil.copy(SAMPLES / "astronaut.jpg", tmp_path / "inbox" / "square.jpg")  # 32x32: a shape of its own
    _, events = once(config)
    assert collections.Counter(e["file"] for e in events if e.get("event") == "job done") == collections.Counter(
        [f"p{i}.jpg" for i in range(4)] + ["square.jpg"]), "each photo done exactly once"
    records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "outbox").rglob("*.json")}
    sizes = collections.Counter(r.get("batch", 1) for r in records.values())
    assert records["square"].get("batch", 1) == 1, "no batch of its shape: it ran alone, without waiting for one"
    assert max(sizes) > 1, "photos queued behind a running one went through the network together"
    assert all(count % size == 0 and size <= 3 for size, count in sizes.items()), sizes


def test_a_photo_whose_batch_cannot_be_sized_runs_alone_with_a_warning(tmp_path, engine, monkeypatch, capsys,
                                                                       torch_threads):
    """On the H200 a sizing bug (memory.cuda_free) raised in _gather, before the engine: every photo of the run
    went to failed/ as too_many_attempts. Batching is only a speed-up, so a photo never fails for it."""
    from pipeline.daemon import pool as pool_module
    from pipeline.daemon.daemon import Daemon

    def broken(*args, **kwargs):
        raise RuntimeError("free memory unreadable")

    monkeypatch.setattr(pool_module, "batch_size", broken)
    config = make_config(tmp_path, batch=2)
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / name)
    daemon = Daemon(config, once=True, engine=engine)
    assert daemon.run() == 0
    assert isinstance(daemon.executor, Pool), "batch: 2 on the CPU runs through the pool's slots"
    assert sorted(p.name for p in (tmp_path / "spool" / "done").iterdir()) == ["a.jpg", "b.jpg"]
    assert not (tmp_path / "spool" / "failed").exists() or not list((tmp_path / "spool" / "failed").iterdir())
    assert len(outputs(tmp_path)) == 2
    captured = capsys.readouterr()
    warnings = [line for line in (captured.out + captured.err).splitlines() if "batch not sized" in line]
    assert warnings and "RuntimeError: free memory unreadable" in warnings[0], captured.err[-2000:]


def test_a_multi_level_auto_print_gets_no_batch_key(tmp_path, monkeypatch):
    """Such a photo runs the lone path (with its checkpoint) instead of a batch that would run it alone anyway."""
    from pipeline.engine import levels, shapes

    config, jobs = _queued(tmp_path, {"a.jpg": "coffee.jpg", "b.jpg": "rocket.jpg"})
    assert batch_key(jobs[0], config) == batch_key(jobs[1], config) is not None
    monkeypatch.setattr(levels, "SINGLE_MAX", 32)  # the 64 px working size is now a two-level auto print
    monkeypatch.setattr(levels, "COARSE_MAX", 48)
    monkeypatch.setattr(shapes, "MIN_SIDE", 16)  # keep its 32x21 coarse level
    assert batch_key(jobs[0], config) is None and batch_key(jobs[1], config) is None


def test_records_written_side_by_side_run_each_job_once_here_when_no_thread_can_be_started(monkeypatch):
    """Review finding: the side-by-side record writes used a thread pool, whose submit queues an item before it
    starts the thread; "can't start new thread" then escaped with the batch's made results in hand (or could run
    an item twice). Each item now runs exactly once, here where its thread cannot start, and a work's error is
    raised again in the caller as a loop would."""
    from pipeline.daemon.pool import side_by_side

    real_start, starts = threading.Thread.start, [0]

    def every_second_start_fails(self):
        starts[0] += 1
        if starts[0] % 2 == 0:
            raise RuntimeError("can't start new thread")
        return real_start(self)
    monkeypatch.setattr(threading.Thread, "start", every_second_start_fails)
    ran, lock = [], threading.Lock()

    def work(item):
        with lock:
            ran.append(item)
        if item == "bad":
            raise ValueError(item)
        return item.upper()
    assert side_by_side(work, ["a", "b", "c", "d", "e"], "records") == ["A", "B", "C", "D", "E"]
    assert sorted(ran) == ["a", "b", "c", "d", "e"]
    ran.clear()
    with pytest.raises(ValueError, match="bad"):
        side_by_side(work, ["a", "bad", "c"], "records")
    assert sorted(ran) == ["a", "bad", "c"], "the others still ran, once each"


def test_a_base_exception_in_a_side_by_side_thread_is_raised_again_in_the_caller():
    """rev6f B2: `one` caught Exception only: a SystemExit in a thread left its slot None with no error, which
    _gather reads as "its try ended": the job was released with no outcome. Now the caller raises it again."""
    from pipeline.daemon.pool import side_by_side

    def work(item):
        if item == 1:
            raise SystemExit("not an Exception")
        return item * 10
    with pytest.raises(SystemExit, match="not an Exception"):
        side_by_side(work, [0, 1, 2], "probe")


def test_a_record_that_cannot_be_saved_for_any_reason_does_not_lose_the_result_in_hand():
    """Review finding: _not_running caught OSError only; any other error saving the record escaped the slot after
    the batch's results were made, and lost them."""
    from types import SimpleNamespace

    from pipeline.daemon.failures import FailurePaths
    from pipeline.daemon.worker import Worker

    def save(job):
        raise ValueError("the record's JSON could not be made (a stand-in)")
    job = SimpleNamespace(running=True, id="20261128T000000-abcdef", source="a.jpg")
    life = FailurePaths()  # the job life's save_or_warn (rev9d finding 11), on a spool whose save raises
    life.spool = SimpleNamespace(save=save)
    Worker._not_running(SimpleNamespace(life=life), job)
    assert job.running is False


def test_a_preserve_color_recipe_gets_no_batch_key(tmp_path):
    """Each such photo has its own style targets (matched to its luminance), which a batch does not keep apart."""
    config, jobs = _queued(tmp_path, {"a.jpg": "coffee.jpg", "scream/b.jpg": "coffee.jpg"},
                           recipes={"scream": {"styles": ["the_scream.jpg"], "preserve_color": True}})
    assert config.recipes["scream"].settings.preserve_color
    assert batch_key(jobs[0], config) is not None and batch_key(jobs[1], config) is None


def test_status_shows_every_photo_the_slots_are_running(tmp_path):
    """With devices: [cpu, cpu] two photos run at once; status.json's current named the first slot's alone (the
    other only a number in in_work). Now current.running lists each, as Ray's does, and `status` shows a "now:"
    line for each (rev9e finding 6)."""
    from daemon_helpers import log_events, start, status_json, stop, wait_for
    from pipeline.daemon.status import render

    config = make_config(tmp_path, devices=["cpu", "cpu"], defaults={"steps": 3000})
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / name)
    proc = start(config)
    try:
        both = lambda: {job["file"] for job in (status_json(tmp_path).get("current") or {}).get("running", [])}
        wait_for(lambda: both() == {"a.jpg", "b.jpg"}, 90, proc, step=0.3)
        data = status_json(tmp_path)
    finally:
        stop(proc)
    assert {e["file"] for e in log_events(proc) if e.get("event") == "job started"} == {"a.jpg", "b.jpg"}
    now = [line for line in render(data).splitlines() if line.startswith("now: ")]
    assert sorted(line.split()[1] for line in now) == ["a.jpg", "b.jpg"], now
