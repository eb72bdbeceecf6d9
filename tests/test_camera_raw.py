"""rev11b finding 1: a camera RAW file was styled from its small preview, unsaid. NEF, DNG, CR2, ARW and most RAWs
are TIFFs whose first page is the camera's reduced-resolution preview (NewSubfileType 1): Pillow opened that page
and the engine upscaled a 160 px preview to the recipe's size, exit 0. A RAW+JPEG camera's card gave a blurry extra
result beside each photo. Now `stylize` refuses a RAW (by name, or by a preview first page), and the daemon never
claims one: it stays in the inbox, listed with the skipped folders, while its JPEG twin is styled."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, TiffImagePlugin

from daemon_helpers import SAMPLES, STYLES, errors, make_config, outputs, status_json
from pipeline.daemon.skipped import RAW_WHY
from pipeline.daemon.status import render
from pipeline.engine import images
from pipeline.errors import ImageError

ROOT = Path(__file__).resolve().parents[1]


def _raw(path: Path, preview: bool = True) -> Path:
    """A RAW as a NEF is laid out: a TIFF whose first page is a small preview (NewSubfileType 1), a camera's tags."""
    photo = Image.open(SAMPLES / "rocket.jpg").convert("RGB")
    photo.thumbnail((48, 48))
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[254] = 1 if preview else 0
    tags[271], tags[272] = "NIKON CORPORATION", "NIKON D850"
    photo.save(path, format="TIFF", tiffinfo=tags)
    return path


def test_stylize_refuses_a_raw_before_torch_loads(tmp_path):
    raw = _raw(tmp_path / "DSC_0001.NEF")
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "stylize", str(raw), str(STYLES / "starry_night.jpg"),
                          "--size", "32", "--steps", "1", "-q", "-o", str(tmp_path / "out.png")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 2, run.stderr
    assert "DSC_0001.NEF: a camera RAW file (.NEF)" in run.stderr
    assert "Export a JPEG or TIFF from your photo app" in run.stderr
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("name", ["IMG_0001.CR3", "x.dng", "a.arw"])
def test_a_raw_pillow_cannot_read_at_all_is_named_as_one(tmp_path, name):
    """A CR3 is no TIFF: it was "not an image Pillow can read. Send a PNG, JPEG ..." to a person who sent a photo."""
    path = tmp_path / name
    path.write_bytes(b"\x00\x00\x00\x18ftypcrx " + bytes(64))
    with pytest.raises(ImageError, match="a camera RAW file") as info:
        images.load(path)
    assert info.value.code == "bad_image" and info.value.fix.startswith("Export a JPEG or TIFF")


def test_a_raw_renamed_tif_is_refused_by_its_preview_page(tmp_path):
    with pytest.raises(ImageError, match=r"first page is a 48x\d+ reduced-resolution preview"):
        images.load(_raw(tmp_path / "export.tif"))
    assert images.load(_raw(tmp_path / "plain.tif", preview=False)).size[0] == 48  # a TIFF as a scanner writes one


def test_the_daemon_styles_the_jpeg_of_a_raw_pair_and_leaves_every_raw_in_the_inbox(tmp_path, engine,
                                                                                      torch_threads):
    """The pair's JPEG is styled, its RAW stays put with no failure and no notice; a RAW alone stays too, and the
    daemon's skipped list (status, the morning page) says why."""
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    inbox = tmp_path / "inbox"
    shutil.copy(SAMPLES / "rocket.jpg", inbox / "DSC_0001.JPG")
    _raw(inbox / "DSC_0001.NEF")
    _raw(inbox / "DSC_0002.nef")
    daemon = Daemon(config, once=True, engine=engine)
    assert daemon.run() == 0
    assert [p.name for p in outputs(tmp_path)] == ["DSC_0001.png"]
    assert errors(tmp_path) == {}
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["DSC_0001.NEF", "DSC_0002.nef"]
    assert set(daemon.skipped) == {"DSC_0001.NEF", "DSC_0002.nef"}
    status = status_json(tmp_path)
    assert {s.get("file") for s in status["skipped"]} == {"DSC_0001.NEF", "DSC_0002.nef"}
    shown = render(status)
    assert "skipped 2 files: inbox/DSC_0001.NEF, inbox/DSC_0002.nef: each a camera RAW file, left in the inbox" \
        in shown, shown


