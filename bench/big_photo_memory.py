"""What a big camera photo costs to decode and prepare: peak memory and time of images.load (decode, EXIF turn,
8-bit and ICC conversion) and of the first working copy (prepared.prepare at the default size), per photo size.

Why: max_pixels' default (rev7a finding 6: a 61 MP camera photo failed as too_large at the old 50 MP). Each size
runs in a fresh child process (its peak RSS is its own), with and without an embedded wide-gamut profile.

    .venv/bin/python -m bench.big_photo_memory            # 24, 61, 102 and 151 MP; a few minutes on 2 cores
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAMERAS = {24: (6000, 4000), 61: (9504, 6336), 102: (11648, 8736), 151: (14204, 10652)}  # A7 III, A7R IV, GFX100, IQ4


def vm(field_name: str) -> int:
    """This process's /proc/self/status figure in kB (VmRSS: now; VmHWM: the peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return -1


def make_photo(path: Path, size: tuple[int, int], icc: bool) -> None:
    """A JPEG with a camera's pixel count and some texture (a flat picture decodes unlike a photo)."""
    from PIL import Image

    tile = Image.effect_noise((1024, 1024), 64).convert("RGB")
    photo = Image.new("RGB", size)
    for x in range(0, size[0], 1024):
        for y in range(0, size[1], 1024):
            photo.paste(tile, (x, y))
    options = {"icc_profile": _profile()} if icc else {}
    photo.save(path, quality=90, **options)


def _profile() -> bytes:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_colour_profiles import icc_profile

    return icc_profile()


def child(path: str) -> None:
    """Load and prepare one photo; print its figures as JSON."""
    import torch

    from pipeline.engine import Settings, images
    from pipeline.engine.prepared import prepare

    torch.set_num_threads(1)
    settings = Settings()
    base = vm("VmRSS")
    t0 = time.perf_counter()
    photo = images.load(path, max_pixels=10**9)
    t1 = time.perf_counter()
    held = vm("VmRSS")
    prepared = prepare(photo, settings)
    t2 = time.perf_counter()
    print(json.dumps({"load_s": t1 - t0, "prepare_s": t2 - t1, "held_mb": (held - base) / 1024,
                      "peak_mb": (vm("VmHWM") - base) / 1024, "working": list(prepared.working.size)}))


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for mp, size in CAMERAS.items():
            for icc in (False, True):
                path = Path(folder) / f"{mp}{'-icc' if icc else ''}.jpg"
                make_photo(path, size, icc)
                out = subprocess.run([sys.executable, "-m", "bench.big_photo_memory", "--child", str(path)],
                                     capture_output=True, text=True, check=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
                rows.append((mp, size, icc, path.stat().st_size, json.loads(out.stdout.splitlines()[-1])))
                path.unlink()
    print("2-core CPU box (contended), one child process per row; MB over the child's RSS after imports\n")
    print(f"{'photo':>16} {'profile':>7} {'file MB':>7} {'load s':>6} {'prep s':>6} {'held MB':>7} {'peak MB':>7}")
    for mp, size, icc, file_bytes, r in rows:
        print(f"{mp:>3} MP {size[0]}x{size[1]:<5} {'adobe' if icc else '-':>7} {file_bytes / 2**20:7.1f} "
              f"{r['load_s']:6.2f} {r['prepare_s']:6.2f} {r['held_mb']:7.0f} {r['peak_mb']:7.0f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main()
