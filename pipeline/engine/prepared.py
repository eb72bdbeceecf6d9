"""A photo's first working copy, made before its run (issue 13): the daemon's prefetch thread makes it while the
photo before it still runs, so the one LANCZOS resize of a large photo (79 ms of CPU for 2400x1655 to 1024 px,
bench/gap.py) is off the path between one photo's last step and the next one's first.

``stylize(prepare(photo, settings), ...)`` gives exactly what ``stylize(photo, ...)`` gives: the copy is made the
same way (RGB, one resize from the original to the first level's shape) and the run uses it only for that shape.
Its 8-bit values are read out ahead too (``values``: the host half of images.to_tensor, 9 ms of the 2-core box's
CPU a 1024 px photo before to_tensor was split): the run only sends them to the device. A batch's photos use
their copies as a lone photo does (engine/batch.py; the H200's batches at 1024 px resized every photo in the slot).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from . import images, transparency
from .levels import for_size
from .settings import Settings

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Prepared:
    image: Image.Image  # the photo as given
    hw: tuple[int, int] | None = None  # the first level's (height, width); None: nothing made ahead
    working: Image.Image | None = None  # the photo at hw, resized once from the original
    values: "torch.Tensor | None" = None  # working's 8-bit RGB, (h, w, 3) uint8 on the CPU (images.to_bytes)

    @property
    def size(self) -> tuple[int, int]:
        """The photo's (width, height), as a PIL picture's: the batcher groups photos by it (batch.py)."""
        return self.image.size


def prepare(photo: Image.Image, settings: Settings) -> Prepared:
    """The photo and its first level's working copy; nothing ahead where the run changes the photo first
    (preserve_color works on its luminance) or where its shape is refused (the run says why)."""
    if settings.preserve_color:
        return Prepared(photo)
    try:
        rgb = transparency.as_styled(photo)  # as the run takes it: one with alpha on white
        hw = for_size(rgb.size, settings)[1][0]  # the run's own rule for its levels
        working = images.resize_once(rgb, hw)
        return Prepared(photo, hw, working, images.to_bytes(working))
    except Exception:  # noqa: BLE001 - a refused shape is the run's to report, with its reason
        return Prepared(photo)