def test_a_night_of_raw_twins_is_one_warning_one_status_line_and_a_capped_list(tmp_path):
    """rev11c: a RAW+JPEG card leaves a RAW per photo in the inbox for good. Each was its own warning at every start
    (300 a start for one night of 300, growing nightly), its own entry in status.json (written every second) and its
    own line of `status`. Now one warning per why with a count, five names and a count in status.json, `status`
    and the morning page; the skipped folders, on the same path, are grouped the same way."""
    from structlog.testing import capture_logs

    from pipeline.daemon import status as status_module
    from pipeline.daemon.daemon import Daemon
    from pipeline.report_state import service_state

    inbox = tmp_path / "inbox"
    config = make_config(tmp_path)
    for i in range(300):
        (inbox / f"DSC_{i:04d}.NEF").write_bytes(b"II*\x00" + bytes(64))
    for folder in (".a", ".b", "x.jpg"):
        (inbox / folder).mkdir()
    daemon = Daemon(config, once=True)
    with capture_logs() as logs:
        daemon._rescan()
    warned = [e for e in logs if e["event"].startswith("skipped")]
    assert [(e["event"], e.get("count")) for e in warned] == [
        ("skipped folders in the inbox", 2), ("skipped files in the inbox", 300), ("skipped a folder in the inbox", None)]
    assert warned[1]["files"] == [f"DSC_{i:04d}.NEF" for i in range(5)] and "move the RAW files" in warned[1]["why"]
    with capture_logs() as logs:  # the next rescan: nothing new, nothing said; one more RAW, one warning
        daemon._rescan()
        (inbox / "DSC_0300.NEF").write_bytes(b"II*\x00" + bytes(64))
        daemon._rescan()
    assert [(e["event"], e.get("file")) for e in logs if e["event"].startswith("skipped")] == [
        ("skipped a file in the inbox", "DSC_0300.NEF")]

    snapshot = status_module.snapshot(daemon.reporter.facts())
    raws = [s for s in snapshot["skipped"] if "file" in s]
    assert [s["file"] for s in raws] == [f"DSC_{i:04d}.NEF" for i in range(5)] and {s["total"] for s in raws} == {301}
    assert sorted(s.get("folder") for s in snapshot["skipped"] if "folder" in s) == [".a", ".b", "x.jpg"]
    shown = render({**snapshot, "done": 0, "failed": 0}).splitlines()
    assert [line for line in shown if line.startswith("skipped")] == [
        "skipped 2 folders: inbox/.a, inbox/.b: each a hidden folder: nothing in it is processed; move its pictures "
        "into the inbox",
        "skipped 301 files: inbox/DSC_0000.NEF, inbox/DSC_0001.NEF, inbox/DSC_0002.NEF, inbox/DSC_0003.NEF, "
        f"inbox/DSC_0004.NEF and 296 more: each {RAW_WHY}",
        "skipped folder: inbox/x.jpg: a folder named like a picture, not a picture: move the picture itself into the "
        "inbox"]

    status_module.write(daemon.config.spool, snapshot)
    page = service_state({"inbox": inbox, "outbox": daemon.config.outbox, "spool": daemon.config.spool})
    assert "301 camera RAW files left in the inbox, not styled (export a JPEG or TIFF from your photo app, or move " \
           "them elsewhere): DSC_0000.NEF, DSC_0001.NEF, DSC_0002.NEF, DSC_0003.NEF, DSC_0004.NEF and 296 more." in page
    assert "3 inbox folders passed over: .a (a hidden folder: nothing in it is processed; move its pictures into the " \
           "inbox), .b (a hidden folder: nothing in it is processed; move its pictures into the inbox), x.jpg (a " \
           "folder named like a picture, not a picture: move the picture itself into the inbox)." in page, page
