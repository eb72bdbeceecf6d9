"""What a photo's embedded sRGB profile costs images.load: the same big JPEG untagged, tagged sRGB (read as it is
since the eighth session: engine/icc.py) and tagged sRGB converted anyway (the seventh session's path, by judging
no profile sRGB), and tagged Adobe RGB (converted, as it must be). Rounds alternate the variants; medians.

    .venv/bin/python bench/icc_load.py --mp 24 --rounds 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ADOBE_PHOTO = Path("/work/shared/images/content/rocket.jpg")  # carries Adobe RGB (1998), 560 bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mp", type=float, default=24.0, help="megapixels of the test photo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "icc_load")
    args = parser.parse_args()
    from PIL import Image

    from pipeline.engine import icc, images

    from bench.common import big_photo

    args.out.mkdir(parents=True, exist_ok=True)
    photo = big_photo(args.mp)
    size = photo.size
    adobe = Image.open(ADOBE_PHOTO).info.get("icc_profile") if ADOBE_PHOTO.exists() else None
    variants = {"untagged": None, "sRGB-tagged": images.srgb_profile(), "sRGB-tagged, converted anyway (before)":
                images.srgb_profile(), **({"Adobe RGB-tagged": adobe} if adobe else {})}
    for name, profile in variants.items():
        photo.save(args.out / f"{name[:5]}.jpg", quality=90, **({"icc_profile": profile} if profile else {}))
    del photo
    judged = icc.is_srgb
    found: dict[str, list[float]] = {name: [] for name in variants}
    load = []
    for _ in range(args.rounds):
        for name in variants:
            icc.is_srgb = (lambda _icc: False) if "before" in name else judged  # images reads it at call time
            images.is_srgb = icc.is_srgb
            load.append(os.getloadavg()[0])
            started = time.perf_counter()
            images.load(args.out / f"{name[:5]}.jpg", max_pixels=10**9)
            found[name].append(time.perf_counter() - started)
    print(f"# bench/icc_load.py: a {size[0]}x{size[1]} JPEG ({args.mp:g} MP), images.load, {args.rounds} rounds "
          f"alternating; {os.cpu_count()} cores; load average {min(load):.1f}-{max(load):.1f}\n")
    print("| photo | load s (median) | x untagged |\n|---|---|---|")
    base = statistics.median(found["untagged"])
    for name, seconds in found.items():
        print(f"| {name} | {statistics.median(seconds):.2f} | {statistics.median(seconds) / base:.2f} |")


if __name__ == "__main__":
    main()
