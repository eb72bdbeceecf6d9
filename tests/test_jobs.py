"""A job's life (pipeline/daemon/jobs.py) in the paths no other test walks: a try that ends between writing the
output and moving the input, and ``after_success: delete``."""
from __future__ import annotations

import errno
import json
import shutil

from daemon_helpers import SAMPLES, make_config, outputs
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
