"""The spool: where a file lies is its state (inbox -> work -> done | failed). Only this module renames.

Durability rules (see ../shared/notes/hot-folder.md):
- A claim is one atomic rename into a fresh ``work/<job_id>/``; when two daemons race, the rename decides.
- The job record (job.json) is written before the rename and replaced atomically after every change.
- A job being processed holds an flock on its folder; a killed process drops it, so recovery can
  tell an orphaned job (lock free) from a neighbour daemon's live one (lock held).
- Moves into done/ and failed/ never overwrite: link to a free name, then unlink the old one.
"""
from __future__ import annotations

import dataclasses
import enum
import fcntl
import json
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

RECORD = "job.json"
LOCK = ".lock"
CHECKPOINT = "checkpoint.pt"
INCOMPLETE_GRACE = 60.0  # a job folder without its input, older than this, is a claim that lost its race


class Reason(enum.StrEnum):
    """Stable codes for failed/'s .error.json, so scripts can sort failures without parsing sentences."""

    NOT_REGULAR = "not_a_regular_file"
    EMPTY = "empty_file"
    BAD_IMAGE = "bad_image"
    TOO_LARGE = "too_large"
    TOO_THIN = "too_thin"
    BAD_SIDECAR = "bad_sidecar"
    UNKNOWN_RECIPE = "unknown_recipe"
    ENGINE = "engine_failed"
    GAVE_UP = "too_many_attempts"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_job_id() -> str:
    """Sortable by claim time, unique across daemons."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class Job:
    id: str
    name: str
    source: str  # path relative to the inbox, e.g. "starry/photo.jpg"
    folder: str  # the job's folder under work/
    queued_at: str
    claimed_at: str = ""
    started_at: str = ""
    sidecar: str | None = None
    attempts: int = 0
    not_before: float = 0.0
    output_stem: str | None = None
    last_error: str | None = None
    owner: str = ""

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


class Spool:
    def __init__(self, inbox: Path, work: Path, done: Path, failed: Path) -> None:
        self.inbox, self.work, self.done, self.failed = inbox, work, done, failed
        self._locks: dict[str, int] = {}
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    # --- claiming -------------------------------------------------------------------------
    def claim(self, path: Path, queued_at: str, sidecar: Path | None = None) -> Job | None:
        """Move ``path`` (and its sidecar) into a fresh job folder; None if another daemon took it first."""
        job_id = new_job_id()
        folder = self.work / job_id
        folder.mkdir()
        self._lock(folder)
        job = Job(job_id, path.name, str(path.relative_to(self.inbox)), str(folder), queued_at,
                  claimed_at=now_iso(), owner=self.owner)
        self.save(job)
        try:
            os.rename(path, job.input)
        except FileNotFoundError:
            self._discard(folder)
            return None
        if sidecar is not None:
            try:
                os.rename(sidecar, folder / sidecar.name)
                job.sidecar = sidecar.name
                self.save(job)
            except FileNotFoundError:
                pass  # the sidecar went away; the photo is ours and goes on with its recipe
        return job

    def save(self, job: Job) -> None:
        tmp = job.dir / (RECORD + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(dataclasses.asdict(job), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, job.dir / RECORD)

    # --- endings --------------------------------------------------------------------------
    def complete(self, job: Job, keep_input: bool = True) -> Path | None:
        """After the output is written: the input goes to done/ (or is deleted), the job folder away."""
        kept = None
        if keep_input:
            kept = self._move_no_clobber(job.input, self.done, job.name)
        else:
            job.input.unlink(missing_ok=True)
        if job.sidecar:
            self._move_no_clobber(job.dir / job.sidecar, self.done if keep_input else self.failed, job.sidecar)
        self._discard(job.dir)
        return kept

    def fail(self, job: Job, reason: Reason, message: str, fix: str) -> Path:
        """The input and its sidecar to failed/, with <name>.error.json saying what was wrong and what to do."""
        kept = self._move_no_clobber(job.input, self.failed, job.name)
        if job.sidecar and (job.dir / job.sidecar).exists():
            self._move_no_clobber(job.dir / job.sidecar, self.failed, job.sidecar)
        error = {"file": job.name, "source": job.source, "kept_as": kept.name, "code": str(reason),
                 "message": message, "fix": fix, "failed_at": now_iso(), "attempts": job.attempts,
                 "job_id": job.id, "queued_at": job.queued_at}
        write_json_atomic(self.failed / f"{kept.name}.error.json", error)
        self._discard(job.dir)
        return kept

    def release(self, job: Job) -> None:
        """Leave the job in work/ for the next start (SIGTERM), dropping our lock."""
        self._unlock(job.dir)

    # --- recovery -------------------------------------------------------------------------
    def recover(self) -> list[Job]:
        """Jobs left in work/ by a dead daemon (their lock is free), oldest first; stale claims removed."""
        jobs = []
        for folder in sorted(p for p in self.work.iterdir() if p.is_dir()):
            if folder.name in self._locks or not self._try_lock(folder):
                continue
            job = self._read(folder)
            if job is None or not os.path.lexists(job.input):
                age = time.time() - folder.stat().st_mtime
                if age > INCOMPLETE_GRACE:
                    self._discard(folder)
                else:
                    self._unlock(folder)
                continue
            job.folder, job.owner = str(folder), self.owner
            self.save(job)
            jobs.append(job)
        return jobs

    def _read(self, folder: Path) -> Job | None:
        try:
            data = json.loads((folder / RECORD).read_text(encoding="utf-8"))
            return Job(**{f.name: data[f.name] for f in dataclasses.fields(Job) if f.name in data})
        except (OSError, ValueError, TypeError):
            return None

    # --- counting (status) ----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        def files(folder: Path, suffix: str = "") -> int:
            try:
                return sum(1 for p in folder.iterdir() if p.name.endswith(suffix) and not p.name.startswith("."))
            except OSError:
                return 0
        return {"done": files(self.done), "failed": files(self.failed, ".error.json"),
                "in_work": sum(1 for p in self.work.iterdir() if p.is_dir()) if self.work.is_dir() else 0}

    # --- helpers --------------------------------------------------------------------------
    def _move_no_clobber(self, src: Path, folder: Path, name: str) -> Path:
        for candidate in unique_names(folder, name):
            try:
                os.link(src, candidate, follow_symlinks=False)
            except FileExistsError:
                continue
            os.unlink(src)
            return candidate
        raise AssertionError("unreachable")

    def _lock(self, folder: Path) -> None:
        if not self._try_lock(folder):
            raise RuntimeError(f"{folder} is locked by another process")

    def _try_lock(self, folder: Path) -> bool:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._locks[folder.name] = fd
        return True

    def _unlock(self, folder: Path) -> None:
        fd = self._locks.pop(folder.name, None)
        if fd is not None:
            os.close(fd)

    def _discard(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        self._unlock(folder)


def unique_names(folder: Path, name: str):
    """name, then stem-1.ext, stem-2.ext, ...: a taken name is never reused."""
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    yield folder / name
    n = 1
    while True:
        yield folder / f"{stem}-{n}{dot}{ext}"
        n += 1


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
