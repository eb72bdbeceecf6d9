"""What the scan passes over that a person may have meant as input: folders named like a picture, hidden folders,
camera RAW files; found at each rescan, warned of once a why, listed by `status` (issue 9, rev11b, rev11c).

Apart from watcher.py, which decides what is a candidate: this decides how those left out are named and told.
"""
from __future__ import annotations

import os
from pathlib import Path

import structlog

from ..engine.tiff_kind import RAW_FIX, is_camera_raw
from .watcher import ignored, picture_named

# A camera RAW is never claimed (rev11b): Pillow reads only its small preview, which was styled, upscaled, unsaid.
# It stays in the inbox, as a photo tool's .xmp does, and is listed with the skipped folders: beside its JPEG twin
# (a RAW+JPEG camera) nothing is lost, and alone it is told, not failed with a notice per photo every night.
RAW_WHY = (f"a camera RAW file, left in the inbox: only its small preview could be styled. {RAW_FIX} "
           "(or move the RAW files out of the inbox: beside their JPEGs they are not needed here)")
NAMED = 5  # skipped files or folders named for one why (status.json, `status`, the log); beyond, a count (rev11c)
log = structlog.get_logger("style-pipeline")


def skipped_folders(inbox: Path, exclude: tuple[Path, ...] = ()) -> dict[str, str]:
    """Folders the scan passes over that a person may have meant as input, each with why (issue 9), and camera RAW
    files (why: RAW_WHY).

    A folder named like a picture (``x.jpg/``) and a hidden folder (``.photos/``) would otherwise sit
    in the inbox for ever, unseen by `status`.
    """
    found: dict[str, str] = {}
    for top, dirs, files in os.walk(inbox):
        here = Path(top)
        under = "" if here == inbox else here.relative_to(inbox).as_posix() + "/"  # once a folder, not once a RAW
        found.update({under + name: RAW_WHY for name in files if is_camera_raw(name) and not ignored(name)})
        for name in list(dirs):
            rel = under + name
            if name.startswith("."):
                found[rel] = "a hidden folder: nothing in it is processed; move its pictures into the inbox"
            elif picture_named(name):
                found[rel] = "a folder named like a picture, not a picture: move the picture itself into the inbox"
            if rel in found or (here / name) in exclude or (here / name).is_symlink():
                dirs.remove(name)
    return found


def skipped_groups(skipped: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """(kind, why, every name sorted) for each why among skipped_folders' finds, kind "file" (a camera RAW) or
    "folder". A RAW+JPEG card leaves a RAW per photo in the inbox for good, and each was its own warning at every
    start, its own entry in status.json (written every second) and its own line of `status` (rev11c)."""
    groups: dict[str, list[str]] = {}
    for rel, why in sorted(skipped.items()):
        groups.setdefault(why, []).append(rel)
    return [("file" if why == RAW_WHY else "folder", why, names) for why, names in groups.items()]


def warn_new(skipped: dict[str, str], told: dict[str, str]) -> None:
    """One warning per why for the finds not ``told`` at an earlier rescan: 300 RAWs left were 300 warnings a start
    (rev11c); the first NAMED are named, and all counted."""
    for kind, why, names in skipped_groups({k: v for k, v in skipped.items() if k not in told}):
        named = {kind: names[0]} if len(names) == 1 else {"count": len(names), f"{kind}s": names[:NAMED]}
        event = f"skipped a {kind} in the inbox" if len(names) == 1 else f"skipped {kind}s in the inbox"
        log.warning(event, **named, why=why)
