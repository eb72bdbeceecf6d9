"""``executor: ray`` (issue 6): the executor interface, with each plan's ``engine.stylize`` run on a Ray actor.

The job's life stays :class:`~.jobs.JobLife`'s, in the daemon: this module sends plans to the actors (ray_actor.py,
one per GPU or per ``num_cpus_per_worker`` CPUs), watches them and lands their results. At most ``max_inflight``
jobs are claimed; an actor lost mid-job is replaced and its job retried on another; a daemon killed with jobs in
flight leaves them in work/ for ``recover()``. Imported only for ``executor: ray``; ray itself lazily.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from ..errors import Cancelled, JobFailure, Reason
from ..fsio import write_atomic
from ..progress import versions
from .config import Config
from .executor import Executor, left
from .handover import WRITE_GRACE
from .jobs import Plan, current, logging_for
from .ray_actor import CONTROL, StyleActor
from . import ray_cluster
from .spool import Job, Spool

log = structlog.get_logger("style-pipeline.ray")

STYLE_REFS_KEPT = 64
STARTING = "starting"  # a slot's node until its actor answers: where it runs is not known yet


@dataclass
class Slot:
    """One actor position: replaced in place when its actor dies."""

    index: int
    handle: Any = None
    label: str = ""
    generation: int = 0
    info: dict | None = None  # who the actor is (node, host, device), from its first answer: None until ready
    node: str = STARTING
    jobs: set = field(default_factory=set)
    asked: Any = None  # the ObjectRef of a progress() call in flight
    last_progress: dict | None = None
    not_before: float = 0.0  # an actor that died before it was ready is re-created after a pause


@dataclass
class Flight:
    """One job sent to one actor. The actor's handle, label and node are its own, taken when it was sent: the slot
    is relabelled (and its handle dropped) in place when that actor dies, while the flight may not have landed yet."""

    job: Job
    config: Config  # the one the try opened with: the job lands by it, not by a reload's (rev9d item 2)
    plan: Plan
    slot: Slot
    generation: int
    started: float
    handle: Any = None
    label: str = ""
    node: str = ""
    began: bool = False  # its actor was heard running it
    charged: bool | None = None  # its actor died: was it the job it ran (decided once for all of that actor's)
    logged_at: float = 0.0  # its last "progress" line (time.monotonic); 0: none yet


class RayExecutor(Executor):
    """Jobs open until they land count against ``max_inflight``, so the main loop claims until the actors
    are full; a dispatcher thread sends, watches and lands them."""

    def __init__(self, spool: Spool, get_config: Callable[[], Config], stop: threading.Event) -> None:
        super().__init__("ray-worker", spool, get_config, stop)
        config = get_config()
        self.ray, self.owns_ray, self.num_workers, self.gpus, self.cpus = ray_cluster.start(config.ray)
        self.max_inflight = config.ray.max_inflight or self.num_workers
        self.engine_args = (str(config.weights) if config.weights else None, config.device, config.cache_styles)
        self.flights: dict[Any, Flight] = {}
        self._stop_by = 0.0  # close() sets it: until then a stop leaves the jobs in flight at once
        self._style_refs: dict[int, tuple] = {}
        self._actor_class = self.ray.remote(concurrency_groups={CONTROL: 2})(StyleActor)
        self.slots = [Slot(i) for i in range(self.num_workers)]
        for slot in self.slots:
            self._spawn(slot)

    # --- the interface -----------------------------------------------------------------------------
    def has_room(self) -> bool:
        return self._open < self.max_inflight

    # --- the dispatcher thread -----------------------------------------------------------------------
    def run(self) -> None:
        """Send what arrives, land what ended, watch the actors; a stop leaves the jobs in flight in work/."""
        try:
            last = time.monotonic()
            while (job := self._next()) is not None:
                if job:
                    self._launch(job)
                elif self.flights:
                    self._collect(0.2)
                self._watch()
                now, was_busy = time.monotonic(), bool(self.flights)
                self._busy_seconds, last = self._busy_seconds + (now - last) * was_busy, now
            self._cancel_in_flight()
        except Exception as exc:  # the daemon exits 1, so that systemd's Restart=on-failure starts it again
            log.exception("the ray dispatcher failed; stopping the daemon (exit status 1)")
            self.broken = f"{type(exc).__name__}: {exc}"
            self.stop.set()
        finally:
            self._leave_in_flight()
            self._shutdown_ray()

    def _next(self) -> Job | None | bool:
        """The next job handed over; None: stop; False: none came (the wait is short while jobs are in flight)."""
        try:
            return self._jobs.get_nowait() if self.flights else self._jobs.get(timeout=0.2)
        except queue.Empty:
            return False

    def _launch(self, job: Job) -> None:
        sent = False
        with logging_for(job):
            opened = self.life.open(job, in_process=False)  # a daemon crash does not crash the actor's job
            slot = self._pick(job)
            if opened and slot.handle is None:  # every actor is being re-created
                self.life.defer(job, 5, "no worker to run the job yet; it waits")
            elif opened:
                sent = self._send(job, *opened, slot)
        if not sent:
            self.job_closed()

    def _send(self, job: Job, config: Config, plan: Plan, slot: Slot) -> bool:
        """The input as its bytes (smaller than pixels), each style decoded once into the object store."""
        try:
            styles = [self._style_ref(image) for image in plan.styles]
            keys = [str(ref.path) for ref in plan.recipe.styles]
            resume = job.checkpoint.read_bytes() if job.checkpoint.is_file() else None  # the actor resumes from it
            ref = slot.handle.run.remote(job.id, job.name, plan.settings, job.input.read_bytes(), keys, resume, *styles)
        except Exception as exc:
            self.life.conclude(job, exc)
            return False
        self.flights[ref] = Flight(job, config, plan, slot, slot.generation, time.monotonic(), slot.handle, slot.label,
                                   slot.node)
        slot.jobs.add(job.id)
        self._marker += 1
        self.life.started(job, plan, worker=slot.label, node=slot.node)
        return True

    def _pick(self, job: Job) -> Slot:
        """A ready actor with the fewest jobs, avoiding the ones this job was lost on."""
        lost_on = {entry["actor"] for entry in self.life.lost_attempts.get(job.id, [])}
        return min(self.slots, key=lambda s: (s.handle is None, s.info is None, s.label in lost_on, len(s.jobs),
                                             s.index))

    def _style_ref(self, image):
        """Each decoded style (the job life keeps one per file and mtime) goes into the object store once."""
        if id(image) not in self._style_refs:
            if len(self._style_refs) >= STYLE_REFS_KEPT:
                self._style_refs.clear()
            self._style_refs[id(image)] = (image, self.ray.put(image))  # holding it keeps its id unique
        return self._style_refs[id(image)][1]

    # --- landing -----------------------------------------------------------------------------------
    def _collect(self, timeout: float) -> None:
        for ref in self.ray.wait(list(self.flights), num_returns=1, timeout=timeout)[0]:
            self._land(ref, self.flights.pop(ref))

    def _land(self, ref, flight: Flight) -> None:
        job = flight.job
        flight.slot.jobs.discard(job.id)
        self._cancels.discard(job.id)
        with logging_for(job):
            try:
                self._settle(flight, self.ray.get(ref))
            except self.ray.exceptions.RayTaskError as exc:  # raised by the job in the actor: retried, bounded
                self.life.conclude(job, exc)
            except self.ray.exceptions.RayError as exc:  # the actor or its node is gone: not the job's fault
                self._lost(flight, exc)
        self.job_closed()
        self._marker += 1

    def _settle(self, flight: Flight, reply: dict) -> None:
        """The actor's answer: a Result the daemon writes as for a local job, a cancel, or a Reason."""
        job = flight.job
        if reply["status"] == "ok":
            worker = reply["worker"]
            record = {"executor": "ray", "worker": worker, "lost_attempts": self.life.lost_attempts.pop(job.id, [])}
            self.life.land(job, flight.config, flight.plan, reply["result"], record, worker=worker["actor"],
                           node=flight.node)
        elif reply["status"] == "cancelled":
            saved = self._keep_checkpoint(job, reply.get("checkpoint"))
            self.life.conclude(job, Cancelled(reply["step"], str(job.checkpoint) if saved else None))
        else:
            self.life.conclude(job, JobFailure(Reason(reply["reason"]), reply["problem"], reply["fix"]))

    def _keep_checkpoint(self, job: Job, state: bytes | None) -> bool:
        """The checkpoint the actor sent back with its cancel, written into the job's work/ folder, where the next
        try sends it to its actor (rev9e #1: Ray jobs kept none, and started over at every window and restart)."""
        if not state:
            return False
        try:
            write_atomic(state, job.checkpoint)
            return True
        except OSError as exc:  # a full disk: the job starts over, it is not lost
            log.warning("the job's checkpoint could not be written; it starts over", error=str(exc))
            return False

    def _lost(self, flight: Flight, exc: Exception) -> None:
        """Only the job the dead actor ran costs an attempt; the ones queued behind it wait, uncharged (rev9e #3:
        at max_attempts 1 they went to failed/ without ever starting). The record names the actor that ran it."""
        if self._ran(flight):
            self.life.lost(flight.job, flight.label, flight.node, exc)
        else:
            self.life.defer(flight.job, 0, "its worker died before it began it; it goes to another worker")
        if flight.slot.generation == flight.generation:
            self._replace(flight.slot, exc)  # the slot's next _watch starts a new actor

    def _ran(self, flight: Flight) -> bool:
        """Was this the job its dead actor was running? The one it was heard running, else (it died before a progress
        answer) the oldest sent to it: an actor runs its jobs one at a time, in the order sent. None where the actor
        was never heard ready (it died starting: its node's fault, not a photo's). Decided once for all of that
        actor's flights still out, since they land one by one."""
        if flight.charged is None:
            mine = [f for f in (flight, *self.flights.values())
                    if f.slot is flight.slot and f.generation == flight.generation]
            running = next((f for f in mine if f.began), None) or min(mine, key=lambda f: f.started)
            running = None if flight.node == STARTING else running
            for other in mine:
                other.charged = other is running
        return bool(flight.charged)

    # --- actors ------------------------------------------------------------------------------------
    def _spawn(self, slot: Slot) -> None:
        weights, device, cache = self.engine_args
        threads = max(1, int(self.cpus)) if not self.gpus else 0
        slot.label = f"worker-{slot.index}" + (f".{slot.generation}" if slot.generation else "")
        slot.handle = self._actor_class.options(num_gpus=self.gpus, num_cpus=self.cpus).remote(
            slot.label, weights, device, cache, threads)
        slot.info, slot.node, slot.asked, slot.last_progress = None, STARTING, None, None

    def _replace(self, slot: Slot, exc: Exception) -> None:
        """A new actor in the slot: at once if the dead one had been ready, else (no weights or no torch on
        that node?) after 30 s, so that a broken node is not hammered."""
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(slot.handle, no_restart=True)
        slot.generation, slot.handle, slot.not_before = slot.generation + 1, None, time.monotonic()
        slot.jobs.clear()
        if slot.info is None:
            slot.not_before += 30
            log.error("a worker died while starting; retrying in 30 s", slot=slot.index, error=str(exc)[:200],
                      fix=f"Every node needs `{ray_cluster.INSTALL}` (and the VGG weights); see the Ray worker logs")

    def _watch(self) -> None:
        """New actors where one is missing, each actor's progress, jobs to cancel."""
        for slot in self.slots:
            if slot.handle is None and time.monotonic() >= slot.not_before and not self.stop.is_set():
                self._spawn(slot)
            elif slot.handle is not None:
                self._ask(slot)
        for flight in self.flights.values():  # a window closed, a cancel: asked each pass until it lands
            if self._should_stop(flight.job):  # its own actor's handle: a dead one's lands as lost (rev9e #7)
                flight.handle.cancel.options(concurrency_group=CONTROL).remote(flight.job.id)
        self._update_progress()

    def _ask(self, slot: Slot) -> None:
        """One progress() call in flight per actor, asked again once answered; the first answer says it is ready."""
        if slot.asked is None:
            slot.asked = slot.handle.progress.options(concurrency_group=CONTROL).remote()
            return
        if not self.ray.wait([slot.asked], timeout=0)[0]:
            return
        try:
            answer = self.ray.get(slot.asked)
        except self.ray.exceptions.RayError as exc:
            answer = None
            if slot.info is None or not slot.jobs:  # died starting, or idle; one lost mid-job is seen when it lands
                return self._replace(slot, exc)
        slot.asked = None
        if answer:
            self._heard(slot, answer["worker"], answer["job"])

    def _heard(self, slot: Slot, worker: dict, step: dict | None) -> None:
        if slot.info is None:
            slot.info, slot.node = worker, f"{worker['host']} ({worker['node_ip']}, node {worker['node_id'][:8]})"
            log.info("worker ready", worker=slot.label, node=slot.node, device=worker["device"],
                     load_seconds=worker["load_seconds"])
            if worker["versions"] != versions():
                log.warning("a worker runs other versions than the daemon", worker=slot.label,
                            worker_versions=worker["versions"], daemon_versions=versions())
        moved = bool(step) and "step" in step and step.get("step") != (slot.last_progress or {}).get("step")
        if slot.info is worker or moved:
            self._marker += 1  # the watchdog's sign of life: an actor came up, or a step moved
        slot.last_progress = step or slot.last_progress
        for flight in self.flights.values():  # its node, once known; the job it runs: charged if it dies (_ran)
            if flight.slot is slot and flight.generation == slot.generation:
                flight.node = slot.node
                flight.began = flight.began or bool(step) and flight.job.id == step.get("job_id")
                if moved and flight.job.id == step.get("job_id"):
                    self.life.step_completed(flight.job)  # as a local job's on_step counts them
                    self._log_progress(flight, step)

    def _log_progress(self, flight: Flight, step: dict) -> None:
        """The journal's "progress" line, as a local job's (worker.py): at the first step heard, then at most once
        every progress_seconds, so that a slow Ray job tells itself from a stuck one (rev9e #5: none was logged)."""
        now = time.monotonic()
        if flight.logged_at and now < flight.logged_at + flight.config.progress_seconds:
            return
        flight.logged_at = now
        fields = current(flight.job, flight.plan, step, worker=flight.label, node=flight.node,
                         elapsed=round(now - flight.started, 1))
        with logging_for(flight.job):
            log.info("progress", **{k: v for k, v in fields.items() if k not in ("job_id", "file")})

    def _update_progress(self) -> None:
        """status.json's "current": the oldest job in flight, and every job in flight under "running"."""
        now, running = time.monotonic(), []
        for flight in sorted(self.flights.values(), key=lambda f: f.started):
            step = flight.slot.last_progress or {}
            running.append(current(flight.job, flight.plan, step if step.get("job_id") == flight.job.id else {},
                                   worker=flight.label, node=flight.node,
                                   elapsed=round(now - flight.started, 1)))
        self._current = {**running[0], "running": running} if running else None

    # --- stopping ----------------------------------------------------------------------------------
    def close(self, timeout: float) -> list[Job]:
        """The dispatcher's share of the stop: it waits for the actors' cancels until the join's deadline."""
        self._stop_by = time.monotonic() + timeout - min(WRITE_GRACE, timeout / 4) - 1
        return super().close(timeout)

    def _cancel_in_flight(self) -> None:
        """A stop: each job in flight is cancelled on its actor and its checkpoint landed, as a local job's is,
        until close()'s deadline; _leave_in_flight takes whatever has not answered by then."""
        while self.flights and left(self._stop_by) > 0:
            self._watch()  # the stop flag is set: it sends each flight's cancel
            self._collect(min(0.2, left(self._stop_by)))

    def _leave_in_flight(self) -> None:
        """A stop: every job in flight stays in work/ for the next start (not counted against the input); one that did
        not answer its cancel in time has no new checkpoint, and the log says so."""
        for flight in self.flights.values():  # the actors stop with this process (their owner)
            with logging_for(flight.job):
                step = (flight.slot.last_progress or {}).get("step", 0)
                self.life.cancelled(flight.job, step, saved=False)
            self.job_closed()
        self.flights.clear()
        self._current = None

    def _shutdown_ray(self) -> None:
        self.owns_ray = self.owns_ray and ray_cluster.stop(self.ray)
