"""The report's pictures: thumbnails as data: URIs and the loss curve as SVG points, from whatever a log holds.

Split from report.py (which reads the logs and lays out the page) so each stays small; only finite numbers
reach a drawing, since JSON allows Infinity, NaN and integers too large for a float.
"""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path

from .engine import images
from .errors import ImageError

THUMB_PX = 160  # content and style: small beside the result
RESULT_PX = 512  # the result is the largest picture on a card
PLOT_W, PLOT_H = 260, 90  # the loss curve's plot area, in px, inside its axes


@dataclass
class Plot:
    """The loss curve with what its axes need: the polyline and the first/last step and loss."""

    points: str
    first_step: int
    last_step: int
    top: str
    bottom: str
    log: bool


def finite_number(value: object, default: float | None = None) -> float | None:
    """A finite float, else `default`: JSON allows Infinity, NaN and 400-digit integers, and none of them draws."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    try:
        number = float(value)
    except OverflowError:
        return default
    return number if math.isfinite(number) else default


def thumbnail_uri(path: Path | None, px: int = THUMB_PX, max_pixels: int = images.DEFAULT_MAX_PIXELS) -> str | None:
    """A data: URI of the image shrunk to ``px``, or None when it is missing or will not decode. ``max_pixels``:
    the config's largest (config.read_max_pixels), so nothing the daemon would refuse is decoded here."""
    if path is None or not path.is_file():
        return None
    try:
        with images.opened(path, max_pixels) as img:  # a bomb in failed/ is not decoded
            img = images.upright(img)  # a mistyped EXIF tag drops no card
            img.thumbnail((px, px))
            img = images.to_8bit(img)  # as the worker reads it: through its ICC profile, transparency kept
            alpha = img.mode == "RGBA"
            buf = io.BytesIO()
            img.save(buf, "PNG" if alpha else "JPEG", quality=85)
    except (OSError, ValueError, ImageError):
        return None
    mime = "image/png" if alpha else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def curve_points(curve: list[dict], width: int = 240, height: int = 60) -> str:
    """SVG polyline points for the loss curve, log-scaled: the loss falls by orders of magnitude."""
    pts = [(finite_number(p.get("step"), i), finite_number(p.get("loss"))) for i, p in enumerate(curve or [])
           if isinstance(p, dict) and finite_number(p.get("loss")) is not None]
    if len(pts) < 2:
        return ""
    positive = all(y > 0 for _, y in pts)
    ys = [math.log10(y) if positive else y for _, y in pts]
    x0, x1, y0, y1 = pts[0][0], pts[-1][0], min(ys), max(ys)
    sx = (width - 4) / ((x1 - x0) or 1)
    sy = (height - 4) / ((y1 - y0) or 1)
    return " ".join(f"{2 + (x - x0) * sx:.1f},{height - 2 - (y - y0) * sy:.1f}" for (x, _), y in zip(pts, ys))


def curve_plot(curve: list[dict]) -> Plot | None:
    """The curve in the card's plot area, and its axis labels; None with fewer than two points."""
    points = curve_points(curve, PLOT_W, PLOT_H)
    if not points:
        return None
    pts = [p for p in curve if isinstance(p, dict) and finite_number(p.get("loss")) is not None]
    losses = [finite_number(p["loss"]) for p in pts]
    steps = [int(finite_number(p.get("step"), i)) for i, p in enumerate(pts)]
    return Plot(points, steps[0], steps[-1], f"{max(losses):.3g}", f"{min(losses):.3g}", min(losses) > 0)
