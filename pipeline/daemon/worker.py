"""The local executor: one engine on one device, one thread, fed in arrival order.

It runs a plan's optimisation and leaves the rest of the job's life (pre-checks, record, publish, outcomes) to
:class:`~.jobs.JobLife`, as every executor does.
"""
from __future__ import annotations

import queue
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
from .jobs import JobLife, Plan
from .spool import Job, Spool

log = structlog.get_logger("style-pipeline.worker")


class Worker(Executor):
    def __init__(self, engine: StyleTransfer, spool: Spool, get_config: Callable[[], Config],
                 stop: threading.Event, life: JobLife | None = None) -> None:
        super().__init__("worker", spool, get_config, stop, life)
        self.engine = engine

    def respawn(self) -> "Worker":
        """A fresh thread with this one's queue and job state: the supervisor's restart."""
        new = Worker(self.engine, self.spool, self.get_config, self.stop, self.life)
        new.jobs, new.busy_seconds, new.marker = self.jobs, self.busy_seconds, self.marker + 1
        return new

    def submit(self, job: Job) -> None:
        self.busy.set()
        self.jobs.put(job)

    def idle(self) -> bool:
        return not self.busy.is_set() and self.jobs.empty()

    def has_room(self) -> bool:
        """Nothing waiting: the main loop may claim the next file now, so that its decode and claim overlap
        the running job and the worker never waits for them."""
        return self.jobs.empty()

    def unstarted(self) -> list[Job]:
        jobs = []
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return jobs
            if job is not None:
                jobs.append(job)

    @property
    def open_jobs(self) -> int:
        return 0 if self.idle() else 1

    def run(self) -> None:
        """Take jobs until told to stop. Nothing outside a job may end the loop: it is logged and goes on."""
        while True:
            job = self.jobs.get()
            if job is None:
                return
            started = time.monotonic()
            self.current = job
            try:
                self.process(job)
            except Exception:
                log.exception("error in the worker loop outside any job; going on")
            finally:  # a BaseException ending the thread leaves .current set: the supervisor takes it back
                self.current = job if sys.exc_info()[0] is not None else None
                self.busy_seconds += time.monotonic() - started
                self.progress = None
                if self.jobs.empty():
                    self.busy.clear()
                self.finished.set()

    # --- one job ----------------------------------------------------------------------------
    # --- one job ----------------------------------------------------------------------------
    def process(self, job: Job) -> None:
        """One try of one job; every exception, the failure path's own included, ends in a recorded outcome."""
        structlog.contextvars.bind_contextvars(job_id=job.id, file=job.source)
        try:
            self._try(job)
        except Exception as exc:  # the failure path itself failed (ENAMETOOLONG, EACCES on failed/, a bug)
            log.exception("the failure path failed; keeping the file under its job id")
            self.life._last_resort(job, exc)
        finally:
            structlog.contextvars.clear_contextvars()

    def _try(self, job: Job) -> None:
        life = self.life
        try:
            config = life.begin(job)
            if not life.already_written(job, config):
                plan = life.prepare(job, config)
                log.info("job started", recipe=plan.recipe.name, size=plan.settings.size, steps=plan.settings.steps,
                         attempt=job.attempts)
                result = self.engine.stylize(plan.content, plan.styles, plan.settings, on_step=self._on_step(job, plan),
                                             should_stop=self._should_stop, checkpoint=job.checkpoint)
                life.finish(job, config, plan, result)
            kept = life.complete(job, config)
            log.info("job done", kept_input=str(kept) if kept else None)
        except Exception as exc:
            life.conclude(job, exc)

    def _should_stop(self) -> bool:
        return self.stop.is_set() or self.pause.is_set()

    def _on_step(self, job: Job, plan: Plan):
        config = self.get_config()
        last_log = [0.0]
        saved: list = [0, None]  # the step and path of the last intermediate picture

        def on_step(info) -> None:
            self.marker += 1
            if config.save_every and info.picture and info.step - saved[0] >= config.save_every:
                saved[:] = [info.step, self._save_picture(job, plan, info) or saved[1]]
            self.progress = {"job_id": job.id, "file": job.source, "recipe": plan.recipe.name, "step": info.step,
                             "total_steps": info.total_steps, "scale": info.scale, "n_scales": info.n_scales,
                             "tiles": info.tiles, "loss": info.loss,
                             "eta_seconds": round(info.eta or 0.0, 1), "elapsed": round(info.elapsed, 1),
                             "latest_picture": saved[1]}
            if time.monotonic() - last_log[0] >= config.progress_seconds:
                last_log[0] = time.monotonic()
                log.info("progress", **{k: v for k, v in self.progress.items() if k not in ("job_id", "file")})
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


LocalExecutor = Worker  # the name the executor interface uses (docs/architecture.md)
