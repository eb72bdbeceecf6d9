"""rev12b: an iPhone's HEIC photo (its default format) got Pillow's generic message, "not an image Pillow can read.
Send a PNG, JPEG, WebP, TIFF or BMP file", where a camera RAW is named and told what to do. Now an HEIC, AVIF or
other HEIF picture Pillow cannot decode is named by its ISO-BMFF ftyp box, whatever its name, with what to do."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from daemon_helpers import ROOT, STYLES, errors, make_config
from pipeline.engine import images
from pipeline.errors import ImageError


def _heif(path: Path, major: bytes, *compatible: bytes) -> Path:
    """The first box of an HEIF file as a phone writes it (ftyp: size, major brand, minor version, compatible
    brands), then a body Pillow cannot read."""
    brands = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    path.write_bytes((8 + len(brands)).to_bytes(4, "big") + b"ftyp" + brands
                     + b"\x00\x00\x00\x08free" + bytes(4000))
    return path


@pytest.mark.parametrize("name, major, compatible", [
    ("IMG_0001.HEIC", b"heic", (b"mif1", b"heic")),  # an iPhone's
    ("IMG_0002.heic", b"mif1", (b"mif1", b"heic", b"miaf")),  # the container brand first, HEVC among the rest
    ("IMG_0003.jpg", b"heix", (b"mif1", b"heix")),  # an export or a cloud copy that kept a JPEG's name
])
def test_an_heic_photo_is_named_with_what_to_do(tmp_path, name, major, compatible):
    with pytest.raises(ImageError) as info:
        images.load(_heif(tmp_path / name, major, *compatible))
    assert info.value.code == "bad_image"
    assert info.value.problem == "an HEIC photo (an iPhone's own format), which Pillow cannot decode"
    assert info.value.fix == "Export it as JPEG, or set iPhone Settings > Camera > Formats > Most Compatible"


def test_an_avif_or_heif_pillow_cannot_decode_is_named_too(tmp_path):
    with pytest.raises(ImageError, match="an AVIF picture, which this installation's Pillow cannot decode"):
        images.load(_heif(tmp_path / "a.avif", b"avif", b"mif1", b"avif"))
    with pytest.raises(ImageError, match=r"an HEIF picture \(brands miaf, mif1\), which Pillow cannot decode"):
        images.load(_heif(tmp_path / "b.heif", b"mif1", b"mif1", b"miaf"))
    with pytest.raises(ImageError, match="not an image Pillow can read"):  # an ISO-BMFF of another kind: a video
        images.load(_heif(tmp_path / "c.mov", b"qt  ", b"qt  "))


def test_an_avif_this_pillow_decodes_is_read_as_any_photo(tmp_path):
    """Only a file Pillow failed to identify is looked at: an AVIF it decodes is no refusal."""
    buffer = io.BytesIO()
    try:
        Image.new("RGB", (32, 24), (200, 30, 30)).save(buffer, "AVIF")
    except (KeyError, OSError):
        pytest.skip("this Pillow has no AVIF codec")
    (tmp_path / "p.avif").write_bytes(buffer.getvalue())
    assert images.load(tmp_path / "p.avif").size == (32, 24)


def test_stylize_names_an_heic_before_torch_loads(tmp_path):
    heic = _heif(tmp_path / "IMG_0001.HEIC", b"heic", b"mif1", b"heic")
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "stylize", str(heic), str(STYLES / "starry_night.jpg"),
                          "-o", str(tmp_path / "o.png")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 2
    assert (f"{heic}: an HEIC photo (an iPhone's own format), which Pillow cannot decode" in run.stderr
            and "Settings > Camera > Formats > Most Compatible" in run.stderr), run.stderr
    assert not (tmp_path / "o.png").exists()


def test_the_daemon_fails_an_heic_with_its_own_fix(tmp_path):
    from pipeline.daemon.daemon import Daemon

    config = make_config(tmp_path)
    _heif(tmp_path / "inbox" / "IMG_0001.HEIC", b"heic", b"mif1", b"heic")
    assert Daemon(config, once=True).run() == 0
    [failed] = errors(tmp_path).values()
    assert failed["code"] == "bad_image" and "an HEIC photo" in failed["message"], failed
    assert "Most Compatible" in failed["fix"], failed
