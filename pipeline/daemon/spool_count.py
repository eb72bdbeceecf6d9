"""Reading the spool: its job records and what a job folder holds (recovery), and its counts for `status`
(read-only; spool.py moves files).

Kept apart from spool.py so the spool's moves and recovery fit one module; spool re-exports these names.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .spool_job import CHECKPOINT, Job

RECORD = "job.json"  # the job record in each work/<job>/ folder
SIDECARS = (".yaml", ".yml")
TEXT_FIELDS = ("id", "name", "source", "folder", "queued_at")  # a record lacking one is no job this version can run


def read_job(folder: Path) -> Job:
    """The folder's job.json as a Job. OSError: it cannot be read now (EIO, ESTALE, EMFILE; missing); ValueError:
    what it holds is no record of ours (torn, empty, not an object, a field missing or of the wrong kind: another
    version's), which a retry cannot mend (rev12a: both were read as "no job", and the photo beside it deleted)."""
    data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("is not a JSON object")
    lacking = [key for key in TEXT_FIELDS if not isinstance(data.get(key), str)]
    if lacking:
        raise ValueError(f"lacks {', '.join(lacking)}")
    if data["name"] in ("", ".", "..") or Path(data["name"]).name != data["name"]:
        raise ValueError(f"names no file of its folder ({data['name']!r})")
    try:
        return Job(**{f.name: data[f.name] for f in dataclasses.fields(Job) if f.name in data})
    except TypeError as exc:
        raise ValueError(str(exc)) from exc


def photos_in(folder: Path) -> list[str]:
    """What a job folder holds that is not ours to throw away: its photo (or a file put there by hand), not the
    record, lock, checkpoint, temps (all hidden or ours) or the sidecar's copy (the inbox had the original)."""
    return sorted(e.name for e in os.scandir(folder) if is_photo_entry(e.name) and e.name not in (RECORD, CHECKPOINT))


def holds_photo(folder: Path) -> bool:
    """Its job's input is there, or, its record unreadable or naming another file, some photo is (rev12a: such a
    folder was not counted, so `status` said 0 in work/ while it held a photo)."""
    try:
        if os.path.lexists(folder / read_job(folder).name):
            return True
    except (OSError, ValueError):
        pass
    try:
        return bool(photos_in(folder))
    except OSError:
        return False


def count_in_work(work: Path) -> int:
    """Job folders that hold a photo: an empty folder left by a crash is not work (issue 9)."""
    try:
        folders = [p for p in work.iterdir() if p.is_dir()]
    except OSError:
        return 0
    return sum(holds_photo(folder) for folder in folders)


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
