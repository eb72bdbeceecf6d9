"""The executor interface: all the main loop knows of whoever runs the optimisation (one local engine, Ray actors).

    submit(job)        a claimed job, to run when it can
    reject(job, exc)   a claimed job that failed at the door (no picture): failed/ the one way, its outcome polled
    has_room()         may the main loop claim and hand over another job now?
    poll(timeout)      the outcomes of the tries that ended (jobs.Outcome), waiting up to timeout for one
    progress()         what runs now (Progress): the watchdog's marker, status's "current", the job in hand
    cancel(job)        stop that job at its next step; it checkpoints and waits in the retry queue
    pause() / resume() the run window closed / opened: running jobs stop and wait, none starts meanwhile
    alive(), respawn() the supervisor's view: a dead executor is replaced by a fresh one (None: cannot be)
    start(), close()   begin; stop taking jobs, giving back those never begun

The daemon acts on the outcomes (retry queue, disk pause, held jobs, metrics); an executor keeps none of that.
A job's life around the optimisation is not an executor's business either: each hands it to the shared
:class:`~.jobs.JobLife` (pre-checks, plan, record, publish, outcomes), so a new executor writes only how to run
a plan. This base class holds the little plumbing the executors share (Worker and the Pool's slots, RayExecutor; chosen
by executors.build): a thread, a queue in, outcomes out.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import structlog

from .config import Config
from .handover import WRITE_GRACE
from .jobs import JobLife, Outcome, logging_for
from .spool import Job, Spool

log = structlog.get_logger("style-pipeline.worker")


@dataclass(frozen=True)
class Progress:
    """What an executor is doing at one moment."""

    busy: bool  # a job is open
    open_jobs: int  # handed over and not yet ended: `once` waits for zero
    marker: int  # bumped on every sign of progress: the watchdog pings while it moves
    current: dict | None  # status.json's "current": file, recipe, step, loss, ETA (and Ray's worker, node)
    busy_seconds: float
    job: Job | None = None  # the job in the executor's own thread: taken back as a crash if that thread dies


class Executor(threading.Thread):
    """The interface above, and the plumbing: ``_jobs`` in, ``life.outcomes`` out, ``_ended`` wakes poll()."""

    def __init__(self, name: str, spool: Spool, get_config: Callable[[], Config], stop: threading.Event,
                 life: JobLife | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.spool, self.get_config, self.stop = spool, get_config, stop
        self.life = life or JobLife(spool, get_config, stop)
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._paused = threading.Event()  # the run window is closed: running jobs stop, none starts
        self._ended = threading.Event()  # a job ended, or room opened: the main loop wakes at once
        self._cancels: set[str] = set()  # ids of the jobs told to stop
        self._open, self._lock = 0, threading.Lock()
        self._marker = 0
        self._busy_seconds = 0.0
        self._current: dict | None = None
        self._job: Job | None = None  # the job in this thread's hands, where the thread runs it itself
        self.broken: str | None = None  # why this executor stopped the daemon: it then exits 1, and systemd restarts it

    # --- the interface -----------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Queue a claimed job. Nothing after the put raises: the main loop would log it as not claimed."""
        with self._lock:
            self._open += 1
        self._jobs.put(job)
        self._prefetch_queued()
        if self.has_room():
            self._ended.set()  # room for more: the main loop claims the next at once, not after a tick

    def has_room(self) -> bool:
        raise NotImplementedError

    def reject(self, job: Job, failure: Exception) -> None:
        """A claimed job that failed at the door, never handed over (the daemon's screen of a file that is no picture:
        settle.DecodeCheck.not_a_picture): its try is counted and ended the one way every failing try ends
        (JobLife.conclude: failed/ with its note, the "job failed" line, the outcome poll() hands back for the
        notice), not a second way. A record that cannot be saved (a full disk) is concluded as that: it waits. The
        failure path's own fault (EIO on failed/, a bug) gets the worker's last resort (_guarded): it reached the
        main loop, which logged a job in work/ as "cannot claim this file", and no outcome came (rev12c)."""
        with logging_for(job):
            self._guarded(job, lambda: self._conclude_at_door(job, failure))
        self._ended.set()

    def _conclude_at_door(self, job: Job, failure: Exception) -> None:
        try:
            self.life.begin(job, in_process=False)
        except Exception as exc:  # noqa: BLE001 - concluded, as a pre-check's fault is
            failure = exc
        self.life.conclude(job, failure)

    def progress(self) -> Progress:
        return Progress(self._open > 0, self._open, self._marker, self._current, self._busy_seconds, self._job)

    def cancel(self, job: Job) -> None:
        self._cancels.add(job.id)

    def poll(self, timeout: float = 0.0) -> list[Outcome]:
        if timeout:
            self._ended.wait(timeout)
        self._ended.clear()
        return self.life.drain()

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def alive(self) -> bool:
        return self.is_alive()

    def respawn(self) -> "Executor | None":
        return None

    def close(self, timeout: float) -> list[Job]:
        """No more jobs: those handed over but never begun come back (for the inbox); the ones in hand end (a stop
        cancels them), their results land and the contact sheets are written, all within ``timeout`` in all.

        One deadline, because systemd's TimeoutStopSec counts the whole stop, and past it SIGKILL charges the
        running photo a crash: the join and the writes each waited ``timeout`` in full, and the sheets 120 s more
        (2 x 120 + 120 s against 180, rev7e). The writes keep a share of it (WRITE_GRACE, a quarter at most): a
        result that misses it is written again at the next start, a finished photo's whole run. A job still in a
        step when the join's time is up (a large print's tile, a line search) exits with the process, a clean stop
        all the same (JobLife.stopped_mid_step); it was charged a crash, and three stops in one long print failed it.
        Only a step that hangs (stops in a row with no step completed between) is charged, as the watchdog's is."""
        deadline = time.monotonic() + timeout
        unstarted = self._stop_taking()
        self._join_until(deadline - min(WRITE_GRACE, timeout / 4))
        self.life.stopped_mid_step(self.in_hand())
        self._handed_over(deadline)
        return unstarted

    # --- for the executors -------------------------------------------------------------------------
    def _guarded(self, job: Job, step: Callable):
        """``step`` with the last resort behind it: the failure path itself failed (ENAMETOOLONG, EACCES on
        failed/, a bug), so the file is kept under its job id. Trying a job, landing its result and failing one at
        the door (reject) share it. What ``step`` returns; None after the last resort."""
        try:
            return step()
        except Exception as exc:
            log.exception("the failure path failed; keeping the file under its job id")
            self.life.last_resort(job, exc)

    def _prefetch_queued(self) -> None:
        """The jobs next in the queue start their pre-checks and decode now (handover.py), beside the running job.
        Only a speed-up, so it never raises: called after a job was opened (the slot's _guarded then gave that good
        photo its last resort) and from submit (the main loop then logged a claimed job as not claimed) when the
        prefetch thread could not start ("can't start new thread"). A job not prepared ahead is prepared in turn."""
        try:
            depth = self.prefetch_depth()
            with self._jobs.mutex:
                queued = [job for job in list(self._jobs.queue)[:depth] if job is not None]
            for job in queued:
                self.life.prefetch.offer(job, self.get_config(), depth)
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("photos not prepared ahead; each is prepared when its turn comes",
                        error=f"{type(exc).__name__}: {exc}")

    def prefetch_depth(self) -> int:
        """How many queued photos are prepared ahead: the prefetcher's own limit, for one photo at a time."""
        return self.life.prefetch.limit

    def _stop_taking(self) -> list[Job]:
        """At close: the jobs never begun, taken back, and the thread told to end after the one in hand."""
        unstarted = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                unstarted.append(job)
        self._jobs.put(None)
        return unstarted

    def _join_until(self, deadline: float) -> None:
        """At close: the thread's end, waited for until ``deadline`` (time.monotonic)."""
        self.join(left(deadline))

    def in_hand(self) -> list[Job]:
        """The jobs this executor's own live threads still hold (at close: past the join's deadline)."""
        return [self._job] if self._job is not None and self.is_alive() else []

    def _handed_over(self, deadline: float) -> None:
        """At close: every finished result handed to the landing thread is written (its outcome out) first, then
        the contact sheets still queued (they are queued as results land), all by ``deadline``; the landing and
        sheet threads end (a landing still stuck then is finished first, and its thread ends after it)."""
        self.life.landing.close(left(deadline))  # its thread ends once it holds nothing
        self.life.prefetch.close()
        self.life.sheets.close(left(deadline))

    def job_closed(self) -> None:
        """A job handed over has ended (its outcome is out already): one fewer open."""
        with self._lock:
            self._open = max(0, self._open - 1)
        self.wake()

    def wake(self) -> None:
        """poll() returns at once: a job ended or left the queue, so the main loop may claim the next one now."""
        self._ended.set()

    def _should_stop(self, job: Job) -> bool:
        """The daemon stops, the run window closed, or this job was cancelled."""
        return self._stopping() or job.id in self._cancels

    def _stopping(self) -> bool:
        """The daemon stops or the run window closed: every running job stops (a batch as one)."""
        return self.stop.is_set() or self._paused.is_set()


def left(deadline: float) -> float:
    """Seconds until ``deadline`` (time.monotonic), never below 0: what a wait of the stop may still take."""
    return max(0.0, deadline - time.monotonic())
