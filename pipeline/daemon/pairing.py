"""Which sidecar a photo reads: ``photo.yaml`` or ``photo.jpg.yaml`` beside it, either Unicode spelling of its name.

The claim's one rule (watcher.py finds the photos, sidecars.py the sidecars no photo reads, the spool lets a sidecar
go when no photo waiting reads it); kept apart from the watcher, which had grown to the 400-line limit (rev10e).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..fsio import nfc, spellings

SIDECAR_SUFFIXES = (".yaml", ".yml")


def is_sidecar(name: str) -> bool:
    return name.lower().endswith(SIDECAR_SUFFIXES)


def sidecar_for(photo: Path, spelt: dict[str, list[str]] | None = None) -> Path | None:
    """The photo's regular-file sidecar, if any: ``photo.yaml`` beside ``photo.jpg``, else ``photo.jpg.yaml``
    (the whole name, as darktable's and Lightroom's .xmp files are named: it was never read, rev7a finding 4).
    lstat, not is_file(): a 255-byte photo name gives a sidecar name over the limit, and is_file() raises
    ENAMETOOLONG instead of saying no. A name with an accent may be spelt two ways (NFC typed here, NFD copied from
    a Mac: Linux keeps the bytes): a sidecar matching in NFC is the photo's too; it was never paired (closing9).
    Not while its twin, the same name spelt the other way, is beside it: that sidecar is then the twin's, spelt as
    the twin is, and the photo took it (and, claimed first, styled itself with the twin's settings; rev10c).
    ``spelt``: its folder's fsio.spellings, from a caller asking for many photos of one folder (sidecars.py)."""
    suffixes = [*SIDECAR_SUFFIXES, *(s.upper() for s in SIDECAR_SUFFIXES)]  # a.YAML too (rev7f: never read)
    candidates = [*(photo.with_suffix(s) for s in suffixes), *(photo.with_name(photo.name + s) for s in suffixes)]
    if spelt is not None:  # only the names there are looked at: 20-30 lstats a photo of a Mac's, 1.2-1.6 s for 3,000
        candidates = [c for c in candidates if nfc(c.name) in spelt]
    found = _first_sidecar(photo, candidates)
    if found is not None or photo.name.isascii():  # an ASCII name has one spelling: no folder listing
        return found
    try:
        spelt = spellings(os.listdir(photo.parent)) if spelt is None else spelt
    except OSError:
        return None
    if len(spelt.get(nfc(photo.name), ())) > 1:
        return None  # its twin is there: an exact match only (above), never a sidecar spelt as the twin is
    found = _first_sidecar(photo, [c.with_name(spelt.get(nfc(c.name), [c.name])[0]) for c in candidates])
    return None if found is not None and _owned_elsewhere(photo, found, spelt) else found


def _owned_elsewhere(photo: Path, sidecar: Path, spelt: dict[str, list[str]]) -> bool:
    """Whether another file beside ``photo`` has the stem its ``sidecar`` (spelt the other Unicode way) is spelt
    with: the sidecar is that file's. Café Renée.jpg and .png from a Mac (NFD) share one NFD Café Renée.yaml beside
    Café Renée.jpg typed here (NFC); once the NFD .jpg was claimed, the NFC .jpg had no twin left and took the
    sidecar still kept for the NFD .png (rev10e). Only for a sidecar spelt the other way: one listing, no lstat."""
    stem = sidecar.with_suffix("").name
    return any(name != photo.name and not is_sidecar(name) and (name == stem or Path(name).stem == stem)
               for names in spelt.values() for name in names)


def _first_sidecar(photo: Path, candidates: list[Path]) -> Path | None:
    for candidate in candidates:
        owner = candidate.with_suffix("")
        if owner != photo and _is_file(owner):
            continue  # x.jpg.yaml beside x.jpg.jpg is x.jpg's own when x.jpg is there (rev7f): never two photos'
        if _is_file(candidate):
            return candidate
    return None


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False
