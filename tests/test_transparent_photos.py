"""rev12b: a photo with transparency styled to JPEG (the daemon's default format) showed the colours hidden under its
transparent pixels: a logo whose clear half hid red came out red there, unsaid (images.encode dropped the alpha for
a JPEG without laying the picture on anything; transfer.py styled the hidden colours). Now a photo with
transparency is laid on white before it is styled, as a painting is; a PNG or WebP output carries its alpha, a JPEG
is the picture on white, and the JSON log (input.transparency), the daemon's log and `stylize` say which."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from structlog.testing import capture_logs

from daemon_helpers import ROOT, STYLES, make_config
from pipeline.daemon.outputs import contact_sheet
from pipeline.engine import Settings, images
from pipeline.engine.prepared import prepare

pytestmark = pytest.mark.usefixtures("torch_threads")
WEAK = Settings(size=64, steps=1, style_strength=0.0001, early_stop_tol=0)  # the result stays close to the photo


def _logo(kind: str) -> Image.Image:
    """64x64: the left half transparent over a hidden colour (red, or black in grey), the right half opaque."""
    if kind == "RGBA":
        logo = np.zeros((64, 64, 4), np.uint8)
        logo[:, :32] = (255, 0, 0, 0)
        logo[:, 32:] = (0, 0, 255, 255)
        return Image.fromarray(logo, "RGBA")
    if kind == "LA":
        logo = np.zeros((64, 64, 2), np.uint8)
        logo[:, :32] = (0, 0)  # black, hidden
        logo[:, 32:] = (90, 255)
        return Image.fromarray(logo, "LA")
    indices = np.zeros((64, 64), np.uint8)  # palette index 0: red, made transparent by the tRNS chunk
    indices[:, 32:] = 1
    palette = Image.fromarray(indices, "P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.info["transparency"] = 0
    return palette


def _hidden_shows(rgb) -> bool:
    """Whether a pixel of the clear half shows the hidden red (or black), not the white it was laid on."""
    return min(rgb[:3]) < 150


@pytest.mark.parametrize("kind", ["RGBA", "LA", "P"])
def test_a_transparent_photo_styled_to_jpeg_is_white_where_it_is_clear(engine, tmp_path, kind):
    _logo(kind).save(tmp_path / "logo.png", **({"transparency": 0} if kind == "P" else {}))
    photo = images.load(tmp_path / "logo.png")
    assert photo.mode == "RGBA"
    result = engine.stylize(photo, [images.load(STYLES / "starry_night.jpg")], WEAK)
    out = Image.open(images.save(result.image, tmp_path / "out.jpg", alpha=result.alpha)).convert("RGB")
    assert not _hidden_shows(out.getpixel((5, 32))), out.getpixel((5, 32))
    assert out.getpixel((58, 32)) != out.getpixel((5, 32))  # the opaque half is still there


def test_a_png_output_keeps_the_alpha_over_the_picture_styled_on_white(engine, tmp_path):
    """One rule for both formats: styled on white; the PNG then carries the photo's own alpha, so a cut-out stays a
    cut-out, and what a viewer shows of it on a page is the JPEG's picture."""
    _logo("RGBA").save(tmp_path / "logo.png")
    result = engine.stylize(images.load(tmp_path / "logo.png"), [images.load(STYLES / "starry_night.jpg")], WEAK)
    out = Image.open(images.save(result.image, tmp_path / "out.png", alpha=result.alpha))
    assert out.mode == "RGBA" and out.getpixel((5, 32))[3] == 0 and out.getpixel((58, 32))[3] == 255
    assert not _hidden_shows(out.getpixel((5, 32)))


def test_the_working_copy_made_ahead_is_laid_on_white_too(engine, tmp_path):
    """The daemon's prefetch (engine/prepared.py) makes the first level's copy before the run: made with
    convert("RGB"), it would hold the hidden red where the run's own copy does not."""
    _logo("RGBA").save(tmp_path / "logo.png")
    photo = images.load(tmp_path / "logo.png")
    style = images.load(STYLES / "starry_night.jpg")
    ahead = engine.stylize(prepare(photo, WEAK), [style], WEAK).image
    assert np.array_equal(np.asarray(ahead), np.asarray(engine.stylize(photo, [style], WEAK).image))
    assert not _hidden_shows(ahead.getpixel((5, 32)))


def test_the_contact_sheet_shows_a_transparent_photo_on_white(tmp_path):
    """The sheet lays its three pictures "side by side on white": the photo's part showed the hidden red."""
    logo = _logo("RGBA")
    sheet = Image.open(contact_sheet(logo, logo, Image.new("RGB", (64, 64), "white"), tmp_path / "s.png", 64))
    assert not _hidden_shows(sheet.convert("RGB").getpixel((5, 32)))


@pytest.mark.parametrize("fmt, told", [("jpeg", "flattened"), ("png", "kept")])
def test_the_daemon_says_the_transparency_was_laid_on_white(tmp_path, engine, fmt, told):
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path, defaults={"format": fmt})
    _logo("RGBA").save(tmp_path / "inbox" / "logo.png")
    Image.new("RGB", (48, 32), (40, 120, 200)).save(tmp_path / "inbox" / "plain.png")
    with capture_logs() as logs:
        assert Daemon(config, once=True, engine=engine).run() == 0
    suffix = ".jpg" if fmt == "jpeg" else ".png"
    log = json.loads((tmp_path / "outbox" / "starry" / "logo.json").read_text())
    assert log["input"]["transparency"] == told
    assert json.loads((tmp_path / "outbox" / "starry" / "plain.json").read_text())["input"]["transparency"] is None
    said = [e for e in logs if e["event"] == "transparency laid on white"]
    assert [(e["file"], e["output"]) for e in said] == [("logo.png", told)]
    assert ("format: png" in said[0].get("fix", "")) == (fmt == "jpeg")
    out = Image.open(tmp_path / "outbox" / "starry" / f"logo{suffix}")
    assert out.mode == ("RGBA" if fmt == "png" else "RGB")
    assert not _hidden_shows(out.convert("RGB").getpixel((2, 16)))  # 32 px: the clear half is x < 16


def test_stylize_to_jpeg_notes_the_transparency_and_the_png_that_keeps_it(tmp_path):
    """The probe's run (rev12b): a weak style at 64 px, one step, as `stylize` does it."""
    _logo("RGBA").save(tmp_path / "logo.png")
    out = tmp_path / "out.jpg"
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "stylize", str(tmp_path / "logo.png"),
                          str(STYLES / "starry_night.jpg"), "--size", "64", "--steps", "1", "--style-strength",
                          "0.0001", "-q", "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert not _hidden_shows(Image.open(out).convert("RGB").getpixel((5, 32)))
    assert "has transparency: it was styled laid on white, and out.jpg holds none; -o out.png keeps it" in run.stderr
    [log] = tmp_path.glob("out*.json")
    assert json.loads(log.read_text())["input"]["transparency"] == "flattened"
