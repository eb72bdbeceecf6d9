"""Writing a job's results to the outbox: the image and its JSON log, atomically, never overwriting.

The stem is recorded in the job before anything is written, so a restart after a crash here reuses
it (the image's presence says the job is done) instead of writing a second copy.
"""
from __future__ import annotations

import errno
import hashlib
import io
from pathlib import Path

from ..engine.settings import OUTPUT_FORMATS
from ..fsio import write_atomic, write_json
from .spool import unique_names

EXTENSIONS = {name: suffixes[0][1:] for name, (_, *suffixes) in OUTPUT_FORMATS.items()}  # jpeg: .jpg


def image_name(stem: str, fmt: str) -> str:
    return f"{stem}.{EXTENSIONS[fmt]}"


STEM_RESERVE = len(".sheet.png")  # the longest name made from a stem: a stem this much under NAME_MAX fits all


def sheet_name(stem: str) -> str:
    return f"{stem}.sheet.png"


def choose_stem(folder: Path, stem: str, fmt: str, sheet: bool = False) -> str:
    """The first stem whose image and log names (and sheet's, with ``sheet``) are all free; a long one shortened
    (never ENAMETOOLONG). Why the sheet: trip.sheet.jpg's output is trip.sheet.png, the very name trip.jpg's sheet
    takes (rev8c finding 6: the sheet replaced it)."""
    for candidate in unique_names(folder, stem, reserve=STEM_RESERVE):
        names = [image_name(candidate.name, fmt), f"{candidate.name}.json"] + [sheet_name(candidate.name)] * sheet
        if not any((folder / name).exists() for name in names):
            return candidate.name
    raise AssertionError("unreachable")


def make_folder(folder: Path) -> None:
    """Make an output folder (and its parents). A file where the folder (or a parent) must be raises
    NotADirectoryError naming the folder, never FileExistsError: EEXIST is no folder fault, so the photo would be
    retried and failed as too_many_attempts, while ENOTDIR pauses claiming with "move the file away"
    (folder_faults; rev8d finding 1: a sync tool's file in place of outbox/starry failed every starry photo)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise NotADirectoryError(errno.ENOTDIR, "a file where a folder must be", str(folder)) from exc


def write(folder: Path, stem: str, fmt: str, data: bytes, record: dict) -> tuple[Path, Path]:
    """Log first, image last: a visible image always has its log, and both are whole files.

    Both are linked into place, so a name another daemon took in the meantime raises FileExistsError.
    """
    make_folder(folder)
    image_path = folder / image_name(stem, fmt)
    log_path = folder / f"{stem}.json"
    record = {**record, "output": {**record.get("output", {}), "name": image_path.name,
                                   "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}
    write_json(log_path, record, replace=False)
    try:
        write_atomic(data, image_path, replace=False)
    except FileExistsError:
        log_path.unlink(missing_ok=True)
        raise
    return image_path, log_path


SHEET_HEIGHT = 384  # issue 13: a sheet is a thumbnail to glance at, not a second full-size output


def contact_sheet(content: "Image.Image", style: "Image.Image", result: "Image.Image", out_path: Path,
                  height: int = SHEET_HEIGHT) -> Path:
    """content | style | result side by side on white, as PNG, each at most ``height`` high and 4x that wide:
    a 4000 px photo's sheet costs a thumbnail's encode (milliseconds), not a 12-megapixel PNG (about a second).
    Linked into place, never replacing: a name taken since the stem was chosen (another photo's output written
    in the meantime) raises FileExistsError and the sheet is skipped, never the output lost."""
    from PIL import Image

    from ..engine.transparency import flatten

    parts = []
    for im in (content, style, result):
        part = flatten(im)  # on white, as styled: convert("RGB") showed the colours under transparency (rev12b)
        part.thumbnail((4 * height, height), Image.Resampling.LANCZOS, reducing_gap=2.0)
        parts.append(part)
    sheet = Image.new("RGB", (sum(p.width for p in parts), max(p.height for p in parts)), "white")
    x = 0
    for part in parts:
        sheet.paste(part, (x, 0))
        x += part.width
    buf = io.BytesIO()
    sheet.save(buf, "PNG")
    write_atomic(buf.getvalue(), out_path, replace=False)
    return out_path
