"""The README's large-print picture (issue 14): the whole print beside 100% crops of it and of single scale.

    python -m bench.print_picture bench/out/print/cpu-2048-3c20.png bench/out/print/cpu-2048-1.png

The whole picture shows the composition; the crops, taken at the same place at full resolution, show the strokes
as they would be printed: coarse-to-fine keeps the painting's strokes, single scale at print size leaves a fine
speckle (the issue's complaint). Written to docs/images/print.jpg.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
PANEL = 512  # each panel's side in the README picture
LABEL = 22  # the caption strip under each panel


def crop_box(size: tuple[int, int], centre: tuple[float, float], side: int) -> tuple[int, int, int, int]:
    """A side x side box at ``centre`` (fractions of the picture), kept inside it."""
    x = min(max(0, int(centre[0] * size[0]) - side // 2), size[0] - side)
    y = min(max(0, int(centre[1] * size[1]) - side // 2), size[1] - side)
    return x, y, x + side, y + side


def compose(auto: Path, single: Path, centre: tuple[float, float] = (0.5, 0.3)) -> Image.Image:
    whole, other = Image.open(auto).convert("RGB"), Image.open(single).convert("RGB")
    box = crop_box(whole.size, centre, PANEL)
    thumb = whole.resize((PANEL, PANEL * whole.height // whole.width), Image.Resampling.LANCZOS)
    sheet = Image.new("RGB", (3 * PANEL + 16, thumb.height + LABEL), "white")
    sheet.paste(thumb, (0, 0))
    draw = ImageDraw.Draw(sheet)
    scale = PANEL / whole.width
    draw.rectangle([int(v * scale) for v in box], outline=(255, 255, 255), width=2)
    for i, (picture, caption) in enumerate(((whole, "coarse-to-fine, 100% crop"),
                                            (other, "single scale, 100% crop"))):
        sheet.paste(picture.crop(box), ((i + 1) * (PANEL + 8), 0))
        draw.text(((i + 1) * (PANEL + 8) + 4, thumb.height + 4), caption, fill=(0, 0, 0))
    draw.text((4, thumb.height + 4), f"the whole print, {whole.width}x{whole.height} px", fill=(0, 0, 0))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("auto", type=Path)
    parser.add_argument("single", type=Path)
    parser.add_argument("--centre", type=float, nargs=2, default=(0.5, 0.3))
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/print.jpg")
    args = parser.parse_args()
    compose(args.auto, args.single, tuple(args.centre)).save(args.out, quality=88)
    print(args.out)


if __name__ == "__main__":
    main()
