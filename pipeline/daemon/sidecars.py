"""Sidecars in the inbox that no photo will read (rev7a finding 4).

A sidecar is read once, when its photo is claimed (pairing.sidecar_for). One saved a moment after its photo was
claimed, or named for a photo that is not there, was never read and never told: its photo was styled with the
default recipe and the sidecar lay in the inbox for good, with nothing in the log or in `status`. The rescan now
finds them; the daemon warns once for each and `status` lists them, so the morning shows why a photo's settings
were not used.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..fsio import nfc, spellings
from .pairing import is_sidecar, sidecar_for
from .watcher import wanted

UNPAIRED_AFTER_S = 30.0  # a sidecar dropped just before its photo is not told: the photo is on its way
UNPAIRED_TICK_S = 5.0  # how often the daemon looks for them (daemon._check_unpaired): told 30-35 s after
WHY = ("no photo beside it to read it: a sidecar is read when its photo is claimed, so drop it before or together "
       "with the photo (photo.yaml or photo.jpg.yaml beside photo.jpg); a photo it was meant for may already have "
       "been styled without it")


def unpaired_sidecars(inbox: Path, exclude: tuple[Path, ...] = (), now: float | None = None,
                      after: float = UNPAIRED_AFTER_S) -> dict[str, str]:
    """Sidecars under ``inbox`` (its relative path -> why) older than ``after`` seconds that no file beside them
    would pair with; hidden and excluded folders (the daemon's own) are passed over, as the scan passes them."""
    now = time.time() if now is None else now
    found: dict[str, str] = {}
    for top, dirs, files in os.walk(inbox):
        here, listing = Path(top), [*files, *dirs]
        dirs[:] = [d for d in dirs if not d.startswith(".") and here / d not in exclude
                   and not (here / d).is_symlink()]
        sidecars = [name for name in files if is_sidecar(name) and not name.startswith(".")]
        if not sidecars:
            continue  # nothing to pair: no photo of this folder is looked at
        photos = _Photos(here, listing, [name for name in files if not name.startswith(".")])
        for name in sidecars:
            path = here / name
            if _older(path, now, after) and next(photos.readers(name), None) is None:
                found[path.relative_to(inbox).as_posix()] = WHY
    return found


def read_by_another(photo: Path, sidecar: Path, inbox: Path, exclude: tuple[Path, ...] = ()) -> bool:
    """Whether a file still waiting beside ``photo`` reads its ``sidecar`` too: pair.yaml beside pair.jpg and
    pair.png (a RAW+JPEG export, one picture in two formats). The claim, which always copies the sidecar in, then
    leaves it for the other (Spool.let_go_sidecar, asked after the photo's move); it went with the first claimed,
    and the other was styled with its recipe alone, unwarned (rev10b). Asked only for a photo that has a sidecar:
    one listing of its folder. The photo, moved out by then, is still spelt in it: its twin spelt the other Unicode
    way reads no sidecar of its name while it is there (sidecar_for), and must not when it has just left."""
    try:
        names = os.listdir(sidecar.parent)
    except OSError:
        return False
    listing = names if photo.name in names else [*names, photo.name]
    return any(wanted(sidecar.parent / name, inbox, exclude)
               for name in _Photos(sidecar.parent, listing, names).readers(sidecar.name) if name != photo.name)


class _Photos:
    """A folder's photos indexed once by their NFC name and NFC stem, the two keys a sidecar's stem may match (x.yaml:
    x.*; x.jpg.yaml: x.jpg too), and its names' spellings for sidecar_for. Each sidecar then asks only the photos
    under its key: it asked every photo of the folder (two NFC forms and a Path each), sidecars x photos, 6.4-6.8 s a
    call for 2,000 photos each with its sidecar on the 2-core box, every UNPAIRED_TICK_S on the main loop (rev10c)."""

    def __init__(self, here: Path, listing: list[str], files: list[str]) -> None:
        self.here, self.spelt = here, spellings(listing)
        self.by_key: dict[str, list[str]] = {}
        for name in files:
            if not is_sidecar(name):
                for key in {nfc(name), nfc(Path(name).stem)}:
                    self.by_key.setdefault(key, []).append(name)

    def readers(self, sidecar: str):
        """The photos beside it that read ``sidecar``, each asked by sidecar_for, the claim's own rule. Asking every
        photo cost sidecar_for's 8-12 lstats for each photo in the inbox at every rescan, ~2 ms a photo on the
        2-core box, on the main loop that claims the next photo (eighth session)."""
        stem = nfc(Path(sidecar).stem)  # either spelling of an accent (a Mac's NFD) pairs, as sidecar_for pairs them
        return (photo for photo in self.by_key.get(stem, ())
                if sidecar_for(self.here / photo, self.spelt) == self.here / sidecar)


def _older(path: Path, now: float, after: float) -> bool:
    try:
        return now - os.lstat(path).st_mtime >= after
    except OSError:
        return False
