"""Loading and saving pictures safely, and converting them to and from tensors.

Every decode problem becomes an :class:`ImageError` that names the file and what to do.
"""
from __future__ import annotations

import contextlib
import functools
import io
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

from PIL import ExifTags, Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from ..errors import ImageError, Reason, SettingsError
from ..fsio import on_disk, write_atomic  # write_atomic: the one atomic writer, pid + random temp names
from . import heif_kind, jpeg_scans, tiff_kind
from .icc import is_srgb
from .settings import DEFAULT_MAX_PIXELS, DEFAULT_QUALITY, FORMAT_NAMES, OUTPUT_FORMATS
from .transparency import KEEPS_ALPHA

if TYPE_CHECKING:  # torch and numpy load where arrays are made: `validate` and `status` decode styles without them
    import torch

FORMATS = {**{name: pil for name, (pil, *_) in OUTPUT_FORMATS.items()},  # a format by name, or by suffix (save)
           **{suffix[1:]: pil for pil, *suffixes in OUTPUT_FORMATS.values() for suffix in suffixes}}
# max_pixels is the one limit (opened): Pillow's own (a warning over 89 MP, DecompressionBombError over 179 MP)
# refused a 180 MP panorama under a raised max_pixels of 300 MP, with a fix that contradicted it (rev7a). Every
# decode in the package opens through opened(), which checks the header's size before anything is decoded.
Image.MAX_IMAGE_PIXELS = None
# A PNG's compressed text chunk (a diagram tool's embedded source, an AI tool's workflow, an editor's XMP history)
# may inflate past Pillow's 1 MB a chunk, and the open raised ValueError: a whole picture was failed as "damaged,
# copy it again", which no copy fixes (rev9c). Pillow's bound on all text (64 MB) stays the one limit.
PngImagePlugin.MAX_TEXT_CHUNK = PngImagePlugin.MAX_TEXT_MEMORY
# Icon containers: their header names one icon size, and the picture inside may be a PNG of any size, which Pillow
# decodes whole before it says so (rev7g: a 56 KB .icns decoded 62 MB under a 1 MP limit; a few MB is gigapixels).
# With Pillow's own limit off, the header is no bound for them: they are refused before anything is decoded.
ICON_FORMATS = ("ICNS", "ICO", "CUR")
KINDS = "PNG, JPEG, WebP, TIFF or BMP"  # what every "send a picture" fix names


