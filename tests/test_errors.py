"""One error vocabulary: a problem is classified where it is found, and carries its reason and the field at fault."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.engine import Settings, images
from pipeline.errors import ImageError, Reason, SettingsError
from test_images import SAMPLES, _png_header


def test_a_picture_too_large_carries_its_reason_and_a_broken_one_its_own(tmp_path):
    """The daemon files these under too_large / bad_image from the reason, not by reading the message."""
    bomb, broken = tmp_path / "bomb.png", tmp_path / "broken.png"
    bomb.write_bytes(_png_header(100_000, 100_000))
    broken.write_text("not a picture\n" * 20)
    reasons = {}
    for path, limit in ((bomb, images.DEFAULT_MAX_PIXELS), (SAMPLES / "coffee.jpg", 512 * 340), (broken, 10**8)):
        with pytest.raises(ImageError) as info:
            images.load(path, max_pixels=limit)
        reasons[path.name] = info.value.reason
    assert reasons == {"bomb.png": Reason.TOO_LARGE, "coffee.jpg": Reason.TOO_LARGE, "broken.png": Reason.BAD_IMAGE}


@pytest.mark.parametrize("change, field", [({"size": 8}, "size"), ({"tv_weight": -1.0}, "tv_weight"),
                                           ({"log_every": 0}, "log_every"), ({"quality": 101}, "quality")])
def test_a_bad_setting_names_its_field_and_the_fix(change, field):
    with pytest.raises(SettingsError) as info:
        Settings(**change).validate()
    assert info.value.field == field and field in info.value.problem
    assert info.value.fix and isinstance(info.value, ValueError)  # callers that catch ValueError still do


def test_a_config_points_at_the_line_of_the_field_at_fault(tmp_path):
    """tv_weight: -1 used to be reported against content_weight (the message's first word)."""
    from test_daemon_parts import problems_of
    from daemon_helpers import STYLES

    path = tmp_path / "config.yaml"
    path.write_text(f"styles_dir: {STYLES}\ndefaults:\n  content_weight: 1.0\n  tv_weight: -1\n")
    assert any(p.startswith("config.yaml:4: defaults.tv_weight:") for p in problems_of(path)), problems_of(path)


def test_a_lost_lock_race_on_claim_is_a_named_error_and_the_photo_stays(tmp_path, monkeypatch):
    """rev7e finding 8: two daemons on one spool; the other's start-up recovery locks the job folder this one just
    made. That was a bare RuntimeError; now a SpoolLocked naming the folder and saying what happens to the photo."""
    from pipeline.daemon.spool import Spool
    from pipeline.errors import PipelineError, SpoolLocked

    folders = [tmp_path / name for name in ("inbox", "work", "done", "failed")]
    for folder in folders:
        folder.mkdir()
    ours, theirs = Spool(*folders), Spool(*folders)
    photo = folders[0] / "coffee.jpg"
    photo.write_bytes((SAMPLES / "coffee.jpg").read_bytes())
    real_lock = ours._lock

    def raced(folder):
        assert theirs._try_lock(folder)  # the other daemon's recover() got there first (a real flock)
        real_lock(folder)

    monkeypatch.setattr(ours, "_lock", raced)
    with pytest.raises(SpoolLocked) as said:
        ours.claim(photo, "2026-11-29T00:00:00Z")
    assert isinstance(said.value, PipelineError) and said.value.path.startswith(str(folders[1]))
    assert "locked by another process" in str(said.value) and "stays in the inbox" in said.value.fix
    assert photo.exists() and list(folders[1].iterdir()) == []  # nothing lost, no empty job folder left


def test_every_exception_class_is_in_the_one_vocabulary():
    """rev7e finding 8: StartupError, ConfigError, RayUnavailable and NonFinite were each defined in their own
    module. Every exception class now lives in pipeline/errors.py (importable by the engine too), except private
    loop control (optimize._Stop) and fsio's two OSError kinds, raised by the open itself and read by errno."""
    import ast
    import builtins

    root = Path(__file__).resolve().parent.parent / "pipeline"
    known = {n for n, v in vars(builtins).items()  # warnings are not errors: precision.RecordWarning stays
             if isinstance(v, type) and issubclass(v, BaseException) and not issubclass(v, Warning)}
    known |= {n.name for n in ast.parse((root / "errors.py").read_text()).body if isinstance(n, ast.ClassDef)}
    classes = [(p, n) for p in sorted(root.rglob("*.py")) if p.name != "errors.py"
               for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ClassDef)]
    outside, grew = {}, True
    while grew:  # a subclass of a subclass counts too
        grew = False
        for path, node in classes:
            bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
            if bases & known and node.name not in known:
                known.add(node.name)
                outside[node.name] = f"{path.relative_to(root.parent)}:{node.lineno}"
                grew = True
    allowed = {"_Stop": "pipeline/engine/optimize.py", "NotRegularFile": "pipeline/fsio.py",
               "FileBusy": "pipeline/fsio.py"}
    assert {name: where.split(":")[0] for name, where in outside.items()} == allowed, outside


def test_a_long_error_is_clipped_to_one_cap_in_the_record_and_in_failed(tmp_path):
    """rev7e finding 9: the cap on an exception's text was the literal 500 in three places; now errors.MESSAGE_CAP.
    A library error pages long (a tensor printed whole) is kept to the cap in job.json and failed/'s .error.json."""
    import json
    import threading

    from daemon_helpers import make_config
    from pipeline.daemon.config import load
    from pipeline.daemon.config_build import check_folders
    from pipeline.daemon.jobs import JobLife
    from pipeline.daemon.spool import Spool
    from pipeline.errors import MESSAGE_CAP

    config = load(make_config(tmp_path, max_attempts=1))
    check_folders(config)
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    (config.inbox / "cup.jpg").write_bytes((SAMPLES / "coffee.jpg").read_bytes())
    job = spool.claim(config.inbox / "cup.jpg", "2026-11-29T00:00:00Z")
    life = JobLife(spool, lambda: config, threading.Event())
    try:
        job.attempts = 1
        life.conclude(job, RuntimeError("tensor([" + "0.1234, " * 2000 + "])"))
    finally:
        life.prefetch.close()
    assert [o.kind for o in life.drain()] == ["failed"]
    assert len(job.last_error) == MESSAGE_CAP and job.last_error.startswith("RuntimeError: tensor([0.1234, ")
    error = json.loads((config.failed / "cup.jpg.error.json").read_text())
    assert error["code"] == "too_many_attempts" and error["message"].endswith(job.last_error)
    assert len(error["message"]) < MESSAGE_CAP + 40  # "failed 1 times; last error: " and the clipped text
