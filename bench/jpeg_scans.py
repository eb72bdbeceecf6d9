"""What the JPEG scan cap (engine/jpeg_scans.py) costs and saves: the count's time on real and large photos beside
their decode, and the time the daemon's settle check spends on rev12a's scan bomb before the cap (a full decode,
scan after scan) and after it (the count, then the refusal). Prints a markdown table; medians of --rounds.

    .venv/bin/python bench/jpeg_scans.py --mp 48 --rounds 3 --repeats 1500
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image, ImageChops

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import ASSETS, big_photo, median_time  # noqa: E402

REAL = sorted(Path("/work/shared/images").glob("*/*.jpg")) or sorted(ASSETS.glob("*/*.jpg"))


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """A JPEG's marker segments after SOI, each with its entropy-coded data (rev12a's probe)."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            break
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is no stuffing or RST
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, data[i:end]))
        i = end
    return out


def scan_bomb(repeats: int, side: int = 7000, mode: str = "L") -> bytes:
    """A valid progressive JPEG whose last AC scan is repeated ``repeats`` times (rev12a's probe): libjpeg warns
    (bogus progression) and decodes on, a full pass over the component's blocks each scan. 7000 px: 49 MP, under the
    default max_pixels (200 MP); ~200 bytes a repeat."""
    buf = io.BytesIO()
    Image.new(mode, (side, side), 128).save(buf, "JPEG", progressive=True, quality=90)
    segs = _segments(buf.getvalue())
    last = max(k for k, (m, _) in enumerate(segs) if m == 0xDA)
    block = (segs[last - 1][1] if segs[last - 1][0] == 0xC4 else b"") + segs[last][1]
    return b"\xff\xd8" + b"".join(s for _, s in segs[:last + 1]) + block * repeats + b"\xff\xd9"


def _decode(path: Path) -> None:
    with Image.open(path) as img:  # the settle check's decode without the cap (images.opened before it)
        img.load()


def _settle(path: Path) -> bool:
    from pipeline.daemon.settle import decodes
    from pipeline.engine.settings import DEFAULT_MAX_PIXELS

    with open(path, "rb") as file:
        return decodes(file, DEFAULT_MAX_PIXELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mp", type=float, default=48.0, help="megapixels of the large photo")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1500, help="the bomb's repeated scans (rev12a: 1,500)")
    parser.add_argument("--sides", default="7000,14000", help="sides of the grey pictures at the cap (49, 196 MP)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "jpeg_scans")
    args = parser.parse_args()
    from pipeline.engine import jpeg_scans

    args.out.mkdir(parents=True, exist_ok=True)
    photo = big_photo(args.mp, ASSETS / "styles" / "starry_night.jpg")
    grain = Image.effect_noise(photo.size, 12).convert("RGB")  # a camera's grain: a real photo's bytes
    photo = ImageChops.add(photo, grain, scale=1.0, offset=-128)
    del grain
    files = list(REAL)
    for kind, extra in (("baseline", {}), ("progressive", {"progressive": True})):
        files.append(args.out / f"{args.mp:g}mp-{kind}.jpg")
        photo.save(files[-1], quality=90, **extra)
    del photo
    print("| file | size | MB | scans | count ms | decode ms | count / decode |\n|---|---|---|---|---|---|---|")
    for path in files:
        count = median_time(lambda: jpeg_scans.scans(path), args.rounds)
        decode = median_time(lambda: _decode(path), args.rounds)
        size = "x".join(map(str, Image.open(path).size))
        print(f"| {path.name} | {size} | {path.stat().st_size / 1e6:.1f} | {jpeg_scans.scans(path)} | "
              f"{1000 * count:.2f} | {1000 * decode:.0f} | {100 * count / decode:.2f}% |")

    bomb = args.out / "bomb.jpg"
    bomb.write_bytes(scan_bomb(args.repeats))
    grey = jpeg_scans.scans(io.BytesIO(scan_bomb(0, 64)))  # a grey progressive JPEG's own scans (6)
    rows = [(bomb, 7000)]
    for side in map(int, args.sides.split(",")):  # the most a JPEG may now demand of the settle check
        rows.append((args.out / f"at_cap_{side}.jpg", side))
        rows[-1][0].write_bytes(scan_bomb(jpeg_scans.MAX_SCANS - grey, side))
    print("\n| grey picture | MB | scans | settle check before (full decode) s | after s |\n|---|---|---|---|---|")
    for path, side in rows:
        before = median_time(lambda: _decode(path), 1)
        verdicts = []
        after = median_time(lambda: verdicts.append(_settle(path)), 1 if side > 7000 else args.rounds)
        print(f"| {path.name} {side}x{side} | {path.stat().st_size / 1e6:.2f} | {jpeg_scans.scans(path):,} | "
              f"{before:.2f} | {after:.4f} ({'decoded' if verdicts[0] else 'refused'}) |")


if __name__ == "__main__":
    main()
