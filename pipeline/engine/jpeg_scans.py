"""A JPEG's scans, counted from its markers before anything is decoded: the bound on the work one JPEG can demand.

A progressive JPEG is decoded scan by scan, each a full pass over the picture's blocks, and libjpeg only warns
about a scan that repeats one already seen ("bogus progression") and decodes on. A 7000x7000 grey one (49 MP, well
under max_pixels) whose last scan was repeated 1,500 times (~100 bytes a scan, a 150 KB file) took 70-110 s to
decode on the main loop's settle check (no watchdog ping meanwhile); 13,000 repeats (1.3 MB) outlast systemd's
WatchdogSec, and each restart decoded it again (rev12a). The pixel limit bounds one pass; this bounds the passes.

Counting is cheap: entropy-coded data stuffs every 0xFF data byte (0xFF00), so no marker hides inside a scan, and
a regular expression finds the next real marker in C. The walk skips each marker segment by its length (an EXIF
thumbnail's or an ICC profile's bytes are never read as markers) and stops at the first EOI: what follows it (an
MPO's second picture, a phone's motion-photo video) is not decoded, so not counted.
"""
from __future__ import annotations

import io
import mmap
import re
from pathlib import Path
from typing import BinaryIO

# libjpeg's own scripts: 6 scans (grey), 10 (colour), 18 (CMYK); mozjpeg's optimised ones and Photoshop's stay
# near those. 100 is five times the most a standard encoder writes, and bounds the settle decode of a file at the
# cap to 6 s at 49 MP, 24 s at 196 MP on the loaded 2-core box (bench/jpeg_scans.py), where WatchdogSec is 120.
MAX_SCANS = 100
# The next marker: 0xFF then a byte that is not stuffing (00), a restart (D0-D7, inside a scan), TEM (01, no
# length) or a fill byte (FF, which the next search position finds the marker after).
_MARKER = re.compile(rb"\xff[^\x00\x01\xd0-\xd7\xff]")
SOS, EOI = 0xDA, 0xD9


def count(data: bytes | mmap.mmap) -> int:
    """The scans (SOS markers) of the first picture in ``data``, a JPEG's bytes; 0 for what is no JPEG. A damaged
    segment length only moves the walk on to the next marker found: the count is never below the scans decoded."""
    if data[:2] != b"\xff\xd8":
        return 0
    scans, at = 0, 2
    while (found := _MARKER.search(data, at)) is not None:
        code = data[found.start() + 1]
        if code == EOI:
            break
        scans += code == SOS
        at = found.end() + int.from_bytes(data[found.end():found.end() + 2], "big")  # the length counts itself
    return scans


def scans(source: str | Path | BinaryIO) -> int:
    """:func:`count` of a file, by name or open (its position kept): mapped, not read, so a 30 MB photo costs its
    page cache only."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as file:
            return scans(file)
    try:
        data = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):  # a BytesIO, an empty or odd file
        at = source.tell()
        try:
            source.seek(0)
            return count(source.read())
        finally:
            source.seek(at)
    with data:
        return count(data)
