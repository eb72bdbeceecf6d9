"""Naming a TIFF's layout when Pillow cannot decode it.

Pillow reads most TIFFs but not every layout a scanner or an editor writes: 16-bit grey with alpha (a scan's mask,
GIMP's "grey, 16-bit, with alpha") is among them. images.load said "not an image Pillow can read: send a PNG, JPEG,
WebP, TIFF or BMP file" to a person who had sent a TIFF (closing9). The first directory's tags say what it is, read
with Pillow's own tag parser, so the message names the layout and the fix names one Pillow reads. Decoding the
strips ourselves was not taken: most such files are LZW- or Deflate-compressed with a predictor, which would need a
TIFF codec of our own (tifffile and imagecodecs are not dependencies).

The layout is not always what Pillow lacks: an 8-bit RGB TIFF compressed with JPEG 2000 (34712: slide scanners,
some archives) was told "a layout Pillow cannot decode" and to save it "as an 8-bit RGB or RGBA TIFF", what it
already was (rev10c). Where Pillow knows no codec for the Compression tag (259), the message names the compression,
and the layout only where Pillow would not read that either (the key its TIFF plugin looks the mode up by).
"""
from __future__ import annotations

import io
from pathlib import Path

PHOTOMETRIC = {0: "grey", 1: "grey", 2: "RGB", 3: "palette", 4: "mask", 5: "CMYK", 6: "YCbCr", 8: "CIELab",
               9: "CIELab", 10: "CIELab", 32844: "LogL", 32845: "LogLuv"}
SAMPLE_FORMATS = {2: "signed ", 3: "float "}
ALPHA = (1, 2)  # ExtraSamples: associated (premultiplied) or unassociated alpha
FIX = "Save it as a PNG (16-bit and alpha are kept) or as an 8-bit RGB or RGBA TIFF, then send that"
COMPRESSION_FIX = "Save it uncompressed or with LZW compression (or as a PNG), then send that"
BOTH_FIX = ("Save it as a PNG (16-bit and alpha are kept) or as an uncompressed or LZW 8-bit RGB or RGBA TIFF, "
            "then send that")
# TIFF Compression (tag 259) values Pillow has no codec for, by name: the registry's and libtiff's (tiff.h).
COMPRESSIONS = {9: "JBIG", 10: "JBIG", 32766: "NeXT RLE", 32895: "IT8 CT", 32896: "IT8 LW", 32897: "IT8 MP",
                32898: "IT8 BL", 32908: "Pixar film", 32909: "PixarLog", 32947: "Kodak DCS",
                33003: "Aperio JPEG 2000", 33005: "Aperio JPEG 2000", 34661: "JBIG", 34692: "LuraWave",
                34712: "JPEG 2000", 34713: "Nikon NEF", 34715: "JBIG2", 34887: "LERC", 34892: "lossy JPEG (DNG)",
                34926: "Zstandard (an old code)", 34927: "WebP (an old code)", 34933: "PNG", 34934: "JPEG XR",
                50002: "JPEG XL", 52546: "JPEG XL"}

# Camera RAW files (rev11b): most are TIFF-structured with a small preview as their first page (NEF, DNG, CR2, ARW...),
# which Pillow opened and the engine upscaled to the recipe's size without a word (a 160 px preview 2.4x at 384 px);
# the others (CR3, RAF, X3F) it cannot read at all. Known by name before anything is decoded, and by the first page's
# NewSubfileType (tag 254, bit 0: a reduced-resolution image) where the name says TIFF.
RAW_SUFFIXES = (".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".dng", ".raf", ".orf", ".rw2",
                ".pef", ".srw", ".x3f", ".erf", ".kdc", ".mrw", ".3fr", ".iiq")
RAW_FIX = "Export a JPEG or TIFF from your photo app, then send that"


def is_camera_raw(name: str) -> bool:
    return name.lower().endswith(RAW_SUFFIXES)


def raw_problem(name: str, img=None) -> str | None:
    """Why ``name`` (and, once opened, ``img``, its Pillow picture) is a camera RAW's preview, not a photo to style;
    None when it is not one."""
    if is_camera_raw(name):
        return f"a camera RAW file ({Path(name).suffix}): only its small embedded preview could be read"
    if img is not None and img.format == "TIFF" and int(img.tag_v2.get(254, 0) or 0) & 1:
        return (f"a camera RAW file or its like: the TIFF's first page is a {img.width}x{img.height} "
                "reduced-resolution preview (NewSubfileType 1), not the picture")
    return None


def explain(source: str | Path | bytes) -> tuple[str, str] | None:
    """(problem, fix) for a TIFF (or a BigTIFF) Pillow could not identify, naming what it lacks: the compression,
    the layout, or both; None for a file that is not a TIFF (or whose tags cannot be read: the caller's general
    message stands). ``source``: the file's path, or its first bytes (its tags are read where they lie within)."""
    from PIL import TiffImagePlugin

    tags = _directory(source)
    if tags is None:
        return None
    words, reads = _words(tags), _layout_reads(tags)
    code = tags.get(259, 1)
    if code not in TiffImagePlugin.COMPRESSION_INFO:
        how = f"{COMPRESSIONS[code]} (TIFF compression {code})" if code in COMPRESSIONS else f"TIFF compression {code}"
        compressed = f"a TIFF of {words} compressed with {how}"
        if reads:
            return f"{compressed}, which Pillow cannot decode", COMPRESSION_FIX
        return f"{compressed}: Pillow decodes neither that layout nor that compression", BOTH_FIX
    if reads:  # its tags say a layout and a compression Pillow knows: something else in them is off
        return f"a TIFF of {words} whose tags Pillow cannot read", "Save it again as a PNG, then send that"
    return f"a TIFF of {words}, a layout Pillow cannot decode", FIX


def _directory(source: str | Path | bytes):
    """The first directory's tags, read with Pillow's own parser; None: not a TIFF, or a damaged directory (or one
    past the bytes handed in)."""
    from PIL import TiffImagePlugin

    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as file:
            head = file.read(16)
            if head[:4] not in TiffImagePlugin.PREFIXES:
                return None
            tags = TiffImagePlugin.ImageFileDirectory_v2(head if head[2:4] in (b"+\0", b"\0+") else head[:8])
            file.seek(tags.next)
            tags.load(file)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):  # a damaged directory: no layout to name
        return None
    return tags


def _layout_reads(tags) -> bool:
    """Whether Pillow's TIFF plugin has a mode for this layout: its own look-up key (TiffImageFile._setup), built
    the same way from the tags."""
    from PIL import TiffImagePlugin

    formats, bits, extra = _many(tags.get(339, (1,))), _many(tags.get(258, (1,))), _many(tags.get(338, ()))
    formats = formats[:1] if len(formats) > 1 and max(formats) == min(formats) else formats
    samples = tags.get(277, 1)
    if tags.get(284, 1) == 2 and extra and max(extra) == 0:  # separate planes: unspecified extras are ignored
        bits, samples, extra = bits[:-len(extra)], samples - len(extra), ()
    bits = bits[:samples] if samples < len(bits) else bits * samples if len(bits) == 1 else bits
    key = (tags.prefix, tags.get(262, 0), formats, tags.get(266, 1), bits, extra)
    return key in TiffImagePlugin.OPEN_INFO


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
