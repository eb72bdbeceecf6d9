"""How a try ends when it does not succeed: each error has a class, and the failure path cannot fail silently.

A mixin of :class:`~.jobs.JobLife`: the photo's faults are charged as attempts,
the machine's (a full disk, a shutdown, a crash) are not; permissions fail at once with their fix; and when
even moving the file to failed/ fails, the file is kept under its job id or held in work/, never dropped. A failed/
that cannot be written (full, read-only, no write access) is the machine's: the job pauses and is failed there once
the folder takes writes, without a restart (test_batch_faults).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import structlog

from ..errors import clipped
from ..fsio import TEMP, is_disk_full, is_no_permission, service_user
from .folder_faults import FolderFault, spool_fault
from .spool import Job, Reason

log = structlog.get_logger("style-pipeline.worker")


class FailurePaths:
    """Needs the job life's spool, get_config and _out (each ending becomes an Outcome for the daemon)."""

    def _os_error(self, job: Job, exc: Exception) -> None:
        """Each filesystem error has a class: full disk pauses, permissions fail with their fix, others retry."""
        if is_disk_full(exc):
            where = getattr(exc, "filename", None)
            self._pause(job, os.path.dirname(where) if where else str(self.spool.work))
            log.warning("disk full: job kept in work/, claiming paused until space returns", error=str(exc))
        elif fault := self._folder_fault(exc):
            self._pause(job, str(fault.folder), fault)
            log.warning("a folder cannot be written: job kept in work/, claiming paused until it can",
                        error=str(exc), fix=fault.fix)
        elif is_no_permission(exc):
            where = getattr(exc, "filename", None) or job.name
            if TEMP.fullmatch(Path(where).name):  # our own temp file: the folder is what a person can fix
                where = str(Path(where).parent)
            self._fail(job, Reason.NO_PERMISSION, f"permission denied: {where} ({exc})",
                       f"Let the service user {service_user()} read the photo and write the outbox and spool "
                       f"(chmod/chown {where}), then drop the file again")
        else:
            self._transient(job, exc)

    def _folder_fault(self, exc: Exception) -> FolderFault | None:
        """A folder we write that cannot be written (read-only, a file in its place, no write access)."""
        return spool_fault(exc, self.get_config())

    def _pause(self, job: Job, folder: str, fault: FolderFault | None = None) -> None:
        """The machine's fault: the job waits in work/ uncharged, and claiming pauses until ``folder`` is writable."""
        job.not_before = time.time() + 1.0
        self._not_its_fault(job)
        self._out(job, "disk_full" if fault is None else "paused", retry=True, disk_full=folder, fault=fault)

    def _not_its_fault(self, job: Job) -> None:
        """The try ended for a reason outside the photo: it is not charged as an attempt."""
        job.attempts, job.running, job.crashes = max(0, job.attempts - 1), False, 0
        self.save_or_warn(job)

    def save_or_warn(self, job: Job, when: str = "") -> bool:
        """The job's record saved, or a warning and on: where its try's way is decided already (not charged, a
        result made), the job in memory is the truth until the disk has room again, and an unsaved record costs at
        most a crash charged once. One scope (any error: a full disk or worse) and one wording, where three copies
        caught OSError or Exception and worded it their own ways (rev9d). ``when``: " before its write", etc."""
        try:
            self.spool.save(job)
            return True
        except Exception as exc:  # noqa: BLE001 - see above: the record never costs the job
            log.warning(f"job record not saved{when}", error=f"{type(exc).__name__}: {exc}", job_id=job.id,
                        file=job.source)
            return False

    def _fail(self, job: Job, reason: Reason, message: str, fix: str) -> None:
        try:
            kept = self.spool.fail(job, reason, message, fix)
        except OSError as exc:
            if not (is_disk_full(exc) or self._folder_fault(exc)):
                raise
            self._os_error(job, exc)  # the record could not be written: the job waits in work/ for the folder
            return
        log.warning("job failed", reason=str(reason), message=message, fix=fix, kept_as=str(kept))
        self._out(job, "failed", event={"file": job.source, "reason": str(reason), "message": message, "fix": fix})

    def last_resort(self, job: Job, exc: Exception) -> None:
        """failed/ under the job id (a name that always fits); if even that fails, hold the job in work/."""
        message = clipped(f"internal error: {exc.__class__.__name__}: {exc}")
        try:
            kept = self.spool.fail(job, Reason.GAVE_UP, message, "Report this with the log lines of this job_id; "
                                   "then drop the file again", kept_name=f"{job.id}{Path(job.name).suffix[:16]}")
            log.error("job failed", reason=str(Reason.GAVE_UP), message=message, kept_as=str(kept))
            self._out(job, "failed", event={"file": job.source, "reason": str(Reason.GAVE_UP), "message": message,
                                            "fix": ""})
        except Exception as again:
            if is_disk_full(again) or self._folder_fault(again):
                return self._os_error(job, again)
            log.exception("cannot move the file to failed/; it stays in work/ until the next start")
            self.spool.release(job)
            self._out(job, "held")

    def _transient(self, job: Job, exc: Exception) -> None:
        config = self.get_config()
        message = clipped(f"{exc.__class__.__name__}: {exc}")
        job.last_error = message
        if job.attempts >= config.max_attempts:
            self._fail(job, Reason.GAVE_UP, f"failed {job.attempts} times; last error: {message}",
                       "Check the log for this job_id; if the machine was at fault (disk, memory), drop the file again")
            return
        delay = config.retry_backoff_seconds * 2 ** (job.attempts - 1)
        job.not_before, job.running, job.crashes = time.time() + delay, False, 0
        self.spool.save(job)
        log.warning("transient failure, will retry", error=message, retry_in=delay, attempt=job.attempts)
        self._out(job, "transient", retry=True)
