"""rev7g finding 1: images.opened checked the header's size only, and with Pillow's own limit off an Apple icon
(.icns), whose header says 256x256, could carry a PNG of any size that Pillow decoded whole in load() (and in the
daemon's settle check, on the main loop) before raising a bare ValueError: a 56 KB file grew the process 62 MB
under a 1 MP limit. Icon containers are now refused before anything is decoded, as an ImageError naming the file."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline.engine import images
from pipeline.errors import ImageError

ROOT = Path(__file__).resolve().parents[1]


def _icns(path: Path, side: int) -> None:
    """An .icns whose one entry says 256x256 and holds a side x side PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 30)).save(buffer, "PNG")
    png = buffer.getvalue()
    entry = b"ic08" + struct.pack(">I", 8 + len(png)) + png
    path.write_bytes(b"icns" + struct.pack(">I", 8 + len(entry)) + entry)


CHILD = r"""
import sys
sys.path.insert(0, sys.argv[3])
from pipeline.engine import images
from pipeline.daemon import settle
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
base = hwm()
if sys.argv[2] == "load":
    try:
        images.load(sys.argv[1], max_pixels=1_000_000)
    except Exception as exc:
        print("raised", type(exc).__name__)
else:
    with open(sys.argv[1], "rb") as f:
        print("decodes", settle.decodes(f, 1_000_000))
print("MB", (hwm() - base) / 1024)
"""


@pytest.mark.parametrize("where", ["load", "settle"])
def test_an_icon_holding_a_huge_png_is_refused_before_it_is_decoded(tmp_path, where):
    path = tmp_path / "holiday.icns"
    side = 4000  # 16 MP inside, 48 MB decoded, against a max_pixels of 1,000,000 (the header says 65,536)
    _icns(path, side)
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), where, str(ROOT)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    print(f"\n{where}: file {path.stat().st_size:,} bytes; {out.stdout.strip()}")
    grew = float(out.stdout.split("MB")[-1])
    assert grew < 20, (f"{where}: a {path.stat().st_size:,}-byte .icns under max_pixels 1,000,000 made the process "
                       f"grow {grew:.0f} MB: its inner {side}x{side} PNG was decoded whole")


def test_an_icon_holding_a_huge_png_fails_as_an_image_error(tmp_path):
    path = tmp_path / "holiday.icns"
    _icns(path, 1200)
    with pytest.raises(ImageError) as caught:  # a bare ValueError escapes load today
        images.load(path, max_pixels=1_000_000)
    assert "holiday.icns" in str(caught.value)
