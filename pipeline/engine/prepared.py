"""A photo's first working copy, made before its run (issue 13): the daemon's prefetch thread makes it while the
photo before it still runs, so the one LANCZOS resize of a large photo (79 ms of CPU for 2400x1655 to 1024 px,
bench/gap.py) is off the path between one photo's last step and the next one's first.

``stylize(prepare(photo, settings), ...)`` gives exactly what ``stylize(photo, ...)`` gives: the copy is made the
same way (RGB, one resize from the original to the first level's shape) and the run uses it only for that shape.
"""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from . import images
from .levels import for_size
from .settings import Settings


@dataclass(frozen=True)
class Prepared:
    image: Image.Image  # the photo as given
    hw: tuple[int, int] | None = None  # the first level's (height, width); None: nothing made ahead
    working: Image.Image | None = None  # the photo at hw, resized once from the original


def prepare(photo: Image.Image, settings: Settings) -> Prepared:
    """The photo and its first level's working copy; nothing ahead where the run changes the photo first
    (preserve_color works on its luminance) or where its shape is refused (the run says why)."""
    if settings.preserve_color:
        return Prepared(photo)
    try:
        rgb = photo.convert("RGB")
        hw = for_size(rgb.size, settings)[1][0]  # the run's own rule for its levels
        return Prepared(photo, hw, images.resize_once(rgb, hw))
    except Exception:  # noqa: BLE001 - a refused shape is the run's to report, with its reason
        return Prepared(photo)
