"""Which embedded colour profiles are sRGB already: a photo tagged with one is read as it is, not converted.

Most photos carry an sRGB profile (cameras' and phones' sRGB exports: HP's "sRGB IEC61966-2.1", 3,144 bytes; our
own outputs carry LittleCMS's "sRGB built-in"). Converting such a photo into sRGB changes nothing and costs more
than the decode: a 24 MP JPEG loaded in 4.15 s converted, 1.10 s read as it is, 1.02 s untagged (bench/icc_load.py,
contended 2-core box). A profile is
judged by what it does, not by its name: its conversion into sRGB is tried once on a probe of 5,120 colours (a 16-level
cube and the four 256-level ramps), and it counts as sRGB when no value moves by more than one level (HP's moves
0.3% of them by one, LittleCMS's none; Adobe RGB's moves three quarters, by up to 136). A profile named "sRGB"
that is not, or a nameless one that is, is judged right alike. The verdict is kept per profile (its bytes), so a
night of photos from one camera pays the probe once.
"""
from __future__ import annotations

import functools
import io

from PIL import Image

SAME_WITHIN = 1  # levels: LittleCMS's rounding between two exact sRGB profiles (a table TRC against a parametric one)


@functools.lru_cache(maxsize=32)
def is_srgb(icc: bytes) -> bool:
    """True when converting RGB values through ``icc`` into sRGB leaves every probe colour within one level."""
    import numpy as np
    from PIL import ImageCms  # here, not at the top: a Pillow without LittleCMS still reads untagged photos

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        probe = _probe()
        moved = ImageCms.profileToProfile(probe, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):  # broken, or not an RGB profile
        return False
    return int(np.abs(np.asarray(moved, dtype=np.int16) - np.asarray(probe, dtype=np.int16)).max()) <= SAME_WITHIN


@functools.cache
def _probe() -> Image.Image:
    """A 16-level cube of colours (0, 17, ..., 255 on each axis) and the grey, red, green and blue 256-level ramps."""
    import numpy as np

    levels = np.arange(0, 256, 17, dtype=np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    ramp, zero = np.arange(256, dtype=np.uint8), np.zeros(256, dtype=np.uint8)
    ramps = [np.stack(channels, -1) for channels in
             ((ramp, ramp, ramp), (ramp, zero, zero), (zero, ramp, zero), (zero, zero, ramp))]
    return Image.fromarray(np.concatenate([cube, *ramps]).reshape(1, -1, 3), "RGB")
