"""What a style name that names no file may have meant: a close name in styles_dir, and where names are read from.

config.yaml's `styles: [starry-night.jpg]` said only "no such file. Check the path", with starry_night.jpg beside
it; a path written from the repository's root (pipeline/assets/styles/starry_night.jpg) said ".../styles/pipeline/
assets/styles/starry_night.jpg: no such file" without saying that style names are read from styles_dir (rev11b).
Kept apart from config_build.py, at its 400-line limit.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path, PurePosixPath

from ..fsio import on_disk

LISTED = 2000  # paintings looked at for a guess: a styles folder holds tens; a bound, not a limit on styles


def missing_style_hint(name: str, styles_dir: Path) -> str:
    """"" when ``name`` is a file under ``styles_dir``; else what to add to "no such file": the close name there, and
    that names are relative to styles_dir where ``name`` holds a folder."""
    if on_disk(styles_dir / name).exists():  # it is there (in either Unicode spelling): another problem
        return ""
    names = _paintings(styles_dir)
    base = PurePosixPath(name).name
    same = [n for n in names if PurePosixPath(n).name == base]  # a path from elsewhere ending in a painting's name
    guess = same[:1] or difflib.get_close_matches(name, names, n=1) or difflib.get_close_matches(base, names, n=1)
    where = f": style names are relative to styles_dir ({styles_dir})" if "/" in name or same else ""
    return where + (f"; did you mean {guess[0]!r}?" if guess else "")


def _paintings(styles_dir: Path) -> list[str]:
    """The files under ``styles_dir``, as names relative to it (hidden ones left out), at most LISTED."""
    found: list[str] = []
    for top, dirs, files in os.walk(styles_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [(Path(top) / f).relative_to(styles_dir).as_posix() for f in sorted(files) if not f.startswith(".")]
        if len(found) >= LISTED:
            break
    return found[:LISTED]
