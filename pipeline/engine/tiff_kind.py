"""Naming a TIFF's layout when Pillow cannot decode it.

Pillow reads most TIFFs but not every layout a scanner or an editor writes: 16-bit grey with alpha (a scan's mask,
GIMP's "grey, 16-bit, with alpha") is among them. images.load said "not an image Pillow can read: send a PNG, JPEG,
WebP, TIFF or BMP file" to a person who had sent a TIFF (closing9). The first directory's tags say what it is, read
with Pillow's own tag parser, so the message names the layout and the fix names one Pillow reads. Decoding the
strips ourselves was not taken: most such files are LZW- or Deflate-compressed with a predictor, which would need a
TIFF codec of our own (tifffile and imagecodecs are not dependencies).
"""
from __future__ import annotations

from pathlib import Path

PHOTOMETRIC = {0: "grey", 1: "grey", 2: "RGB", 3: "palette", 4: "mask", 5: "CMYK", 6: "YCbCr", 8: "CIELab",
               9: "CIELab", 10: "CIELab", 32844: "LogL", 32845: "LogLuv"}
SAMPLE_FORMATS = {2: "signed ", 3: "float "}
ALPHA = (1, 2)  # ExtraSamples: associated (premultiplied) or unassociated alpha
FIX = "Save it as a PNG (16-bit and alpha are kept) or as an 8-bit RGB or RGBA TIFF, then send that"


def describe(path: str | Path) -> str | None:
    """"16-bit grey with alpha" for a TIFF (or a BigTIFF) whose first directory reads; None for a file that is not a TIFF (or
    whose tags cannot be read: the caller's general message stands)."""
    from PIL import TiffImagePlugin

    try:
        with open(path, "rb") as file:
            head = file.read(16)
            if head[:4] not in TiffImagePlugin.PREFIXES:
                return None
            tags = TiffImagePlugin.ImageFileDirectory_v2(head if head[2:4] in (b"+\0", b"\0+") else head[:8])
            file.seek(tags.next)
            tags.load(file)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):  # a damaged directory: no layout to name
        return None
    return _words(tags)


def _words(tags) -> str:
    bits = sorted(set(_many(tags.get(258, (1,)))))
    kind = PHOTOMETRIC.get(tags.get(262), f"photometric {tags.get(262)}")
    extra = _many(tags.get(338, ()))
    alpha = sum(1 for e in extra if e in ALPHA)
    more = len(extra) - alpha
    fmt = SAMPLE_FORMATS.get(_many(tags.get(339, (1,)))[0], "")
    words = f"{'/'.join(map(str, bits))}-bit {fmt}{kind}"
    if alpha:
        words += " with alpha"
    if more:
        words += f"{' and' if alpha else ' with'} {more} extra channel{'s' if more > 1 else ''}"
    return words


def _many(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)
