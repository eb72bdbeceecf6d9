"""Which photos the pool's slots run side by side, and a turn alone for a photo a crash fell on (rev9e finding 2).

A kill of the daemon (the host's OOM killer, a driver fault) takes every slot at once, and it may be any running
photo's doing. So, as in a batch (spool.Job.charge_crash), a photo that ran beside another is charged a
``batch_crash`` (not known to be its own), never a crash toward max_crashes: one kill with two slots running no
longer fails both photos at ``max_crashes: 1``. And as a batch's photos then run alone (batching.runs_alone), a
photo a crash fell on takes a turn alone in the pool, no other slot running, so that the next crash lands on the
culprit alone and a poison photo still reaches max_crashes (side by side again, two suspects would share every
crash and never fail: a crash loop). Nothing else waits: photos with no crash behind them run side by side at once.
"""
from __future__ import annotations

import threading
from typing import Callable

import structlog

from .jobs import Outcome
from .spool import Job

log = structlog.get_logger("style-pipeline.worker")

WAIT = 0.5  # seconds between looks at ``stopping`` while a turn is awaited


def not_begun(job: Job) -> Outcome:
    """A job stopped while it waited for its turn: back to the daemon as it was, uncharged (no try was counted), to
    be released at a stop or run when the window opens again, as a cancelled try is."""
    log.info("job not begun: stopped while it waited for its turn", job_id=job.id, file=job.source)
    return Outcome(job, "cancelled", retry_at=job.not_before)


def suspect(job: Job) -> bool:
    """The daemon died while this job ran (alone or beside others): its next try runs alone."""
    return job.crashes > 0 or job.batch_crashes > 0


class Turns:
    """The jobs now in a slot's try, and the one suspect whose turn alone comes next; shared by a pool's slots."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._in: dict[str, Job] = {}
        self._alone: str | None = None  # a suspect's id, from the moment it waits for its turn until it leaves

    def enter(self, job: Job, stopping: Callable[[], bool]) -> list[Job] | None:
        """Wait for the job's turn: a suspect for every other slot to finish its try, any other job for a
        suspect's turn to end. The jobs it runs beside (their crash is not known to be its); None when a stop or a
        closed window came while it waited: it is not begun (let in, the engine would run its first step before
        it looked, a poison photo's too, beside the others: not_begun). The stop is looked at before each try to
        enter, not only while the turn is refused: at a stop the running photo is cancelled and leaves, and its
        leave is what wakes the waiter, whose turn has then come; let in, a poison photo ran its first step during
        the SIGTERM and killed the daemon (a stop that exits -9, seen once in test_pool_crashes under load)."""
        with self._cond:
            while True:
                if stopping():
                    return None
                if self._may_enter(job):
                    break
                self._cond.wait(WAIT)
            if suspect(job) and self._alone is None:
                self._alone = job.id
            beside = list(self._in.values())
            self._in[job.id] = job
            return beside

    def _may_enter(self, job: Job) -> bool:
        if not suspect(job):
            return self._alone is None
        if self._alone is None:
            self._alone = job.id  # first in line: no other job enters from now on
        return self._alone == job.id and not self._in

    def leave(self, job: Job) -> None:
        """The job's try ended (its result handed over, or its fault concluded): the next turn may begin."""
        with self._cond:
            self._in.pop(job.id, None)
            if self._alone == job.id:
                self._alone = None
            self._cond.notify_all()

    def beside(self, job: Job) -> list[Job]:
        """The other jobs in a try now."""
        with self._cond:
            return [other for other in self._in.values() if other is not job]

    def share_blame(self, jobs: list[Job], save: Callable[[Job], None]) -> None:
        """``jobs``, running beside a newcomer, are each saved as batched: a kill from now on is no one photo's.
        Looked at and saved under the lock that its own thread turns ``running`` off under (stop_running), so
        this save never lands a stale "running" after that one, nor in a folder its landing has removed."""
        for other in jobs:
            with self._cond:
                if other.running and not other.batched:
                    other.batched = True
                    save(other)

    def mark_together(self, job: Job, save: Callable[[Job], None]) -> None:
        """After the job's own open: it and the jobs in a try beside it saved as batched, if there are any. Each
        slot does this once its job is running, so of two jobs the one that looks second sees the other running
        and marks both: a job that entered its turn first but began only after the newcomer looked (its snapshot
        at enter was empty, and the newcomer skipped it as not yet running) marks itself (rev10a)."""
        others = self.beside(job)
        if others:
            self.share_blame([job, *others], save)

    def stop_running(self, job: Job) -> bool:
        """``job.running`` off (a result is made); whether it was on, so that its thread saves the record once."""
        with self._cond:
            running, job.running = job.running, False
            return running
