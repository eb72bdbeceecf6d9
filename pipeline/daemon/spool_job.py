"""A claimed photo's record (job.json) as the spool keeps it: the Job, its id and times. Apart from spool.py, which
moves the files (and re-exports these), to keep that module under the house's 400 lines."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

CHECKPOINT = "checkpoint.pt"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_job_id() -> str:
    """Sortable by claim time, unique across daemons."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class Job:
    """One claimed photo, as job.json records it: saved after every change, so a restart knows its attempts,
    crashes and planned names and never redoes a finished step (a second output, a second move)."""

    id: str
    name: str
    source: str  # path relative to the inbox, e.g. "starry/photo.jpg"
    folder: str  # the job's folder under work/
    queued_at: str
    claimed_at: str = ""
    started_at: str = ""
    sidecar: str | None = None  # its copy's name in the job folder
    sidecar_from: str | None = None  # the inbox sidecar it was copied from, relative to the inbox
    sidecar_id: list[int] | None = None  # that file's identity, to remove it by and never a new drop of its name
    sidecar_error: str | None = None  # why it could not be read (copied): the photo fails as bad_sidecar
    attempts: int = 0
    not_before: float = 0.0
    output_stem: str | None = None
    last_error: str | None = None
    owner: str = ""
    crashes: int = 0  # the daemon died while running this job alone, in a row: not the photo's fault (attempts)
    running: bool = False  # set while a try runs; found set at recovery, it means the daemon crashed in it
    batched: bool = False  # the running try runs in a batch: a crash then is not known to be this photo's
    batch_crashes: int = 0  # the daemon died while this job ran in a batch: it runs alone since, never failed for it
    kept_as: str | None = None  # the name planned in done/ (the JSON log records it before the move)
    failing_as: str | None = None  # the name planned in failed/, saved before linking (see failed_before)
    stops: int = 0  # stops that found a step of it running, in a row, no step completed between (jobs.STUCK_STOPS)
    stepped: int = 0  # steps completed, all tries together, as its progress events told them (never goes back)
    stop_stepped: int | None = None  # ``stepped`` at the last of those stops
    record_error: str | None = None  # why its job.json could not be read at recovery: it fails as bad_job_record

    @classmethod
    def rebuilt(cls, folder: Path, photo: str, why: str) -> "Job":
        """A job for a photo found in ``folder`` without a usable record (``why``: what was wrong with it). It is
        failed at its try's begin (prechecks.pre_check_record), never styled: its recipe folder, its tries and whether its
        output was written went with the record, so a run could style it with the wrong recipe, or a second time."""
        return cls(folder.name, photo, photo, str(folder), queued_at="", record_error=why)

    def charge_crash(self) -> None:
        """The daemon (or its slot) died inside this try: a crash, not an attempt. A crash in a batch may be any
        batchmate's: it only sends the photo to run alone (batching.runs_alone); only crashes while it ran alone
        count toward max_crashes, so one kill in a batch no longer fails every batchmate at max_crashes: 1."""
        if self.batched:
            self.batch_crashes += 1
        else:
            self.crashes += 1
        self.running, self.batched, self.attempts = False, False, max(0, self.attempts - 1)

    @property
    def dir(self) -> Path:
        return Path(self.folder)

    @property
    def input(self) -> Path:
        return self.dir / self.name

    @property
    def checkpoint(self) -> Path:
        return self.dir / CHECKPOINT

    @property
    def recipe_folder(self) -> str | None:
        parts = Path(self.source).parts
        return parts[0] if len(parts) > 1 else None
