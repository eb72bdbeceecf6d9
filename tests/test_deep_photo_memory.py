"""rev7g finding 2: max_pixels (200 MP by default, Pillow's own limit off) bounds pixels, not memory. A 16-bit grey PNG
or a float TIFF went through float64 numpy arrays in images.to_8bit: 28-33 bytes a pixel at peak while loading, so a
flat 200 MP one (half a megabyte on disk) took 5.7-6.7 GB. Now float32 and in place: 13 and 17 bytes a pixel (an
8-bit grey one: 6), measured in a fresh process each, the 2-core box."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOUND = 19.0  # bytes a pixel at the load's peak: 13.2 (16-bit) and 17.2 (float) now; 28.4 and 33.4 through float64

CHILD = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[3])
from PIL import Image
import numpy as np
from pipeline.engine import images
path, side = sys.argv[1], int(sys.argv[2])
def hwm():  # this process's peak resident set in kB (ru_maxrss can carry the parent's over fork)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
base = hwm()
img = images.load(path)
peak = hwm()
print(json.dumps({"mode": img.mode, "size": img.size, "per_pixel": (peak - base) * 1024 / (side * side)}))
"""


def _make(path: Path, kind: str, side: int) -> None:
    from PIL import Image
    if kind == "i16":
        Image.new("I;16", (side, side), 30000).save(path)
    elif kind == "float":
        Image.new("F", (side, side), 0.5).save(path, compression="tiff_deflate")
    else:
        Image.new("L", (side, side), 117).save(path)


def _peak(path: Path, side: int) -> dict:
    # numpy, torch and PIL imported before the baseline, so the delta is the load alone
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(side), str(ROOT)], capture_output=True,
                         text=True, env=env, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind,name", [("i16", "grey16.png"), ("float", "float.tif")])
def test_a_deep_photos_load_peaks_under_the_bound(tmp_path, kind, name):
    side = 2500  # 6.25 MP: a second and a few hundred MB here; the ratio is what 200 MP scales by
    path = tmp_path / name
    _make(path, kind, side)
    eight = tmp_path / "grey8.png"
    _make(eight, "L", side)
    deep, plain = _peak(path, side), _peak(eight, side)
    size = path.stat().st_size
    print(f"\n{kind}: file {size:,} bytes for {side * side / 1e6} MP; load peak {deep['per_pixel']:.1f} B/px "
          f"(8-bit grey {plain['per_pixel']:.1f} B/px); at 200 MP: {deep['per_pixel'] * 200e6 / 1e9:.1f} GB "
          f"from a ~{size * 200e6 / (side * side) / 1e6:.1f} MB file")
    assert deep["per_pixel"] <= BOUND, (
        f"a {kind} photo peaks at {deep['per_pixel']:.1f} bytes a pixel while loading, over {BOUND}: the 200 MP "
        "limit lets one such photo take "
        f"{deep['per_pixel'] * 200e6 / 1e9:.1f} GB")
