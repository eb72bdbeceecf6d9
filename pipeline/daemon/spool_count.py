"""Counting the spool for `status`: photos in done/ and failed/, jobs in work/ (read-only; spool.py moves files).

Kept apart from spool.py so the spool's moves and recovery fit one module; spool re-exports these names.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

RECORD = "job.json"  # the job record in each work/<job>/ folder
SIDECARS = (".yaml", ".yml")


def count_in_work(work: Path) -> int:
    """Job folders that hold a job's input: an empty folder left by a crash is not work (issue 9)."""
    try:
        folders = [p for p in work.iterdir() if p.is_dir()]
    except OSError:
        return 0
    count = 0
    for folder in folders:
        try:
            name = json.loads((folder / RECORD).read_text(encoding="utf-8"))["name"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        count += os.path.lexists(folder / name)
    return count


def is_photo_entry(name: str) -> bool:
    """done/ and failed/ hold photos, their sidecars and error notes: only the photos count."""
    return not name.startswith(".") and not name.lower().endswith(SIDECARS + (".error.json",))


def folder_counts(done: Path, failed: Path, work: Path) -> dict[str, int]:
    """Photos in done/ and failed/ (not sidecars or notes), and jobs in work/: what `status` shows."""
    def count(folder: Path, keep) -> int:
        try:
            return sum(1 for p in folder.iterdir() if keep(p))
        except OSError:
            return 0
    return {"done": count(done, lambda p: is_photo_entry(p.name)),
            "failed": count(failed, lambda p: p.name.endswith(".error.json") and not p.name.startswith(".")),
            "in_work": count_in_work(work)}
