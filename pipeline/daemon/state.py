"""The daemon's own job state, changed only by the outcomes an executor's poll() hands over.

The retry queue (transient failures, cancelled and crashed tries, jobs recovered from work/) and the jobs held
in work/ live here, not in an executor: so a pool of executors shares one queue, and `status` reads one place.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import structlog

from .diskguard import DiskGuard
from .folder_faults import FolderFault
from .jobs import Outcome
from .spool import Job, Spool

log = structlog.get_logger("style-pipeline")


class JobBook:
    """The retry queue and the held jobs; ``listener`` hears done and failed jobs (metrics, notices)."""

    def __init__(self, disk: DiskGuard, listener: Callable[[str, dict], None],
                 clocks: tuple[Callable[[], float], Callable[[], float]] = (time.time, time.monotonic)) -> None:
        self.disk, self.listener = disk, listener
        disk.tell = self._tell_fault  # a fault the guard's own probe finds is told as one met by a job (rev10c)
        self.wall, self.mono = clocks  # the jobs' not_before is wall-clock time; their due times also monotonic
        self.retry: list[Job] = []
        self.due: dict[str, float] = {}  # job id -> when it is due on the monotonic clock (take_due)
        self.held: list[Job] = []  # jobs that could not even be moved to failed/: left in work/, not retried

    def take(self, outcomes: Iterable[Outcome]) -> None:
        """Act on how each try ended: queue it again, hold it, pause claiming on a full disk, tell the listener."""
        for outcome in outcomes:
            if outcome.retry_at is not None:
                self._queue(outcome.job)
            if outcome.kind == "held":
                self.held.append(outcome.job)
            if outcome.disk_full:
                self.pause(Path(outcome.disk_full), outcome.fault)
            if outcome.event is not None:
                self._tell(outcome.kind, outcome.event)

    def pause(self, folder: Path, fault: FolderFault | None = None) -> None:
        """Claiming waits on ``folder``; a folder fault is told once a pause (the folder and its fix), wherever it
        was met: a job's write, the claim (rev9b finding 2), the start (rev9b finding 1)."""
        if self.disk.pause(folder, fault) and fault is not None:
            self._tell_fault(fault)

    def _tell_fault(self, fault: FolderFault) -> None:
        """The `paused` notice: the folder and its fix."""
        self._tell("paused", {"file": str(fault.folder), "reason": fault.code, "fix": fault.fix,
                              "message": "cannot be written; claiming is paused, the photos wait"})

    def _tell(self, kind: str, data: dict) -> None:
        """A listener's fault must not lose the outcomes after it."""
        try:
            self.listener(kind, data)
        except Exception as exc:  # noqa: BLE001
            log.warning("event listener failed", error=f"{exc.__class__.__name__}: {exc}")

    def _queue(self, job: Job) -> None:
        """Queue a retry, its wait also on the monotonic clock: a wall clock stepped back (NTP correcting an RTC kept
        in local time, a VM resumed) held a waiting photo in work/ for the length of the step (rev8b finding 3).
        not_before stays wall-clock time in job.json, the one clock a restart can compare it with."""
        self.due[job.id] = self.mono() + max(0.0, job.not_before - self.wall())
        self.retry.append(job)

    def take_due(self, now: float, mono: float) -> Job | None:
        """The retry whose time came first, taken off the queue; None while none is due. Due when either clock says
        so (``now``: wall-clock time, ``mono``: monotonic): a step forward only brings a retry sooner."""
        due = [job for job in self.retry if job.not_before <= now or self.due.get(job.id, float("inf")) <= mono]
        if not due:
            return None
        job = min(due, key=lambda j: j.not_before)
        self.retry.remove(job)
        self.due.pop(job.id, None)
        return job

    def take_up(self, spool: Spool) -> None:
        """Queue the jobs in work/ whose daemon died (their lock is free): at start, and at each rescan, so the
        claims of a neighbour daemon killed on a shared inbox are not stranded until a restart (rev7c finding 4).
        Held jobs are this daemon's own, left unlocked on purpose: not taken up again."""
        for job in spool.recover(skip={held.id for held in self.held}):
            log.info("resuming a job left in work/", job_id=job.id, file=job.source, checkpoint=job.checkpoint.exists())
            self._queue(job)
