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
    assert "skipped file: inbox/DSC_0002.nef: a camera RAW file, left in the inbox" in shown, shown
