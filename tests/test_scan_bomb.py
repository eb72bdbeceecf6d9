"""A progressive JPEG's scans are bounded before anything decodes (engine/jpeg_scans.py, rev12a): a "scan bomb",
its last scan repeated, cost a full pass a scan on the daemon's main loop (no watchdog ping for 50 s at 1,500
scans). Small bombs here (a 96 px grey picture, a few hundred scans): what is counted is decodes, never seconds."""
from __future__ import annotations

import io
import shutil
import struct

import pytest
from PIL import Image, ImageFile

from bench.jpeg_scans import scan_bomb
from daemon_helpers import SAMPLES, errors, make_config, outputs
from pipeline.engine import images, jpeg_scans
from pipeline.errors import ImageError, Reason

BOMB_SIDE = 96  # no photo or painting the tests use is 96x96 grey: a decode of that size is the bomb's
REPEATS = 300  # a grey progressive JPEG has 6 scans: 306 in all


@pytest.fixture
def decodes(monkeypatch) -> list[tuple]:
    """(size, mode) of each picture decoded (ImageFile.load: the settle check's, the worker's pre-check's)."""
    seen: list[tuple] = []
    real = ImageFile.ImageFile.load

    def load(self):
        seen.append((self.size, self.mode))
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return seen


def _with_exif_thumbnail(thumbnail: bytes, **save) -> bytes:
    """A photo whose EXIF (APP1) carries ``thumbnail`` as its IFD1 JPEG thumbnail, as cameras write it."""
    ifd1 = struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, 44) + struct.pack("<HHII", 0x0202, 4, 1,
                                                                                      len(thumbnail))
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<HI", 0, 14) + ifd1 + struct.pack("<I", 0)
    buf = io.BytesIO()
    Image.open(SAMPLES / "coffee.jpg").save(buf, "JPEG", exif=b"Exif\x00\x00" + tiff + thumbnail, **save)
    return buf.getvalue()


def test_a_scan_bomb_is_refused_before_it_is_decoded(tmp_path, decodes):
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(scan_bomb(REPEATS, BOMB_SIDE))
    with pytest.raises(ImageError) as err:
        images.load(bomb)
    assert err.value.reason == Reason.BAD_IMAGE and err.value.path == str(bomb)
    assert f"a JPEG with {REPEATS + 6} scans, over the limit of {jpeg_scans.MAX_SCANS}" in str(err.value)
    assert "baseline" in err.value.fix and str(bomb) in str(err.value)
    assert decodes == [], "nothing of it was decoded"


@pytest.mark.parametrize("mode, scans", [("L", 6), ("RGB", 10), ("CMYK", 18)])
@pytest.mark.parametrize("progressive", [True, False])
def test_good_progressive_and_baseline_jpegs_are_counted_and_load(tmp_path, mode, scans, progressive):
    photo = tmp_path / "photo.jpg"
    Image.open(SAMPLES / "coffee.jpg").convert(mode).save(photo, quality=90, progressive=progressive)
    assert jpeg_scans.scans(photo) == (scans if progressive else 1)
    assert images.load(photo).size == (512, 341)


def test_an_exif_thumbnails_scans_and_what_follows_the_picture_are_not_counted(tmp_path):
    """The walk skips each segment by its length and stops at EOI: a count of every 0xFFDA in the file refused this
    photo (the thumbnail's scans inside APP1, a motion photo's trailer after the picture)."""
    many = scan_bomb(jpeg_scans.MAX_SCANS, 16)  # over the cap alone, in places the decode never reads
    photo = tmp_path / "camera.jpg"
    photo.write_bytes(_with_exif_thumbnail(many, progressive=True) + many)
    assert photo.read_bytes().count(b"\xff\xda") > 2 * jpeg_scans.MAX_SCANS
    assert jpeg_scans.scans(photo) == 10
    with open(photo, "rb") as file:  # the settle check's way: an open file, its place kept
        file.seek(5)
        assert jpeg_scans.scans(file) == 10 and file.tell() == 5
    assert images.load(photo).size == (512, 341)


def test_a_scan_bomb_fails_in_the_daemon_without_a_decode_and_the_next_photo_is_styled(tmp_path, engine, decodes):
    """The settle check (main loop) and the worker's pre-check both decoded it in full, scan after scan; now neither
    does: it lands in failed/ with its reason and fix, and the photo dropped after it is styled."""
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path, max_attempts=3)
    (tmp_path / "inbox" / "bomb.jpg").write_bytes(scan_bomb(REPEATS, BOMB_SIDE))
    shutil.copy(SAMPLES / "coffee.jpg", tmp_path / "inbox" / "next.jpg")
    assert Daemon(config, once=True, engine=engine).run() == 0
    record = errors(tmp_path)["bomb.jpg"]
    assert record["code"] == "bad_image" and record["attempts"] == 1, record
    assert f"{REPEATS + 6} scans" in record["message"] and "baseline" in record["fix"], record
    assert (tmp_path / "spool" / "failed" / "bomb.jpg").read_bytes() == scan_bomb(REPEATS, BOMB_SIDE), "kept whole"
    assert [p.name for p in outputs(tmp_path)] == ["next.png"]
    assert ((BOMB_SIDE, BOMB_SIDE), "L") not in decodes, "the bomb was decoded"
    assert ((512, 341), "RGB") in decodes  # the spy saw the next photo's decodes
