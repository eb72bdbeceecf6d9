"""The local executor: one engine on one device, one thread, fed in arrival order.

It runs a plan's optimisation and leaves the rest of the job's life (pre-checks, record, publish, outcomes) to
:class:`~.jobs.JobLife`, as every executor does.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable

import structlog

from ..engine import StyleTransfer, images
from ..fsio import write_atomic
from . import outputs
from .config import Config
from .executor import Executor
from .jobs import JobLife, Plan, current, logging_for
from .spool import Job, Spool

log = structlog.get_logger("style-pipeline.worker")


class Worker(Executor):
    """The local executor: one thread runs one job at a time on its engine, so a job's steps, checkpoints and
    cancels have one owner; the pool's slots are Workers too (pool.py)."""

    def __init__(self, engine: StyleTransfer, spool: Spool, get_config: Callable[[], Config],
                 stop: threading.Event, life: JobLife | None = None) -> None:
        super().__init__("worker", spool, get_config, stop, life)
        self.engine = engine
        self._handed = False  # the job in hand went to the landing thread, which closes it once landed
        self._taken: float | None = None  # when the job in hand was taken: "job started" says how long opening took
        self._heir: Worker | None = None  # the worker that replaced this dead one: its landings close on the heir

    def has_room(self) -> bool:
        """Nothing waiting: the main loop may claim the next file now, so that its decode and claim overlap
        the running job and the worker never waits for them."""
        return self._jobs.empty()

    def respawn(self) -> "Worker":
        """A fresh thread with this one's queue, open jobs (less the one that died with it) and job life. The results
        it handed to the landing thread close on the new one's count (job_closed): the main loop no longer waits for
        them to land first, up to 120 s behind a stuck write, with no status and no watchdog ping meanwhile."""
        new = Worker(self.engine, self.spool, self.get_config, self.stop, self.life)
        new._jobs, new._busy_seconds, new._marker = self._jobs, self._busy_seconds, self._marker + 1
        with self._lock:  # a landing closing now counts either here, before the copy, or on the heir: never lost
            new._open = self._open - (self._job is not None)
            self._heir = new
        return new

    def job_closed(self) -> None:
        """One fewer open, on the heir once this worker died and was replaced (respawn)."""
        with self._lock:
            heir = self._heir
            if heir is None:
                self._open = max(0, self._open - 1)
        if heir is not None:
            heir.job_closed()
        else:
            self.wake()

    # --- the thread -------------------------------------------------------------------------------
    def run(self) -> None:
        """Take jobs until told to stop. Nothing outside a job may end the loop: it is logged and goes on."""
        while (job := self._jobs.get()) is not None:
            started = time.monotonic()
            self._job, self._handed = job, False
            try:
                self.process(job)
            except Exception:
                log.exception("error in the worker loop outside any job; going on")
            finally:  # a BaseException ending the thread leaves the job in hand: the supervisor takes it back,
                # unless it was handed to the writer already (which lands and closes it; taken back, it would run twice)
                self._job = job if sys.exc_info()[0] is not None and not self._handed else None
                self._busy_seconds += time.monotonic() - started
                self._current = None
                self._cancels.discard(job.id)
                if self._job is None and not self._handed:
                    self.job_closed()

    def process(self, job: Job) -> None:
        """One try of one job; every exception, the failure path's own included, ends in a recorded outcome."""
        self._taken = time.perf_counter()
        with logging_for(job):
            self._guarded(job, lambda: self._try(job))

    def _try(self, job: Job) -> None:
        opened = self.life.open(job)
        self._prefetch_queued()
        if opened is not None:
            self._run(job, *opened, behind=True)

    def _run(self, job: Job, config: Config, plan: Plan, behind: bool = False) -> None:
        """One opened job through the engine alone, with its checkpoint; its result landed (``behind``: by the
        landing thread, while this one goes on to the next photo) or its fault concluded."""
        self.life.started(job, plan, **self._opened())
        try:
            result = self.engine.stylize(plan.working or plan.content, plan.styles, plan.settings,
                                         on_step=self._on_step(job, plan),
                                         should_stop=lambda: self._should_stop(job), checkpoint=job.checkpoint)
        except Exception as exc:
            self.life.conclude(job, exc)
            return
        if behind:
            self._land_behind(job, config, plan, result)
        else:
            self.life.land(job, config, plan, result)

    def _opened(self) -> dict:
        """{"opened_ms": the slot's time from taking the job in hand to its "job started"} (its open, pre-checks
        made ahead or not, a batch's gathering and sizing: issue 13's gap, the daemon's part), once a try."""
        taken, self._taken = self._taken, None
        return {} if taken is None else {"opened_ms": round(1000 * (time.perf_counter() - taken), 1)}

    def _land_behind(self, job: Job, config: Config, plan: Plan, result) -> None:
        """life.land in the landing thread (handover.py); it closes the job."""
        self.life.landing.submit(self._landing(job, config, plan, result))
        self._handed = True  # only once it is queued: a submit that raised leaves the job to process()

    def _landing(self, job: Job, config: Config, plan: Plan, result, batch: int = 1) -> Callable[[], None]:
        """The job's life.land for the landing thread, under its log context, closing the job once landed (and
        only there: whoever hands it over closes it no more). Its record says not running from now on. A photo of
        a batch of ``batch`` says so in its log and record, as the slot's own landing did."""
        context = {**structlog.contextvars.get_contextvars(), "job_id": job.id, "file": job.source}
        record, fields = ({"batch": batch}, {"batch": batch}) if batch > 1 else (None, {})

        def land() -> None:
            structlog.contextvars.bind_contextvars(**context)
            try:
                self._guarded(job, lambda: self.life.land(job, config, plan, result, record, **fields))
            finally:
                structlog.contextvars.clear_contextvars()
                self.job_closed()
        self._not_running(job)
        return land

    def _not_running(self, job: Job) -> None:
        """The result is computed: a daemon crash from now on (while it waits for its write, or the next photo
        runs) is not this photo's, so its record stops saying running before the worker goes on. Once: a batch's
        records are saved together first (pool.Slot._not_running_together)."""
        if not job.running:
            return
        job.running = False
        self.life.save_or_warn(job, " before its write")  # the result is made (a batch's too): never lost to it

    def _on_step(self, job: Job, plan: Plan):
        config = self.get_config()
        last_log = [0.0]
        saved: list = [0, None]  # the step and path of the last intermediate picture

        def on_step(info) -> None:
            self._marker += 1
            self.life.step_completed(job)  # a stop finding it mid-step now is no hung step's (stopped_mid_step)
            if config.save_every and info.picture and info.step - saved[0] >= config.save_every:
                saved[:] = [info.step, self._save_picture(job, plan, info) or saved[1]]
            self._current = current(job, plan, info, latest_picture=saved[1])
            setup = getattr(info, "setup", None)  # the first step's: the set-up's parts, ms (engine Monitor.mark)
            if time.monotonic() - last_log[0] >= config.progress_seconds or setup:
                last_log[0] = time.monotonic()
                log.info("progress", **{k: v for k, v in self._current.items() if k not in ("job_id", "file")},
                         **({"setup_ms": setup} if setup else {}))
        return on_step

    def _save_picture(self, job: Job, plan: Plan, info) -> str | None:
        """save_every: the current picture in the job's folder, as neural-style's -save_iter does; it goes
        with the folder when the job ends (the output is in the outbox). A failure here never fails the job."""
        fmt = plan.settings.format
        path = job.dir / outputs.image_name(f"step-{info.step:05d}", fmt)
        try:
            write_atomic(images.encode(info.picture(), fmt, plan.settings.quality), path)
        except OSError as exc:
            log.warning("intermediate picture not written", error=str(exc))
            return None
        return str(path)

