"""Pictures whose metadata Pillow chokes on, though their pixels are whole (rev9c): a mistyped EXIF tag, a large
compressed PNG text chunk. The picture is styled as it is meant to look; the metadata is only metadata."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from structlog.testing import capture_logs

from daemon_helpers import errors, make_config, outputs
from pipeline.engine import images

pytestmark = pytest.mark.usefixtures("torch_threads")


def mistyped_exif(orientation: int) -> bytes:
    """A camera's EXIF block: Orientation, and XResolution written as ASCII text ('72') instead of a RATIONAL,
    as some phone apps and scanners' firmware do. Pillow reads it (as '72'), but cannot write it back."""
    entries = [(0x0112, 3, 1, struct.pack("<HH", orientation, 0)), (0x011A, 2, 4, b"72\x00\x00")]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHI", t, ty, c) + v for t, ty, c, v in entries)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def two_tone(size=(64, 32)) -> Image.Image:
    """Left half blue, right half red: which way up a picture is can be read from it."""
    img = Image.new("RGB", size, (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, size[0] // 2, size[1]))
    return img


def healthy_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("orientation", range(2, 9))
def test_a_mistyped_exif_tag_still_turns_the_photo_as_its_orientation_says(tmp_path, orientation):
    """The same pixels with a healthy EXIF and with a mistyped tag load alike: turned by Orientation."""
    two_tone().save(tmp_path / "bad.png", exif=mistyped_exif(orientation))
    two_tone().save(tmp_path / "good.png", exif=healthy_exif(orientation))
    bad, good = images.load(tmp_path / "bad.png"), images.load(tmp_path / "good.png")
    assert bad.size == good.size == ((32, 64) if orientation >= 5 else (64, 32))
    assert np.array_equal(np.asarray(bad), np.asarray(good))


def test_a_photo_with_a_mistyped_exif_tag_is_styled_upright(tmp_path, engine):
    """exif_transpose raised TypeError on the mistyped tag: the daemon took a healthy photo for a machine fault and
    retried it to too_many_attempts ("drop the file again", which fails the same way)."""
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path, max_attempts=2)
    two_tone().save(tmp_path / "inbox" / "IMG_0001.jpg", exif=mistyped_exif(6))
    assert Daemon(config, once=True, engine=engine).run() == 0
    failed = errors(tmp_path)
    assert failed == {}, json.dumps(failed, indent=1)
    [out] = outputs(tmp_path)
    assert Image.open(out).size == (16, 32), "turned upright: portrait"


def test_a_png_with_a_large_compressed_text_chunk_is_styled(tmp_path, engine):
    """A compressed text chunk (a diagram tool's embedded source, an AI tool's workflow) inflating past Pillow's
    1 MB a chunk raised ValueError at open: failed as damaged, "copy it again", which no copy fixes."""
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    info = PngImagePlugin.PngInfo()
    info.add_text("mxfile", "<mxGraphModel>" + "<mxCell id='n' value='box' style='rounded=1'/>" * 30_000
                  + "</mxGraphModel>", zip=True)  # 1.4 MB of XML, 9 KB on disk
    two_tone().save(tmp_path / "inbox" / "diagram.png", pnginfo=info)
    assert (tmp_path / "inbox" / "diagram.png").stat().st_size < 100_000
    assert Daemon(config, once=True, engine=engine).run() == 0
    assert errors(tmp_path) == {}, {k: (v["code"], v["message"], v["fix"]) for k, v in errors(tmp_path).items()}
    assert [p.name for p in outputs(tmp_path)] == ["diagram.png"]


def test_a_damaged_photo_with_exif_is_still_refused_as_damaged(tmp_path):
    """upright() catches only the EXIF rewrite: a truncated file's decode error is still the file's, named."""
    path = tmp_path / "cut.jpg"
    two_tone((256, 128)).save(path, exif=mistyped_exif(6))
    path.write_bytes(path.read_bytes()[:-400])
    with pytest.raises(images.ImageError, match="cut.jpg"):
        images.load(Path(path))


def test_a_multi_page_scan_says_that_only_its_first_page_was_styled(tmp_path, engine):
    """A scanner's multi-page TIFF (three prints in one file) gave one output, of page 1, and neither the JSON log
    nor the daemon's log said a word of pages 2 and 3 (load() decodes the first frame only)."""
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    pages = [two_tone(), two_tone().rotate(180), two_tone().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    pages[0].save(tmp_path / "inbox" / "scan.tif", save_all=True, append_images=pages[1:])
    two_tone().save(tmp_path / "inbox" / "single.tif")
    assert images.frames(images.load(tmp_path / "inbox" / "scan.tif")) == 3
    with capture_logs() as entries:  # not capfd: a logger an earlier test in this worker cached writes elsewhere
        assert Daemon(config, once=True, engine=engine).run() == 0
    assert sorted(p.name for p in outputs(tmp_path)) == ["scan.png", "single.png"], errors(tmp_path)
    logs = {name: json.loads((tmp_path / "outbox" / "starry" / f"{name}.json").read_text())
            for name in ("scan", "single")}
    assert logs["scan"]["input"]["frames"] == 3 and logs["single"]["input"]["frames"] == 1
    said = [e for e in entries if e["event"] == "only the first page is styled"]
    assert len(said) == 1 and said[0]["file"].endswith("scan.tif") and "split scan.tif" in said[0]["fix"], said