def load(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode fully, apply EXIF orientation, and return RGB or RGBA (8-bit)."""
    path = on_disk(Path(path))  # a Mac's NFD name found under the NFC name typed (closing9)
    if path.is_dir():  # said "no such file", which sent the user looking for a missing file (closing9)
        raise ImageError("is a folder, not a picture", path=path, fix=f"Name a picture file inside it ({KINDS})")
    if not path.is_file():
        raise ImageError("no such file", path=path, fix="Check the path")
    try:
        if path.stat().st_size == 0:
            raise ImageError("the file is empty (0 bytes)", path=path, fix="Copy the file again; the upload did not finish")
        if tiff_kind.is_camera_raw(path.name):  # before a decode: a CR3 is no TIFF at all
            raise ImageError(tiff_kind.raw_problem(path.name), path=path, fix=tiff_kind.RAW_FIX)
        with opened(path, max_pixels) as img:
            if raw := tiff_kind.raw_problem(path.name, img):  # a RAW renamed .tif: styled from its preview
                raise ImageError(raw, path=path, fix=tiff_kind.RAW_FIX)
            img.load()  # decode everything now: truncation shows up here, not later
            return _with_frames(to_8bit(upright(img)), img)
    except ImageError as exc:
        if exc.path is None:  # found in to_8bit, which does not know the file
            raise ImageError(exc.problem, path=path, fix=exc.fix, reason=exc.reason) from exc
        raise
    except UnidentifiedImageError as exc:
        raise unidentified(path) from exc
    except (OSError, ValueError) as exc:  # ValueError: a plugin's own refusal ("not one of the allowed sizes")
        raise ImageError(f"cannot decode the image ({exc})", path=path,
                         fix="The file is truncated or damaged; copy it again") from exc


def unidentified(path: str | Path, head: bytes | None = None) -> ImageError:
    """The one wording for a file whose header no format Pillow reads names: load's, and the daemon's screen before
    the claim (settle.DecodeCheck.not_a_picture). A TIFF names what Pillow lacks (its layout, its compression) and
    what reads (closing9, rev10c); an iPhone's HEIC is named by its ftyp box whatever its name (rev12b). ``head``: the
    file's first bytes, read already from the open file (the screen's, on the main loop, which never reopens a file
    by name: a FIFO swapped in would block it); the file itself is read by name otherwise."""
    source = path if head is None else head
    problem, fix = (tiff_kind.explain(source) or heif_kind.explain(source)
                    or ("not an image Pillow can read", f"Send a {KINDS} file"))
    return ImageError(problem, path=path, fix=fix)


@contextlib.contextmanager
def opened(source: str | Path | BinaryIO, max_pixels: int) -> Iterator[Image.Image]:
    """``with Image.open(source)`` (the header only, nothing decoded yet), refused as too_large over
    ``max_pixels``: the one size limit, for the worker's decode and the daemon's settle check alike; a JPEG of more
    than jpeg_scans.MAX_SCANS scans is refused as bad_image there too (a scan bomb, rev12a). The fix names
    where the limit is set and the value this picture needs: "raise max_pixels" named no place, and max_pixels was
    nowhere in the README (rev7a). A file object passed in stays open (Image.close would close it)."""
    named = source if isinstance(source, (str, Path)) else None  # an open file's errors are named by the caller
    with Image.open(source) as img:
        if img.format in ICON_FORMATS:
            raise ImageError(f"an icon file ({img.format}), not a photo", fix=f"Send a {KINDS} file", path=named)
        pixels = img.width * img.height
        if pixels > max_pixels:
            raise ImageError(f"{img.width}x{img.height} = {pixels:,} pixels is over the limit of {max_pixels:,}",
                             path=named, reason=Reason.TOO_LARGE, fix=_too_large_fix(pixels, max_pixels))
        if img.format in ("JPEG", "MPO") and (scans := jpeg_scans.scans(source)) > jpeg_scans.MAX_SCANS:
            raise ImageError(f"a JPEG with {scans:,} scans, over the limit of {jpeg_scans.MAX_SCANS} (a decompression "
                             "bomb or a damaged file: a photo's progressive JPEG has about 10, each a pass over the "
                             "whole picture)", path=named,
                             fix="Re-save it as a baseline (not progressive) JPEG, or as a PNG, and drop it again")
        yield img


def _with_frames(picture: Image.Image, source: Image.Image) -> Image.Image:
    """``picture`` with its file's count of pages or frames in info["frames"] (see frames), where over one."""
    if getattr(source, "n_frames", 1) > 1:  # a TIFF's pages, a GIF's or WebP's frames, counted undecoded
        picture.info["frames"] = source.n_frames
    return picture


def frames(picture: Image.Image) -> int:
    """How many pages or frames the file ``picture`` was loaded from holds: load decodes the first only, so a
    scanner's multi-page TIFF (three prints in one file) gave one output and no word of pages 2 and 3 (rev9c)."""
    return picture.info.get("frames", 1)


def upright(img: Image.Image) -> Image.Image:
    """The picture turned as its EXIF Orientation says. ImageOps.exif_transpose writes the EXIF back after the turn
    and cannot write a mistyped tag (XResolution as text: real phones and scanners, Pillow #3973, #6882, #7839): it
    raised TypeError or struct.error, so a healthy photo was retried as a machine fault, then failed, and its report
    card dropped (rev9c). Then the turn alone is made, and the EXIF that could not be rewritten is let go, so that
    nothing reading the picture later turns it a second time."""
    img.load()  # a decode error is the file's and is raised as before: only the EXIF rewrite is caught below
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001  (whatever the rewrite of a bad tag raises: the pixels are decoded, whole)
        method = _TURNS.get(_orientation(img))
        turned = img.transpose(method) if method is not None else img.copy()  # transpose keeps info: the ICC
        turned.info.pop("exif", None)
        return turned


