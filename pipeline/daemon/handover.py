"""Between two photos on one worker (issue 13): the next photo's pre-checks and decode run ahead, while the one
before it still runs; the finished photo's encode and writes run behind, while the next one already runs. The
worker's own path from one photo's last step to the next one's first is then the engine's alone.

Neither changes what a job does, only on which thread and when:

- :class:`Prefetcher`: a queued job's pre-checks (JobLife.prepare: file kind, sidecar, recipe, settings, decode)
  run in one background thread as soon as it is handed to the executor. The try itself still begins when the
  worker takes the job (the attempt is counted then, so a crash of the photo before it is not charged to it), and
  a pre-check's failure is raised there, concluded as before. A config reloaded in between is prepared afresh.
- :class:`Lander`: a finished result is written and its input moved (JobLife.land) by one background thread, in
  order. The guarantees are the same: the input moves only after the output is durably written, in that thread
  as before; a kill before the write leaves the job in work/, run again at the next start (nothing was written);
  a kill between the two is the already-written case. At most ``depth`` hand-overs wait, so the worker never runs
  far ahead of the disk, and flush() writes them all before shutdown's last poll. A batch's results are one
  hand-over (landed in order, each closed alone): see Lander.submit.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import structlog

from .config import Config
from .spool import Job

log = structlog.get_logger("style-pipeline.worker")
WRITE_GRACE = 30.0  # seconds of a close's one deadline kept for the writes (Executor.close): an fsync is slow


AHEAD = 2  # photos prepared ahead of a worker that runs one at a time: the next one, and one spare


class Prefetcher:
    """At most ``limit`` jobs prepared ahead (a decoded photo each), in arrival order, in one thread; an
    executor that takes several at once (a batching slot) asks for more at each offer."""

    def __init__(self, prepare: Callable, limit: int = AHEAD) -> None:
        self.prepare, self.limit = prepare, limit
        self._ahead: dict[str, tuple[Config, Future]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def offer(self, job: Job, config: Config, limit: int | None = None) -> None:
        """Start preparing ``job`` now, unless ``limit`` (default: this one's) jobs are prepared or being
        prepared already."""
        with self._lock:
            if job.id in self._ahead or len(self._ahead) >= (limit or self.limit):
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
            self._ahead[job.id] = (config, self._pool.submit(self._prepare, job, config))

    def take(self, job: Job, config: Config):
        """The job's plan: prepared ahead under this same config, else now; a pre-check's failure is raised."""
        with self._lock:
            ahead = self._ahead.pop(job.id, None)
        if ahead is not None and ahead[0] is config:
            return ahead[1].result()
        return self.prepare(job, config)

    def discard(self, job_id: str) -> None:
        """The job's try ended without take() (already written, begin refused it): its place is free again."""
        with self._lock:
            self._ahead.pop(job_id, None)

    def _prepare(self, job: Job, config: Config):
        plan = self.prepare(job, config)
        log.info("pre-checks passed", job_id=job.id, file=job.source, ahead=True)
        return plan

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            self._ahead.clear()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class Lander:
    """One thread landing results in order; the worker hands one over and goes on to the next photo."""

    def __init__(self, depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)  # put() waits while ``depth`` results wait
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._waiting = 0  # results handed over and not yet landed
        self._closed = False  # close() was called: the thread ends once it holds nothing, later lands run at once

    def submit(self, *lands: Callable[[], None]) -> None:
        """Each of ``lands`` (which never raise: they conclude their own faults) runs in the landing thread, in
        order, after those handed over before them.

        Several at once (a batch's photos) are one hand-over: one of the ``depth`` places. Were each photo its
        own, a slot handing over a batch of 7 would wait at the third for the writes of the first, and its next
        batch would start only once 5 photos were written: the gap this thread exists to remove. The bound stays
        what it is for: at most ``depth`` hand-overs (a batch's results each) wait while one lands, so the memory
        held is a few batches' pictures and a slot is never more than that ahead of the disk; ``unwritten``
        still counts photos."""
        with self._lock:
            closed = self._closed
            if not closed:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="lander", daemon=True)
                    self._thread.start()
                self._waiting += len(lands)
        if closed:  # a job that outlived the close's join (a step past its deadline): landed here, not lost
            for land in lands:
                _land(land)
            return
        self._queue.put((lands, True))

    def flush(self, timeout: float) -> bool:
        """Return once every result handed over so far is landed, or after ``timeout`` (a stuck write): then an
        error names how many results are left unwritten (their jobs stay in work/ and run again at the next
        start). True when all are landed."""
        done = threading.Event()
        deadline = time.monotonic() + timeout
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
        try:
            if running:
                self._queue.put(((done.set,), False), timeout=timeout)
                done.wait(max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass
        with self._lock:
            left = self._waiting
        if left:
            log.error("results still unwritten after the wait; a stop now leaves their photos in work/ for the next "
                      "start",
                      unwritten=left, waited_s=round(timeout, 1))
        return not left

    def close(self, timeout: float) -> bool:
        """At the executor's close: flush(timeout), then the thread ends once every result it holds is landed (a
        write still stuck past the wait is finished first: nothing handed over is dropped). Before, it stayed idle
        for ever: each Daemon run in one process (tests, `once`, the Python API) left one behind. A land handed
        over after this runs in the caller's thread. True when all were landed within ``timeout``."""
        landed = self.flush(timeout)
        with self._lock:
            self._closed = True
        try:
            self._queue.put_nowait(((), False))  # wakes an idle thread to see it; a full queue keeps it busy anyway
        except queue.Full:
            pass
        return landed

    def _run(self) -> None:
        while True:
            with self._lock:  # _waiting counts a submit before its put: a hand-over on its way is never stranded
                if self._closed and not self._waiting:
                    return
            lands, counted = self._queue.get()
            for land in lands:
                try:
                    _land(land)
                finally:
                    if counted:
                        with self._lock:
                            self._waiting -= 1


def _land(land: Callable[[], None]) -> None:
    try:
        land()
    except Exception:  # noqa: BLE001 - land() concludes its own faults; the landing thread must outlive a bug
        log.exception("error landing a result; going on")
