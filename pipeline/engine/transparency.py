"""A picture with transparency (an alpha channel, a PNG colour key, a palette's tRNS, grey with alpha): what is
styled, and what the output keeps of it.

A transparent pixel's colour is not seen, yet it is stored: a logo's clear half may hide red, a cut-out's ground
black or white. Pillow's convert("RGB") keeps those colours, so the network styled them: a logo whose clear half hid
red came out red there as a JPEG (the daemon's default format), without a word (rev12b); a painting's hidden ground
decided its style until it was laid on white (rev6b). One rule for photos and paintings, as a photo editor's
export does (a JPEG export of a transparent picture is laid on a white matte): the picture is styled laid on white,
as a viewer shows it on a page. An output that can hold transparency (PNG, WebP) gets the photo's own alpha back
over the styled picture, so a cut-out stays a cut-out; a JPEG is the picture on white. The JSON log says which
(``input.transparency``: told()), and so do the daemon's log and `stylize`.
"""
from __future__ import annotations

from PIL import Image

WHITE = (255, 255, 255)
KEEPS_ALPHA = ("png", "webp")  # the output formats that carry an alpha channel (images.encode)
KEEP_FIX = "set `format: png` (or webp) to keep the transparency"  # the daemon log's advice on a JPEG


def flatten(img: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """RGB, a transparent picture laid on ``background`` (white, as a viewer shows it on a page). For styles:
    .convert("RGB") kept the colours under transparent pixels, which nobody sees, and they decided the style (a
    painting cut out on black or on white gave Grams 58-160% apart; rev6b)."""
    if img.mode not in ("RGBA", "LA", "PA"):
        return img.convert("RGB")
    flat = Image.new("RGBA", img.size, (*background, 255))
    flat.alpha_composite(img.convert("RGBA"))
    return flat.convert("RGB")


def transparent(img: Image.Image) -> bool:
    """Whether any pixel of a loaded picture (RGB or RGBA: images.load) is less than opaque; an alpha channel
    that is opaque everywhere (many editors save one) is no transparency."""
    return img.mode == "RGBA" and img.getchannel("A").getextrema()[0] < 255


def as_styled(img: Image.Image) -> Image.Image:
    """The photo as the network sees it: an RGB one as it is (no copy), one with alpha laid on white."""
    return img if img.mode == "RGB" else flatten(img)


def told(alpha: Image.Image | None, fmt: str) -> str | None:
    """``input.transparency`` in the JSON log, from a Result's alpha and the output format: None (the photo has
    none), "kept" (styled on white, its alpha carried into the PNG or WebP) or "flattened" (on white: a JPEG
    holds no transparency)."""
    if alpha is None:
        return None
    return "kept" if fmt.lower() in KEEPS_ALPHA else "flattened"