def _orientation(img: Image.Image) -> int | None:
    """The EXIF Orientation, or None where the EXIF cannot be read at all: then the photo stays as stored."""
    try:
        return img.getexif().get(ExifTags.Base.Orientation)
    except Exception:  # noqa: BLE001  (a damaged EXIF block: metadata only, the pixels are decoded)
        return None


_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}  # EXIF Orientation -> the turn that makes it upright (exif_transpose's)


def _too_large_fix(pixels: int, max_pixels: int) -> str:
    """Where max_pixels is set, with the value this picture needs; a header claiming 10 times the limit, or the
    default's where the limit was lowered, is named for what it most likely is (a bomb, a damaged header): raising
    the limit that far is no advice. Ten times a lowered limit is a real camera's photo (a 151 MP IQ4 under the
    12 MP a small box is advised), and calling it a bomb named nothing to change (rev8a)."""
    if pixels > 10 * max(max_pixels, DEFAULT_MAX_PIXELS):
        return (f"A decompression bomb or a damaged header, most likely: send a picture of at most {max_pixels:,} "
                "pixels")
    needed = -(-pixels // 1_000_000) * 1_000_000
    lowered = (f" (lowered from the default {DEFAULT_MAX_PIXELS:,}, e.g. to spare a small box's memory)"
               if max_pixels < DEFAULT_MAX_PIXELS else "")
    return (f"Downscale it to at most {max_pixels:,} pixels, or raise max_pixels{lowered} to {needed:,} or more: "
            f"`max_pixels: {needed}` under `defaults:` in config.yaml (or in its recipe); stylize: --max-pixels")


def to_8bit(img: Image.Image) -> Image.Image:
    """RGB, or RGBA where the picture has transparency; CMYK, palette, grey, 16-bit and float handled. A colour
    key (PNG tRNS: info["transparency"] on a palette, grey, RGB or 16-bit picture) is transparency too: only a
    palette's was, so a keyed cut-out painting was styled with its hidden ground and a keyed photo lost its
    transparency (rev6c). A picture with an embedded ICC profile comes out in sRGB (_to_srgb)."""
    icc = img.info.get("icc_profile")  # read first: the float and 16-bit paths below make new pictures without it
    if img.mode == "F":
        img = _float_to_8bit(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        array = np.asarray(img, dtype=np.float32)  # float32 holds every 16-bit value exactly; float64 cost 28 B/px
        peak = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0  # a dark 16-bit stays dark
        key = img.info.get("transparency")
        img = _grey(array, peak, None if key is None else array != key)  # the key is a 16-bit value: before 8 bits
    if "transparency" in img.info and img.mode in ("1", "L", "RGB", "P"):
        img = img.convert("RGBA")  # Pillow's own: the keyed colour (or palette entries) becomes alpha
    if icc:
        srgb = _to_srgb(img, icc)
        if srgb is not None:
            return srgb
    if img.mode in ("RGBA", "LA", "PA"):
        return img.convert("RGBA")
    return img.convert("RGB")


def _float_to_8bit(img: Image.Image) -> Image.Image:
    """A float (mode F) picture, e.g. a 32-bit TIFF: Pillow's own conversion clips 0.8 to 0, so a 0-1 picture came
    out black and was stylized without a word (rev6b). Read as 0-1, 0-255 or 0-65535: the first range that holds
    it, to 1% of the range (clipped: rounding, a raw developer's out-of-gamut hair); above 0-1 it must reach 4% of
    the range, unless its values are whole numbers (a dark 8- or 16-bit picture saved as floats, rev6d). Any other
    is refused: a linear/HDR picture peaking at 1.5 read as 0-255 came out black, a -1..1
    one lost its lower half, each without a word (rev6c); how it was meant to look cannot be told from it."""
    import numpy as np

    array = np.asarray(img, dtype=np.float32)  # a float TIFF's own precision; float64 cost 33 B/px (rev7g)
    if not np.isfinite(array).all():
        raise ImageError("the float image holds NaN or infinite values", fix="Export it as an 8- or 16-bit picture")
    low, top = array.min(initial=0.0), array.max(initial=0.0)
    chunks = np.array_split(array.reshape(-1), max(1, array.size // 1_000_000))  # views: no whole-size temporaries
    whole = all(np.array_equal(c, np.round(c)) for c in chunks)  # an 8- or 16-bit picture saved as floats
    for peak in (1.0, 255.0, 65535.0):
        if low >= -0.01 * peak and top <= 1.01 * peak:
            if peak == 1.0 or top >= 0.04 * peak or whole:
                return _grey(array, peak)
            break
    raise ImageError(f"the float image's values run from {low:g} to {top:g}, which is not a 0-1, 0-255 or 0-65535 "
                     "picture (read as one it would come out black or clipped)",
                     fix="Export it as an 8- or 16-bit picture, or as a float one scaled 0-1")


def _grey(array, peak: float, shown=None) -> Image.Image:
    """8-bit grey from values in 0..peak (a numpy array), rounded; with ``shown`` (a mask), grey and alpha."""
    import numpy as np

    scaled = array * np.float32(255.0 / peak)  # one float32 temporary, then in place: a deep 200 MP picture's
    scaled += np.float32(0.5)                   # load peaked at 5.7-6.7 GB through float64 ones (rev7g)
    np.clip(scaled, 0, 255, out=scaled)
    grey = Image.fromarray(scaled.astype(np.uint8), "L")
    del scaled
    if shown is None:
        return grey
    grey.putalpha(Image.fromarray(np.where(shown, 255, 0).astype(np.uint8), "L"))
    return grey


_COLOUR_MODES = {"CMYK": "CMYK", "L": "L", "LA": "L", "1": "L"}  # the rest is RGB (RGBA, P, PA) for the profile


def _to_srgb(img: Image.Image, icc: bytes) -> Image.Image | None:
    """The picture's colours read through its embedded ICC profile into sRGB, alpha kept; None where the profile
    is broken or does not fit the picture (a grey profile on an RGB one): the caller's plain conversion is still a
    usable picture. The network, the contact sheet and every viewer take the values as sRGB: an Adobe RGB or
    Display P3 photo (cameras, phones) read as its raw values was styled with shifted colours, an Adobe RGB green
    (40, 180, 60) taken for sRGB's (0, 181, 42) (rev7a); only CMYK went through its profile. An RGB picture
    tagged sRGB is None too, unconverted: the conversion would change nothing and cost more than the decode (icc.py)."""
    from PIL import ImageCms

    if _COLOUR_MODES.get(img.mode, "RGB") == "RGB" and is_srgb(icc):
        return None
    alpha = img.getchannel("A") if img.mode in ("RGBA", "LA", "PA") else None
    colour = img.convert(_COLOUR_MODES.get(img.mode, "RGB"))
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.profileToProfile(colour, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):  # a broken or misfit profile
        return None
    if alpha is not None:
        srgb.putalpha(alpha)
    return srgb


def digest(img: Image.Image) -> str:
    """A picture's identity by its pixels, mode and size (the style cache's key, a checkpoint's fingerprint)."""
    import hashlib

    return hashlib.sha1(img.tobytes() + repr((img.mode, img.size)).encode()).hexdigest()


def fit_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(width, height) with the long side scaled to ``long_side``, keeping the aspect ratio: what ``fit`` makes.

    Kept apart so that the daemon can predict a picture's working shape from its header alone (batching)."""
    w, h = size
    scale = long_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def fit(img: Image.Image, size: int) -> Image.Image:
    """Scale so that the longest side is ``size`` (up or down), keeping the aspect ratio."""
    new = fit_size(img.size, size)
    return img if new == img.size else img.resize(new, Image.Resampling.LANCZOS)


def resize_once(img: Image.Image, hw: tuple[int, int]) -> Image.Image:
    """Straight from the original to (height, width) with LANCZOS, in one step: every working copy of a
    picture (each pyramid level, each style, each blend part) is made this way, never from a resized copy."""
    img = img.convert("RGB")
    return img if img.size == (hw[1], hw[0]) else img.resize((hw[1], hw[0]), Image.Resampling.LANCZOS)


def to_tensor(img: Image.Image, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 3, H, W) float32 RGB in 0-255 pixel units."""
    return from_bytes(to_bytes(img), device)


def to_bytes(img: Image.Image) -> torch.Tensor:
    """The picture's 8-bit RGB values, (H, W, 3) uint8 on the CPU: to_tensor's host half, which a prefetch thread
    can make ahead (prepared.py)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8))


def from_bytes(values: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """to_tensor's device half: the 8-bit values cross to the device (a quarter of float32's bytes) and become
    float there; the same values and strides as converting on the host first."""
    return values.to(device).permute(2, 0, 1).unsqueeze(0).float()


def to_image(pixels: torch.Tensor) -> Image.Image:
    array = pixels.detach().float().squeeze(0).clamp(0, 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def resize_tensor(pixels: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    import torch

    if tuple(pixels.shape[-2:]) == hw:
        return pixels
    return torch.nn.functional.interpolate(pixels, size=hw, mode="bicubic", align_corners=False).clamp(0, 255)


def encode(img: Image.Image, fmt: str = "png", quality: int = DEFAULT_QUALITY, alpha: Image.Image | None = None,
           dpi: float | None = None) -> bytes:
    """The file's bytes, in memory: callers hash them before they touch the disk. ``dpi`` (a print's
    print_dpi) goes into the file's header: PNG pHYs, JPEG JFIF density, WebP has none. The sRGB profile is
    embedded, as a photo tool's export does: the values are sRGB (load converts through a photo's profile), and a
    colour-managed viewer that takes an untagged file for the screen's own space (wide-gamut screens) shows them
    right."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise SettingsError("format", f"unknown output format {fmt!r}", fix=f"Use {FORMAT_NAMES}")
    if alpha is not None and fmt in KEEPS_ALPHA:  # a JPEG is the picture on white (transparency.py)
        img = img.convert("RGBA")
        img.putalpha(alpha.resize(img.size, Image.Resampling.LANCZOS))
    options = {"quality": quality} if fmt in ("jpeg", "jpg", "webp") else {}
    options["icc_profile"] = srgb_profile()
    if dpi and fmt != "webp":
        options["dpi"] = (dpi, dpi)
    buffer = io.BytesIO()
    img.save(buffer, FORMATS[fmt], **options)
    return buffer.getvalue()


@functools.cache
def srgb_profile() -> bytes:
    """LittleCMS's sRGB profile (ICC v4, 588 bytes) with its creation date fixed: LittleCMS stamps the time it is
    written, and an output's bytes must depend on its pixels alone (equal results, equal files)."""
    from PIL import ImageCms

    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    data[24:36] = struct.pack(">6H", 2026, 1, 1, 0, 0, 0)  # the header's dateTimeNumber; the profile ID is unset
    return bytes(data)


def save(img: Image.Image, path: str | Path, fmt: str | None = None, quality: int = DEFAULT_QUALITY,
         alpha: Image.Image | None = None, dpi: float | None = None) -> Path:
    """Write atomically in PNG, JPEG or WebP (format from ``fmt`` or the file's suffix)."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "png").lower()
    return write_atomic(encode(img, fmt, quality, alpha, dpi), path)


# --- colour: luminance-only transfer (Gatys, Bethge, Hertzmann & Shechtman 2016) -------------

def luminance(img: Image.Image) -> Image.Image:
    """The Y of YCbCr, as a 3-channel grey picture the network can read."""
    return img.convert("RGB").convert("YCbCr").getchannel("Y").convert("RGB")


def match_luminance(style_y: Image.Image, content_y: Image.Image) -> Image.Image:
    """Shift and scale the style's luminance to the content's mean and spread, as the paper does."""
    import numpy as np

    s = np.asarray(style_y.convert("L"), dtype=np.float64)
    c = np.asarray(content_y.convert("L"), dtype=np.float64)
    matched = (s - s.mean()) * (c.std() / max(s.std(), 1e-6)) + c.mean()
    return Image.fromarray(np.clip(matched + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")


def recombine_colour(result_y: Image.Image, content: Image.Image) -> Image.Image:
    """The result's luminance with the content's chroma (Cb, Cr)."""
    _, cb, cr = content.convert("RGB").resize(result_y.size, Image.Resampling.LANCZOS).convert("YCbCr").split()
    y = result_y.convert("L")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Image.merge("YCbCr", (y, cb, cr)).convert("RGB")
