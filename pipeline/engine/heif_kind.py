"""Naming an HEIC, HEIF or AVIF picture Pillow could not decode, by its ISO-BMFF ``ftyp`` box.

An iPhone saves HEIC by default, and Pillow has no HEVC decoder: images.load said "not an image Pillow can read.
Send a PNG, JPEG, WebP, TIFF or BMP file" to a person who had sent a photo straight off a phone, where a camera RAW
is named and told what to do (rev12b). The file's first box says what it is whatever its name (an AirDrop or a
cloud export may call it .jpg): its major and compatible brands. Only a file Pillow failed to identify is looked at,
so an AVIF that this Pillow decodes is styled as any photo.

No HEIC decoder is added (README, "Libraries beyond the fixed set"): pillow-heif's binary wheels are GPLv2 as a
whole (x265 inside), beside an MIT project; an iPhone exports JPEG in one setting.
"""
from __future__ import annotations

import struct
from pathlib import Path

HEVC = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}  # HEIF with HEVC (H.265) inside
AV1 = {b"avif", b"avis", b"avio"}
HEIF = {b"mif1", b"msf1", b"mif2", b"miaf"}  # the container's own brands: HEIF, its codec not named
HEIC_FIX = "Export it as JPEG, or set iPhone Settings > Camera > Formats > Most Compatible"
OTHER_FIX = "Export it as JPEG or PNG, then send that"


def brands(source: str | Path | bytes) -> set[bytes]:
    """The major and compatible brands of the file's first box when it is an ISO-BMFF ``ftyp``; empty otherwise.
    ``source``: the file's path, or its first bytes (256 are looked at)."""
    try:
        if isinstance(source, bytes):
            head = source[:256]
        else:
            with open(source, "rb") as file:
                head = file.read(256)
    except OSError:
        return set()
    if len(head) < 16 or head[4:8] != b"ftyp":
        return set()
    size = struct.unpack(">I", head[:4])[0]
    end = min(size if size >= 16 else len(head), len(head))  # 0: to the end of the file; 1: a 64-bit size (rare)
    compatible = [head[i:i + 4] for i in range(16, end - 3, 4)]
    return {head[8:12], *compatible}


def explain(source: str | Path | bytes) -> tuple[str, str] | None:
    """(problem, fix) for an HEIC, AVIF or other HEIF picture (``source``: its path or its first bytes); None for
    any other file."""
    found = brands(source)
    if found & HEVC:
        return "an HEIC photo (an iPhone's own format), which Pillow cannot decode", HEIC_FIX
    if found & AV1:
        return "an AVIF picture, which this installation's Pillow cannot decode", OTHER_FIX
    if found & HEIF:
        named = ", ".join(sorted(b.decode("latin-1").strip() for b in found))
        return f"an HEIF picture (brands {named}), which Pillow cannot decode", OTHER_FIX
    return None
