"""Embedded ICC profiles: a photo or painting is read through its profile into sRGB, and outputs carry sRGB's.

An Adobe RGB (camera) or Display P3 (phone) photo's raw values taken for sRGB shift its colours: an Adobe RGB
green (40, 180, 60) is sRGB (0, 181, 42) (rev7a finding 8). No profiles exist on the box, so the wide-gamut one
is made here by hand: an ICC v2 matrix/TRC profile with Adobe RGB (1998)'s primaries (D50-adapted), gamma 2.2,
which LittleCMS (Pillow's ImageCms) reads; a grey one likewise (gamma 1.0: linear grey, far from sRGB's curve).
"""
from __future__ import annotations

import io
import struct
import subprocess
import sys

import numpy as np
from PIL import Image, ImageCms

from daemon_helpers import ROOT, SAMPLES, STYLES
from pipeline.engine import images

D50 = (0.9642, 1.0, 0.8249)
ADOBE = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))
SRGB = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))  # D50-adapted, as ICC has it


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def _curve(gamma: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)


def _desc(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return b"desc" + bytes(4) + struct.pack(">I", len(raw)) + raw + bytes(8) + bytes(3) + bytes(67)


def _srgb_curve() -> bytes:
    """sRGB's piecewise curve as an ICC parametric curve (type 3), as real sRGB profiles carry it."""
    return (b"para" + bytes(4) + struct.pack(">H", 3) + bytes(2)
            + b"".join(_s15(x) for x in (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)))


def icc_profile(space: bytes = b"RGB ", gamma: float = 2.2, primaries=ADOBE, name: str = "hand-made test profile",
                curve: bytes | None = None) -> bytes:
    """A minimal ICC v2 display profile: Adobe-RGB-like for ``RGB ``, a plain grey one for ``GRAY``."""
    if space == b"RGB ":
        colour = [(b"rXYZ", _xyz(*primaries[0])), (b"gXYZ", _xyz(*primaries[1])), (b"bXYZ", _xyz(*primaries[2]))]
        colour += [(tag, curve or _curve(gamma)) for tag in (b"rTRC", b"gTRC", b"bTRC")]
    else:
        colour = [(b"kTRC", _curve(gamma))]
    tags = [(b"desc", _desc(name)), (b"wtpt", _xyz(*D50)), *colour,
            (b"cprt", b"text" + bytes(4) + b"none\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        data += bytes(-(offset + len(data)) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + b"none" + bytes([2, 0x10, 0, 0]) + b"mntr" + space + b"XYZ "
              + bytes(12) + b"acsp" + bytes(28) + _s15(D50[0]) + _s15(D50[1]) + _s15(D50[2]) + bytes(48))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def _through_profile(img: Image.Image, icc: bytes, mode: str = "RGB") -> np.ndarray:
    """What LittleCMS makes of the picture's values read through ``icc``, in sRGB: the reference."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return np.asarray(ImageCms.profileToProfile(img.convert(mode), source, ImageCms.createProfile("sRGB"),
                                                outputMode="RGB"), dtype=float)


def _photo(px: int = 64) -> Image.Image:
    photo = Image.open(SAMPLES / "rocket.jpg").convert("RGB")
    photo.thumbnail((px, px))
    return photo


def test_a_wide_gamut_photo_is_read_into_srgb(tmp_path):
    icc = icc_profile()
    photo = _photo()
    photo.save(tmp_path / "adobe.jpg", quality=95, icc_profile=icc)
    raw = np.asarray(Image.open(tmp_path / "adobe.jpg").convert("RGB"), dtype=float)
    loaded = np.asarray(images.load(tmp_path / "adobe.jpg"), dtype=float)
    reference = _through_profile(Image.open(tmp_path / "adobe.jpg"), icc)
    assert np.abs(raw - reference).mean() > 3.0, "setup: the profile must move the colours"
    assert np.abs(loaded - reference).mean() < 0.5, "the photo's values were not read through its profile"
    green = Image.new("RGB", (4, 4), (40, 180, 60))
    green.info["icc_profile"] = icc
    assert images.to_8bit(green).getpixel((0, 0)) == (0, 181, 42)


def test_a_transparent_picture_keeps_its_alpha_and_a_grey_one_reads_its_grey_profile(tmp_path):
    icc = icc_profile()
    cutout = _photo().convert("RGBA")
    cutout.putalpha(Image.linear_gradient("L").resize(cutout.size))
    cutout.save(tmp_path / "cutout.png", icc_profile=icc)
    loaded = images.load(tmp_path / "cutout.png")
    assert loaded.mode == "RGBA"
    assert np.array_equal(np.asarray(loaded.getchannel("A")), np.asarray(cutout.getchannel("A")))
    reference = _through_profile(cutout, icc)
    assert np.abs(np.asarray(loaded.convert("RGB"), dtype=float) - reference).mean() < 0.5

    linear = icc_profile(b"GRAY", gamma=1.0)
    Image.new("L", (8, 8), 50).save(tmp_path / "grey.png", icc_profile=linear)
    grey = images.load(tmp_path / "grey.png")
    assert grey.mode == "RGB"
    assert np.abs(np.asarray(grey, dtype=float) - _through_profile(Image.open(tmp_path / "grey.png"), linear,
                                                                   "L")).max() <= 1
    assert grey.getpixel((0, 0))[0] > 100, "linear grey 50 is much lighter in sRGB"


def test_a_picture_without_a_profile_or_with_a_broken_one_keeps_its_values(tmp_path):
    photo = _photo()
    photo.save(tmp_path / "plain.png")
    assert np.array_equal(np.asarray(images.load(tmp_path / "plain.png")), np.asarray(photo))
    photo.save(tmp_path / "broken.png", icc_profile=b"not a profile" * 20)
    assert np.array_equal(np.asarray(images.load(tmp_path / "broken.png")), np.asarray(photo))
    photo.save(tmp_path / "misfit.png", icc_profile=icc_profile(b"GRAY"))  # a grey profile on a colour picture
    assert np.array_equal(np.asarray(images.load(tmp_path / "misfit.png")), np.asarray(photo))


def test_a_pillow_without_littlecms_still_reads_an_untagged_photo(tmp_path):
    """PIL.ImageCms (LittleCMS) is imported only for a tagged photo: a Pillow built without it could not import the
    image loader at all (daemon, report), every photo failing, when icc.py imported it at load (rev8d)."""
    _photo().save(tmp_path / "plain.png")
    code = ("import sys; sys.modules['PIL.ImageCms'] = None\n"  # import PIL.ImageCms now raises ImportError
            "from pipeline.engine import images\n"
            f"print(images.load({str(tmp_path / 'plain.png')!r}).size)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == str(_photo().size), done.stderr[-2000:]


def test_outputs_carry_the_same_srgb_profile_bytes(tmp_path):
    path = tmp_path / "adobe.jpg"
    _photo().save(path, quality=95, icc_profile=icc_profile())
    out = tmp_path / "out.png"
    subprocess.run([sys.executable, "-m", "pipeline.cli", "stylize", str(path), str(STYLES / "starry_night.jpg"),
                    "--size", "48", "--steps", "1", "-q", "-o", str(out)], cwd=ROOT, timeout=120, check=True,
                   env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    embedded = Image.open(out).info.get("icc_profile")
    assert embedded is not None and "sRGB" in ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(embedded)))
    assert embedded == images.srgb_profile(), "made in another process at another time: the same bytes"


def test_the_reports_thumbnail_reads_the_profile_too(tmp_path):
    """The report's thumbnail of the photo is the colours the worker read, not the raw values."""
    import base64

    from pipeline.report_pictures import thumbnail_uri

    Image.new("RGB", (64, 64), (40, 180, 60)).save(tmp_path / "green.png", icc_profile=icc_profile())
    uri = thumbnail_uri(tmp_path / "green.png", px=32)
    shown = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB").getpixel((16, 16))
    assert max(abs(a - b) for a, b in zip(shown, (0, 181, 42))) <= 3, shown  # JPEG q85 of one flat colour


def _converted_sizes(monkeypatch) -> list:
    """The sizes of the pictures LittleCMS is asked to convert (every ImageCms conversion goes through these)."""
    sizes = []
    for name in ("profileToProfile", "applyTransform"):
        plain = getattr(ImageCms, name)

        def counted(im, *args, _plain=plain, **kwargs):
            sizes.append(im.size)
            return _plain(im, *args, **kwargs)
        monkeypatch.setattr(ImageCms, name, counted)
    return sizes


def test_an_srgb_photo_is_read_as_it_is_and_an_adobe_one_is_still_converted(tmp_path, monkeypatch):
    """An sRGB-tagged photo (most cameras' and phones') was converted into sRGB for nothing: 4.15 against 1.10 s
    to load 24 MP (bench/icc_load.py). It is judged by what its profile does, not its name: our own outputs' LittleCMS profile, a
    nameless hand-made sRGB (sRGB's primaries and parametric curve) and an Adobe RGB profile named "sRGB"."""
    photo = Image.new("RGB", (96, 72))
    photo.paste(_photo(96), (0, 0))
    tagged = {"ours": images.srgb_profile(), "hand-made srgb": icc_profile(primaries=SRGB, curve=_srgb_curve()),
              "adobe named srgb": icc_profile(name="sRGB IEC61966-2.1"), "adobe": icc_profile()}
    for name, icc in tagged.items():
        photo.save(tmp_path / f"{name}.png", icc_profile=icc)
    sizes = _converted_sizes(monkeypatch)
    for name in ("ours", "hand-made srgb"):
        loaded = images.load(tmp_path / f"{name}.png")
        assert np.array_equal(np.asarray(loaded), np.asarray(photo)), name
        assert photo.size not in sizes, f"{name}: an sRGB photo was converted into sRGB"
    for name in ("adobe named srgb", "adobe"):
        sizes.clear()
        loaded = np.asarray(images.load(tmp_path / f"{name}.png"), dtype=float)
        assert sizes.count(photo.size) == 1, f"{name}: an Adobe RGB photo must be converted"
        assert np.abs(loaded - _through_profile(photo, tagged[name])).mean() < 0.5
        assert np.abs(loaded - np.asarray(photo, dtype=float)).mean() > 3.0
