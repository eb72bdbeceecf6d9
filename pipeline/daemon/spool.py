"""The spool: where a file lies is its state (inbox -> work -> done | failed). Only this module renames.

Durability rules (os.replace and link are atomic only within one filesystem, hence the spool beside the inbox):
- A claim is one atomic rename into a fresh ``work/<job_id>/``; when two daemons race, the rename decides.
- The job record (job.json) is written before the rename and replaced atomically after every change.
- A sidecar is copied into the job folder before the rename, never moved: a pair is never split (let_go_sidecar).
- A job being processed holds an flock on its folder; a killed process drops it, so recovery can
  tell an orphaned job (lock free) from a neighbour daemon's live one (lock held).
- Moves into done/ and failed/ never overwrite: link to a free name, then unlink the old one.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import structlog

from ..errors import Reason, SpoolLocked  # noqa: F401  (Reason handed on: the spool records it)
from ..fsio import fit_name, split_ext, write_json
from .spool_count import (RECORD, SIDECARS, count_in_work, folder_counts, is_photo_entry,  # noqa: F401  (re-exported)
                          photos_in, read_job)
from .spool_job import CHECKPOINT, Job, new_job_id, now_iso  # noqa: F401  (re-exported)
from .spool_sidecar import copy_in, identity, sidecar_in

LOCK = ".lock"
INCOMPLETE_GRACE = 5.0  # a lock-free job folder without its input, older than this, is a dead or lost claim
ERROR_SUFFIX = ".error.json"
PAIR_RESERVE = len(".yaml")  # a sidecar beside its photo takes the photo's stem plus this
log = structlog.get_logger("style-pipeline")


class Spool:
    """The four folders and every move between them: the only code that renames, so the durability rules above
    hold in one place (a photo is never lost between two states, nor in two at once)."""

    def __init__(self, inbox: Path, work: Path, done: Path, failed: Path,
                 read_elsewhere: Callable[[Path, Path], bool] | None = None) -> None:
        """``read_elsewhere(photo, sidecar)``: whether another waiting photo reads that sidecar (the daemon passes
        sidecars.read_by_another, a layer above, knowing its excluded folders); none: no photo shares a sidecar."""
        self.inbox, self.work, self.done, self.failed = inbox, work, done, failed
        self.read_elsewhere = read_elsewhere or (lambda photo, sidecar: False)
        self._locks: dict[str, int] = {}
        # a job's record is written (save) or removed (_discard) by one thread at a time: a stop's copy of a running
        # job (JobLife.stopped_mid_step) saved over its landing's newer record sent a written photo to be restyled
        self.records = threading.RLock()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.unreadable: set[str] = set()  # job folders whose record could not be read, told once (_unreadable)

    # --- claiming -------------------------------------------------------------------------
    def claim(self, path: Path, queued_at: str, sidecar: Path | None = None) -> Job | None:
        """Move ``path`` into a fresh job folder, its sidecar copied in first; None if another daemon took it first.
        FileBusy when the sidecar's writer still holds it: the caller keeps the photo waiting and says so (rev10e).

        Every job holds its own sidecar before its photo moves, so no kill -9 or fault after the move splits the
        pair (rev10d: a kill between the photo's move and its sidecar's styled it without, and the sidecar stayed
        for the next photo of its name; a kill inside the put-back styled it twice). The inbox's sidecar is removed
        after the move by the last photo to read it (let_go_sidecar), at recovery too; a kill before the move
        discards the folder and the photo stays in the inbox."""
        job_id = new_job_id()
        folder = self.work / job_id
        folder.mkdir()
        job = Job(job_id, path.name, str(path.relative_to(self.inbox)), str(folder), queued_at,
                  claimed_at=now_iso(), owner=self.owner)
        try:
            self._lock(folder)
            if sidecar is not None:
                copy_in(job, sidecar, self.inbox)
            self.save(job)
            os.rename(path, job.input)
        except FileNotFoundError:
            self._discard(folder)
            return None
        except BaseException:  # a full disk, a lost lock race: the file stays in the inbox, no empty folder
            self._discard(folder)
            raise
        self.let_go_sidecar(job)
        return job

    def let_go_sidecar(self, job: Job) -> None:
        """The inbox's sidecar, once the job's photo has moved: removed when it is still the file the claim read
        (its identity: a new drop of its name is never touched) and no other waiting photo reads it (pair.yaml
        beside pair.jpg and pair.png: the last claimed removes it, as each checks after its own move, rev10b/rev10d);
        one that could not be read goes into the job folder, so it is failed with its photo, unless a folder (swapped
        in after the scan: fail() cannot hard-link it, rev10f), which stays. Never raises: it stays in the inbox,
        where `status` lists it as unpaired."""
        home = self.inbox / job.sidecar_from if job.sidecar_from else None
        if home is None or not job.sidecar_id or identity(home) != job.sidecar_id:
            return
        try:
            if self.read_elsewhere(self.inbox / job.source, home):
                return
            if job.sidecar_error and not os.path.lexists(job.dir / job.sidecar) and not os.path.isdir(home):
                os.rename(home, job.dir / job.sidecar)
            elif not job.sidecar_error:
                os.unlink(home)
        except OSError as exc:
            log.warning("the claimed photo's sidecar stays in the inbox", file=job.source, sidecar=str(home),
                        error=str(exc))

    def save(self, job: Job) -> None:
        with self.records:
            write_json(job.dir / RECORD, dataclasses.asdict(job), indent=1)

    # --- endings --------------------------------------------------------------------------
    def complete(self, job: Job, keep_input: bool = True) -> Path | None:
        """After the output is written: the input goes to done/ (or is deleted), the job folder away.

        The photo and its sidecar keep one name (rocket-1.jpg with rocket-1.yaml); the name planned in
        ``job.kept_as`` is tried first, so the JSON log that recorded it is right.
        """
        kept = None
        sidecar = job.dir / job.sidecar if job.sidecar else None
        if keep_input:
            kept = self._moved_before(job, sidecar) or self._move_pair(job.input, sidecar, self.done,
                                                                       job.kept_as or job.name)[0]
        else:
            job.input.unlink(missing_ok=True)
            if sidecar is not None:
                self._move_no_clobber(sidecar, self.failed, job.sidecar)
        self._discard(job.dir)
        return kept

    def plan_done(self, job: Job) -> Path:
        """The name the input will have in done/ (the first free pair name), recorded in the job."""
        reserve = PAIR_RESERVE if job.sidecar else 0
        kept = next(c for c in unique_names(self.done, job.name, reserve) if _pair_free(c))
        job.kept_as = kept.name
        return kept

    def fail(self, job: Job, reason: Reason, message: str, fix: str, kept_name: str | None = None) -> Path:
        """The input and its sidecar to failed/ under one name, with <name>.error.json saying what was wrong
        and what to do.

        The error record is written before the input leaves work/: if that write fails (a full disk), the
        job is still whole in work/ and the caller decides what next. ``kept_name`` is the fallback name.
        """
        sidecar = job.dir / job.sidecar if job.sidecar and (job.dir / job.sidecar).exists() else None
        self._plan_failed(job, kept_name or job.name)
        kept, kept_sidecar = self._link_pair(job.input, sidecar, self.failed, job.failing_as,
                                             reserve=len(ERROR_SUFFIX))
        error = {"file": job.name, "source": job.source, "kept_as": kept.name, "code": str(reason),
                 "message": message, "fix": fix, "failed_at": now_iso(), "attempts": job.attempts,
                 "crashes": job.crashes, "batch_crashes": job.batch_crashes, "job_id": job.id, "queued_at": job.queued_at,
                 "sidecar": kept_sidecar.name if kept_sidecar else None}
        try:
            if kept.name != job.failing_as:  # another daemon took the planned name in between
                job.failing_as = kept.name
                self.save(job)
            write_json(self.failed / f"{kept.name}{ERROR_SUFFIX}", error)
        except BaseException:
            for link in (kept, kept_sidecar):
                if link is not None:
                    link.unlink(missing_ok=True)
            raise
        for original in (job.input, sidecar):
            if original is not None:
                os.unlink(original)
        self._discard(job.dir)
        return kept

    def _plan_failed(self, job: Job, name: str) -> None:
        """The name in failed/ is saved in the job before anything is linked there: a kill -9 inside fail() is
        then finished at recovery (failed_before), not failed a second time as name-1 with a second note."""
        job.failing_as = next(c.name for c in unique_names(self.failed, name, len(ERROR_SUFFIX))
                              if _pair_free(c) and not os.path.lexists(f"{c}{ERROR_SUFFIX}"))
        self.save(job)

    def failed_before(self, job: Job) -> bool:
        """A kill -9 inside fail(): True when its note (naming this job's id) was written, so the failure is made
        and only the work/ copy is left to go. Half-made links without a note are undone: the job runs again."""
        if not job.failing_as:
            return False
        kept = self.failed / job.failing_as
        if job_id_in(self.failed / f"{job.failing_as}{ERROR_SUFFIX}") == job.id:
            return True
        for original in [job.input] + ([job.dir / job.sidecar] if job.sidecar else []):
            link = kept if original == job.input else kept.with_name(kept.stem + original.suffix)
            if _same_file(link, original):
                link.unlink()
        job.failing_as = None
        return False

    def _moved_before(self, job: Job, sidecar: Path | None) -> Path | None:
        """A kill -9 inside the move to done/ left the photo both there (as kept_as) and in work/, one file: finish
        that move (unlink the work/ names) rather than link it again as done/name-1, keeping one drop twice."""
        kept = self.done / job.kept_as if job.kept_as else None
        if kept is None or not _same_file(kept, job.input):
            return None
        if sidecar is not None and os.path.lexists(sidecar):
            if not _same_file(kept.with_name(kept.stem + sidecar.suffix), sidecar):
                kept.unlink()  # killed between the photo's link and the sidecar's: the pair moves again as one
                return None
            os.unlink(sidecar)
        os.unlink(job.input)
        return kept

    def release(self, job: Job) -> None:
        """Leave the job in work/ for the next start (SIGTERM), dropping our lock."""
        self._unlock(job.dir)

    # --- recovery -------------------------------------------------------------------------
    def recover(self, skip: set[str] | frozenset[str] = frozenset()) -> list[Job]:
        """Jobs left in work/ by a dead daemon (their lock is free), oldest first; stale claims removed; ``skip``:
        folders this daemon left unlocked on purpose (held). Safe beside a live neighbour, so it runs at each rescan:
        the neighbour's jobs hold their lock, and a claim it is still making (mkdir, lock, then job.json) is never
        locked here while young: taking that lock first would break its claim."""
        jobs = []
        for folder in sorted(p for p in self.work.iterdir() if p.is_dir()):
            if folder.name in self._locks or folder.name in skip:
                continue
            changed = _last_change(folder)  # before locking: making .lock touches the folder
            if not (folder / RECORD).exists() and time.time() - changed <= INCOMPLETE_GRACE:
                continue  # a claim being made, or one just given up: looked at again once it is old
            if not self._try_lock(folder):
                continue
            job = self._left_in(folder, changed)
            if job is None:
                continue
            job.folder, job.owner = str(folder), self.owner
            job.sidecar = job.sidecar or sidecar_in(folder, job.name)
            self.let_go_sidecar(job)  # killed between the photo's move and the inbox sidecar's removal
            if self.failed_before(job):  # killed inside fail() after its note: the failure is made once
                self._discard(folder)
                continue
            if job.running:  # the daemon died inside this try: a crash, not an attempt charged to the photo
                job.charge_crash()
            try:
                self.save(job)
            except OSError:
                pass  # a full disk at start: the job in memory is the truth until the next save
            jobs.append(job)
        return jobs

    def _left_in(self, folder: Path, changed: float) -> Job | None:
        """The job a dead daemon left in ``folder`` (locked here), or None. The folder is discarded only when it holds
        no photo (its input landed in done/ or failed/, or a claim was given up before its move) and is old; one whose
        record cannot be read now (EIO, ESTALE, EMFILE) is left for the next rescan, told once; a photo whose record
        is damaged, missing or another version's gets a rebuilt job, failed as bad_job_record (rev12a: each of these
        was deleted at the next start, photo and all, in silence)."""
        try:
            job = read_job(folder)
            if os.path.lexists(folder / job.name):
                return job
            why = f"names {job.name}, which is not there"
        except FileNotFoundError:
            why = "is missing"
        except OSError as exc:
            return self._unreadable(folder, exc)
        except ValueError as exc:
            why = f"cannot be read as a job ({exc})"
        try:
            photos = photos_in(folder)
        except OSError as exc:
            return self._unreadable(folder, exc)
        if photos:
            return Job.rebuilt(folder, photos[0], why)
        if time.time() - changed > INCOMPLETE_GRACE:
            self._discard(folder)
        else:
            self._unlock(folder)
        return None

    def _unreadable(self, folder: Path, exc: OSError) -> None:
        """A folder that cannot be read now (a failing disk, an NFS server gone, out of file handles): left as it
        is, looked at again at the next rescan or start, and told once (not at every rescan)."""
        self._unlock(folder)
        if folder.name not in self.unreadable:
            self.unreadable.add(folder.name)
            log.warning("a job left in work/ cannot be read now; it stays there and is looked at again at the next "
                        "rescan", folder=str(folder), error=f"{type(exc).__name__}: {exc}")

    # --- counting (status) ----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return folder_counts(self.done, self.failed, self.work)

    # --- helpers --------------------------------------------------------------------------
    def _move_no_clobber(self, src: Path, folder: Path, name: str) -> Path:
        return self._move_pair(src, None, folder, name)[0]

    def _move_pair(self, src: Path, sidecar: Path | None, folder: Path, name: str) -> tuple[Path, Path | None]:
        """Link the photo (and its sidecar, renamed to match) to the first free name, then unlink the
        originals: nothing is overwritten, and a pair is never split across two names."""
        kept, side = self._link_pair(src, sidecar, folder, name)
        if side is not None:
            os.unlink(sidecar)
        os.unlink(src)
        return kept, side

    def _link_pair(self, src: Path, sidecar: Path | None, folder: Path, name: str,
                   reserve: int = 0) -> tuple[Path, Path | None]:
        """The first free name for the photo (and its sidecar beside it), as new links; originals kept.
        Every name fits the filesystem: a long one is shortened (unique_names)."""
        suffix = sidecar.suffix if sidecar is not None else None
        for candidate in unique_names(folder, name, max(reserve, PAIR_RESERVE if suffix else 0)):
            if sidecar is None and not _pair_free(candidate, include_photo=False):
                continue  # a lone photo must not look like the partner of an older sidecar
            try:
                os.link(src, candidate, follow_symlinks=False)
            except FileExistsError:
                continue
            side = candidate.with_name(candidate.stem + suffix) if suffix else None
            if side is not None:
                try:
                    os.link(sidecar, side, follow_symlinks=False)
                except OSError as exc:  # EPERM: a folder, no hard links there; the photo's link is undone
                    os.unlink(candidate)
                    if isinstance(exc, FileExistsError):
                        continue
                    raise
            return candidate, side
        raise AssertionError("unreachable")

    def _lock(self, folder: Path) -> None:
        if not self._try_lock(folder):
            raise SpoolLocked("locked by another process (another daemon on this spool is looking at it)",
                              path=folder, fix="Nothing to do: the file stays in the inbox and is claimed again at "
                              "the next rescan")

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
        with self.records:
            shutil.rmtree(folder, ignore_errors=True)
        self._unlock(folder)


def unique_names(folder: Path, name: str, reserve: int = 0):
    """name, then stem-1.ext, stem-2.ext, ...: a taken name is never reused.

    Every name fits the filesystem with ``reserve`` bytes to spare (for ``.error.json``, ``.sheet.png``):
    a long one is shortened deterministically, keeping its extension and a hash (fsio.fit_name).
    """
    n = 0
    while True:
        suffix = f"-{n}" if n else ""
        short = fit_name(name, reserve + len(suffix))
        stem, dot, ext = split_ext(short)
        yield folder / f"{stem}{suffix}{dot}{ext}"
        n += 1


def _last_change(folder: Path) -> float:
    try:
        return max(p.stat().st_mtime for p in (folder, folder / RECORD) if p.exists())
    except (OSError, ValueError):
        return time.time()


def _same_file(a: Path, b: Path) -> bool:
    """Two names of one file (a half-made move); lstat, so a symbolic link is never followed."""
    try:
        return os.path.samestat(os.lstat(a), os.lstat(b))
    except OSError:
        return False


def job_id_in(record: Path) -> str | None:
    """The job an .error.json or an output's JSON log was written for (its job_id), if there and readable."""
    try:
        return json.loads(record.read_text(encoding="utf-8")).get("job_id")
    except (OSError, ValueError, AttributeError):
        return None


def _pair_free(photo: Path, include_photo: bool = True) -> bool:
    """The photo's name and every sidecar name of its stem are free."""
    names = [photo.with_name(photo.stem + s) for s in SIDECARS]
    return not any(os.path.lexists(p) for p in ([photo] if include_photo else []) + names)
