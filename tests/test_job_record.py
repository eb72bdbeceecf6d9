"""A photo in spool/work/ whose job.json cannot be used (rev12a, HIGH): torn by a failing disk or a power cut, empty,
or another version's record without a field this one needs, it was deleted at the next start (Spool.recover read
"no job" and rmtree'd the folder, photo and all), `once` said "done 0 failed 0" and `status` 0 in work/. Now such a
photo goes to failed/ as bad_job_record, told like any failure (never styled: its recipe folder and whether its
output was written went with the record); a record that cannot be read now (EIO, ESTALE on an NFS spool, EMFILE)
leaves the folder as it is, told once, and the photo is styled once a read works. Real `once` daemons, real data."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from daemon_helpers import ROOT, RUN_CLI, claimed, errors, outputs
from pipeline.daemon.spool_count import count_in_work

# every read of a job.json in the daemon fails as an NFS server gone would (the probe's chmod 0 is read by root)
EIO = """
import errno, pathlib
_read = pathlib.Path.read_text
def read_text(self, *a, **k):
    if self.name == "job.json":
        raise OSError(errno.EIO, "Input/output error", str(self))
    return _read(self, *a, **k)
pathlib.Path.read_text = read_text
"""


def left_by_a_dead_daemon(tmp_path, record: str):
    """rocket.jpg claimed last night, its daemon gone, its job.json made ``record``: (config, job, photo's bytes)."""
    config, spool, _life, job = claimed(tmp_path)
    path = job.dir / "job.json"
    text = path.read_text()
    if record == "torn":
        path.write_text(text[: len(text) // 2])
    elif record == "empty":
        path.write_text("")
    elif record == "missing_field":
        data = json.loads(text)
        del data["queued_at"]  # e.g. a record from a version that named it otherwise
        path.write_text(json.dumps(data))
    old = time.time() - 60  # past INCOMPLETE_GRACE
    os.utime(path, (old, old))
    os.utime(job.dir, (old, old))
    spool._unlock(job.dir)
    return config, job, job.input.read_bytes()


def once(tmp_path, patches: str = "") -> subprocess.CompletedProcess:
    command = ["-c", patches + RUN_CLI] if patches else ["-m", "pipeline.cli"]
    return subprocess.run([sys.executable, *command, "once", "--config", str(tmp_path / "config.yaml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def holding(tmp_path, photo: bytes) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()
                  and p.read_bytes() == photo)


@pytest.mark.parametrize("record", ["torn", "empty", "missing_field"])
def test_a_photo_whose_job_record_is_damaged_goes_to_failed_and_is_told(tmp_path, record):
    config, job, photo = left_by_a_dead_daemon(tmp_path, record)
    assert count_in_work(config.work) == 1, "status counts the folder holding the photo"
    proc = once(tmp_path)
    assert holding(tmp_path, photo) == ["spool/failed/rocket.jpg"], (
        f"the photo is kept in failed/ alone (once exited {proc.returncode}):\n{proc.stderr[-2000:]}")
    failure = errors(tmp_path)["rocket.jpg"]
    assert failure["code"] == "bad_job_record" and f"{job.id}/job.json" in failure["message"], failure
    assert "back to the inbox" in failure["fix"], failure
    assert outputs(tmp_path) == [] and list(config.work.iterdir()) == [], "never styled; the folder is gone"
    assert '"bad_job_record"' in proc.stdout + proc.stderr, "the log's job failed line names it"
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_job_record_that_cannot_be_read_now_is_left_and_the_photo_styled_once_it_can(tmp_path):
    config, job, photo = left_by_a_dead_daemon(tmp_path, "whole")
    first = once(tmp_path, EIO)
    assert holding(tmp_path, photo) == [f"spool/work/{job.id}/rocket.jpg"], (
        f"left as it was (once exited {first.returncode}):\n{first.stderr[-2000:]}")
    told = [line for line in (first.stdout + first.stderr).splitlines() if "cannot be read now" in line]
    assert len(told) == 1 and job.id in told[0] and "Input/output error" in told[0], told
    assert count_in_work(config.work) == 1, "status counts it while it waits"
    second = once(tmp_path)
    assert [p.name for p in outputs(tmp_path)] == ["rocket.png"], second.stderr[-2000:]
    assert holding(tmp_path, photo) == ["spool/done/rocket.jpg"] and errors(tmp_path) == {}


@pytest.mark.parametrize("note", ["{}", '{"file": null, "code": 7}', "[1, 2]", "{torn"])
def test_status_names_a_failure_note_that_lacks_its_fields(tmp_path, note, capsys):
    """rev12a F3: a hand-edited or damaged .error.json showed as `failed: None: None: None`."""
    from pipeline.cli import main
    from pipeline.daemon.config_build import check_folders
    from pipeline.daemon.config import load
    from daemon_helpers import make_config

    config = load(make_config(tmp_path))
    check_folders(config)
    (config.failed / "sunset.jpg").write_bytes(b"photo")
    (config.failed / "sunset.jpg.error.json").write_text(note)
    main(["status", "--config", str(tmp_path / "config.yaml")])
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("failed: ")]
    assert "None" not in line and line.startswith("  failed: sunset.jpg: unreadable: its note sunset.jpg.error.json "), line


def test_a_damaged_record_whose_output_was_written_says_it_was_styled(tmp_path):
    """Damaged after its landing began (the output and its log written, the photo not yet moved to done/): failed/,
    not styled a second time, and the fix says the output is there."""
    config, job, photo = left_by_a_dead_daemon(tmp_path, "torn")
    written = config.outbox / "starry"
    written.mkdir(parents=True)
    (written / "rocket.png").write_bytes(b"styled")
    (written / "rocket.json").write_text(json.dumps({"job_id": job.id}))
    proc = once(tmp_path)
    assert holding(tmp_path, photo) == ["spool/failed/rocket.jpg"], proc.stderr[-2000:]
    assert [p.name for p in outputs(tmp_path)] == ["rocket.png"], "no second output"
    assert errors(tmp_path)["rocket.jpg"]["fix"].startswith(f"It was styled already ({written / 'rocket.json'} names")


def test_a_damaged_records_photo_at_the_crash_limit_is_told_as_its_record(tmp_path):
    """rev12d: a rebuilt job (its record damaged) that a kill then fell on reached max_crashes, and begin refused it
    as crashed_daemon before the pre-checks looked at its record: failed/ with a fix pointing the wrong way."""
    from pipeline.daemon.jobs import JobFailure
    from pipeline.errors import Reason

    config, _, life, job = claimed(tmp_path)
    job.record_error, job.crashes = "is torn", config.max_crashes
    with pytest.raises(JobFailure) as refused:
        life.begin(job)
    assert refused.value.reason is Reason.BAD_JOB_RECORD, refused.value


def test_a_step_told_after_its_job_landed_saves_nothing(tmp_path):
    """rev12d: a pool's late progress event for the first step after a stop came after the landing had removed the
    job's folder; step_completed saved into a folder that was gone (a warning), as stopped_mid_step no longer does."""
    import shutil

    from structlog.testing import capture_logs

    _, _, life, job = claimed(tmp_path)
    job.running, job.stop_stepped = True, 0
    shutil.rmtree(job.dir)  # landed: its folder removed
    with capture_logs() as logs:
        life.step_completed(job)
    assert job.stepped == 1 and not job.dir.exists()
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == [], logs
