"""``executor: ray`` (issue 6): jobs run on Ray actors; the daemon still owns the folders.

The job's life (pre-checks, naming, writing, failing) is :class:`~.jobs.JobLife`'s, as for the local executor;
only the optimisation moves to an actor (ray_actor.py), one per GPU (or per ``num_cpus_per_worker`` CPUs).

- Back-pressure: at most ``max_inflight`` jobs are claimed and sent; the rest stay unclaimed in the inbox,
  so a restart loses nothing.
- An actor that dies mid-job (``RayActorError``, a lost node): the actor is replaced and the job retried on
  another one through the usual retry path (``max_attempts``, then failed/ with ``too_many_attempts``).
- The daemon killed with jobs in flight: its actors die with it; the jobs stay in work/ and ``recover()``
  re-queues them at the next start. Only the daemon names outputs, so none is written twice.

Ray is an optional extra: this module is imported only when ``executor: ray``, and imports ray itself lazily.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import structlog

from ..progress import versions
from .config import Config
from .executor import Executor
from .jobs import Plan
from .ray_actor import CONTROL, RemoteResult, StyleActor
from .ray_cluster import INSTALL, RayUnavailable, connect, import_ray, plan_workers
from .spool import Job, Reason, Spool, now_iso

log = structlog.get_logger("style-pipeline.ray")

PROGRESS_EVERY = 1.0
STYLE_REFS_KEPT = 64


class WorkerLost(Exception):
    """An actor (or its node) died while it held a job: the job is retried elsewhere."""


# --- the daemon side ------------------------------------------------------------------------------

@dataclass
class Slot:
    """One actor position: replaced in place when its actor dies."""

    index: int
    handle: Any = None
    label: str = ""
    generation: int = 0
    hello: Any = None  # the ObjectRef of hello() until it answers
    info: dict | None = None  # hello()'s answer: node, host, device
    jobs: set = field(default_factory=set)
    progress_ref: Any = None
    progress_at: float = 0.0
    last_progress: dict | None = None
    not_before: float = 0.0  # an actor that died before it was ready is re-created after a pause

    @property
    def node(self) -> str:
        if not self.info:
            return "starting"
        return f"{self.info['host']} ({self.info['node_ip']}, node {self.info['node_id'][:8]})"


@dataclass
class Flight:
    job: Job
    plan: Plan
    slot: Slot
    generation: int
    started: float
    cancel_sent: bool = False


_NOTHING = object()


class RayWorker(Executor):
    """The executor interface for the main loop, with jobs running on Ray actors (the actor: ray_actor.py).

    ``idle()`` means "fewer than max_inflight jobs open", so the main loop keeps claiming until the
    actors are full; ``open_jobs`` is what ``once`` waits for.
    """

    def __init__(self, spool: Spool, get_config: Callable[[], Config], stop: threading.Event) -> None:
        super().__init__("ray-worker", spool, get_config, stop)  # no engine here: the actors hold them
        config = get_config()
        self.options = config.ray
        self.ray = import_ray()
        self.owns_ray = connect(self.ray, self.options)
        resources = self.ray.cluster_resources()
        try:
            self.num_workers, self.gpus_per_worker, self.cpus_per_worker = plan_workers(self.options, resources)
        except ValueError as exc:
            self._shutdown_ray()
            raise RayUnavailable(str(exc), fix="Change the ray: section of the config") from exc
        self.max_inflight = self.options.max_inflight or self.num_workers
        self.engine_args = (str(config.weights) if config.weights else None, config.device, config.cache_styles)
        self.flights: dict[Any, Flight] = {}
        self.history: dict[str, list[dict]] = {}  # job_id -> the attempts lost with their actor
        self.open_count = 0
        self._lock = threading.Lock()
        self._style_refs: dict[tuple, Any] = {}
        self._actor_class = self.ray.remote(concurrency_groups={CONTROL: 2})(StyleActor)
        self.slots = [Slot(i) for i in range(self.num_workers)]
        for slot in self.slots:
            self._spawn(slot)
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        log.info("ray ready", address=self.options.address or "local instance", nodes=len(nodes),
                 cpus=resources.get("CPU", 0), gpus=resources.get("GPU", 0), workers=self.num_workers,
                 gpus_per_worker=self.gpus_per_worker, cpus_per_worker=self.cpus_per_worker,
                 max_inflight=self.max_inflight)

    # --- the main loop's interface ----------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._lock:
            self.open_count += 1
            self.busy.set()
        self.jobs.put(job)
        if self.idle():
            self.finished.set()  # room for more: the main loop claims the next at once, not after a tick

    @property
    def open_jobs(self) -> int:
        return self.open_count

    def idle(self) -> bool:
        return self.open_count < self.max_inflight

    def has_room(self) -> bool:
        return self.idle()

    def actor_stats(self, timeout: float = 30) -> list[dict]:
        """Each live actor's counters (jobs, cache_misses, styles_seen...): for tests and `status`."""
        refs = [s.handle.stats.options(concurrency_group=CONTROL).remote() for s in self.slots if s.handle]
        return self.ray.get(refs, timeout=timeout)

    def run(self) -> None:
        try:
            last = time.monotonic()
            while True:
                try:
                    job = self.jobs.get_nowait() if self.flights else self.jobs.get(timeout=0.2)
                except queue.Empty:
                    job = _NOTHING
                if job is None:
                    self._leave_in_flight()
                    return
                if job is not _NOTHING:
                    self._launch(job)
                    continue
                if self.flights:
                    self._collect(0.2)
                self._watch()
                now = time.monotonic()
                if self.flights:
                    self.busy_seconds += now - last
                last = now
        except Exception:
            log.exception("the ray dispatcher failed; stopping the daemon")
            self._leave_in_flight()
            self.stop.set()
        finally:
            self._shutdown_ray()

    # --- sending -------------------------------------------------------------------------------------
    def _launch(self, job: Job) -> None:
        structlog.contextvars.bind_contextvars(job_id=job.id, file=job.source)
        sent = False
        try:
            config = self.life.begin(job, in_process=False)  # a daemon crash does not crash the actor's job
            if self.life.already_written(job, config):
                kept = self.life.complete(job, config)
                log.info("job done", kept_input=str(kept) if kept else None)
                return
            plan = self.life.prepare(job, config)  # the same pre-checks, here, before anything is sent
            slot = self._pick(job)
            if slot.handle is None:  # every actor is being re-created: wait, without counting an attempt
                job.attempts -= 1
                job.not_before = time.time() + 5
                self.spool.save(job)
                self.life.retry.append(job)
                log.warning("no worker to run the job yet; it waits", retry_in=5)
                return
            styles = [self._style_ref(ref.path) for ref in plan.recipe.styles]
            ref = slot.handle.run.remote(job.id, job.name, plan.settings, job.input.read_bytes(), *styles)
            self.flights[ref] = Flight(job, plan, slot, slot.generation, time.monotonic())
            slot.jobs.add(job.id)
            sent = True
            self.marker += 1
            log.info("job started", recipe=plan.recipe.name, size=plan.settings.size, steps=plan.settings.steps,
                     attempt=job.attempts, worker=slot.label, node=slot.node)
        except Exception as exc:
            self.life.conclude(job, exc)
        finally:
            if not sent:
                self._closed()
            structlog.contextvars.clear_contextvars()
        self._update_progress()

    def _pick(self, job: Job) -> Slot:
        """A ready actor with the fewest jobs, avoiding the ones this job was lost on."""
        lost_on = {entry["actor"] for entry in self.history.get(job.id, [])}
        return min(self.slots, key=lambda s: (s.handle is None, s.info is None, s.label in lost_on, len(s.jobs),
                                             s.index))

    def _style_ref(self, path: Path):
        """Each style file goes into the object store once (per mtime): a night in one style sends it once."""
        key = (path, path.stat().st_mtime_ns)
        if key not in self._style_refs:
            if len(self._style_refs) >= STYLE_REFS_KEPT:
                self._style_refs.clear()
            self._style_refs[key] = self.ray.put(path.read_bytes())
        return self._style_refs[key]

    # --- landing -------------------------------------------------------------------------------------
    def _collect(self, timeout: float) -> None:
        refs = list(self.flights)
        ready, rest = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        for ref in ready:
            self._land(ref, self.flights.pop(ref))

    def _land(self, ref, flight: Flight) -> None:
        job, slot = flight.job, flight.slot
        structlog.contextvars.bind_contextvars(job_id=job.id, file=job.source)
        ray = self.ray
        try:
            slot.jobs.discard(job.id)
            reply = ray.get(ref)
            status = reply["status"]
            if status == "ok":
                config = self.get_config()
                self.finish_remote(job, config, flight.plan, reply)
                kept = self.life.complete(job, config)
                log.info("job done", kept_input=str(kept) if kept else None, worker=reply["worker"]["actor"],
                         node=slot.node, seconds=reply["seconds"])
            elif status == "cancelled":
                self.life.cancelled(job, reply.get("step", 0))
            else:
                self.life._fail(job, Reason(reply["reason"]), reply["problem"], reply["fix"])
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError,
                ray.exceptions.LocalRayletDiedError) as exc:
            self._lost(flight, exc)
        except Exception as exc:  # a task error in the actor, a full disk here: retried, bounded
            self.life.conclude(job, exc)
        finally:
            self._closed()
            self.marker += 1
            self.finished.set()
            structlog.contextvars.clear_contextvars()
        self._update_progress()

    def finish_remote(self, job: Job, config: Config, plan: Plan, reply: dict) -> None:
        """JobLife.finish with the actor's encoded bytes: the daemon alone picks the name and writes."""
        result = RemoteResult(reply)
        record = self.life.record(job, plan, result)
        record["executor"] = "ray"
        record["worker"] = reply["worker"]
        record["lost_attempts"] = self.history.pop(job.id, [])
        self.life.publish(job, config, plan, result, reply["data"], record, worker=reply["worker"]["actor"],
                     node=reply["worker"]["host"])

    def _lost(self, flight: Flight, exc: Exception) -> None:
        job, slot = flight.job, flight.slot
        entry = {"attempt": job.attempts, "actor": slot.label, "node": slot.node, "error": exc.__class__.__name__,
                 "at": now_iso()}
        self.history.setdefault(job.id, []).append(entry)
        log.warning("worker lost mid-job; the job goes to another worker", worker=slot.label, node=slot.node,
                    error=exc.__class__.__name__, attempt=job.attempts, lost_attempts=self.history[job.id])
        if slot.generation == flight.generation:
            self._replace(slot, exc)
        self.life._transient(job, WorkerLost(f"worker {entry['actor']} on {entry['node']} died mid-job "
                                        f"({exc.__class__.__name__})"))

    def _closed(self) -> None:
        with self._lock:
            self.open_count = max(0, self.open_count - 1)
            if self.open_count == 0:
                self.busy.clear()

    # --- actors ---------------------------------------------------------------------------------------
    def _spawn(self, slot: Slot) -> None:
        weights, device, cache = self.engine_args
        threads = max(1, int(self.cpus_per_worker)) if not self.gpus_per_worker else 0
        slot.label = f"worker-{slot.index}" + (f".{slot.generation}" if slot.generation else "")
        slot.handle = self._actor_class.options(num_gpus=self.gpus_per_worker, num_cpus=self.cpus_per_worker,
                                                ).remote(slot.label, weights, device, cache, threads)
        slot.hello = slot.handle.hello.options(concurrency_group=CONTROL).remote()
        slot.info, slot.progress_ref, slot.last_progress = None, None, None

    def _replace(self, slot: Slot, exc: Exception | None = None) -> None:
        ever_ready = slot.info is not None
        try:
            self.ray.kill(slot.handle, no_restart=True)
        except Exception:
            pass
        slot.generation += 1
        slot.jobs.clear()
        if ever_ready:
            self._spawn(slot)
            log.info("worker replaced", worker=slot.label)
        else:  # died while starting (no weights, no torch on that node?): wait before trying again
            slot.handle, slot.hello, slot.info = None, None, None
            slot.not_before = time.monotonic() + 30
            log.error("a worker died while starting; retrying in 30 s", slot=slot.index,
                      error=str(exc).splitlines()[0] if exc else None,
                      fix=f"Every node needs `{INSTALL}` (and the VGG weights); see the Ray worker logs")

    def _watch(self) -> None:
        """Actors that became ready or died while starting, progress, a closing run window."""
        ray, now = self.ray, time.monotonic()
        for slot in self.slots:
            if slot.handle is None:
                if now >= slot.not_before:
                    self._spawn(slot)
                continue
            if slot.hello is not None:
                done, _ = ray.wait([slot.hello], timeout=0)
                if done:
                    try:
                        slot.info = ray.get(slot.hello)
                        slot.hello = None
                        self.marker += 1
                        log.info("worker ready", worker=slot.label, node=slot.node, device=slot.info["device"],
                                 load_seconds=slot.info["load_seconds"])
                        if slot.info["versions"] != versions():
                            log.warning("a worker runs other versions than the daemon", worker=slot.label,
                                        worker_versions=slot.info["versions"], daemon_versions=versions())
                    except ray.exceptions.RayError as exc:
                        self._replace(slot, exc)
                        continue
            if slot.progress_ref is not None:
                done, _ = ray.wait([slot.progress_ref], timeout=0)
                if done:
                    try:
                        answer = ray.get(slot.progress_ref)
                    except ray.exceptions.RayError:
                        answer = None
                    slot.progress_ref = None
                    if answer and answer != slot.last_progress:
                        if not slot.last_progress or answer["step"] != slot.last_progress.get("step"):
                            self.marker += 1  # the watchdog's sign of life: a step moved somewhere
                        slot.last_progress = answer
            if slot.jobs and slot.info and slot.progress_ref is None and now - slot.progress_at >= PROGRESS_EVERY:
                slot.progress_ref = slot.handle.progress.options(concurrency_group=CONTROL).remote()
                slot.progress_at = now
        if self.pause.is_set():
            for flight in self.flights.values():
                if not flight.cancel_sent:
                    flight.slot.handle.cancel.options(concurrency_group=CONTROL).remote(flight.job.id)
                    flight.cancel_sent = True
        self._update_progress()

    def _update_progress(self) -> None:
        """status.json's "current": the oldest job in flight, and every job in flight under "running"."""
        running = []
        now = time.monotonic()
        for flight in sorted(self.flights.values(), key=lambda f: f.started):
            step = flight.slot.last_progress
            mine = step if step and step.get("job_id") == flight.job.id else {}
            running.append({"job_id": flight.job.id, "file": flight.job.source, "recipe": flight.plan.recipe.name,
                            "worker": flight.slot.label, "node": flight.slot.node,
                            "step": mine.get("step", 0), "total_steps": mine.get("total_steps", flight.plan.settings.steps),
                            "scale": mine.get("scale", 1), "loss": mine.get("loss", 0.0),
                            "eta_seconds": round(mine.get("eta", 0.0), 1),
                            "elapsed": round(now - flight.started, 1)})
        self.progress = {**running[0], "running": running} if running else None

    # --- stopping ---------------------------------------------------------------------------------------
    def _leave_in_flight(self) -> None:
        """A stop: every job in flight stays in work/ for the next start (not counted against the input)."""
        for ref, flight in list(self.flights.items()):
            job = flight.job
            try:
                flight.slot.handle.cancel.options(concurrency_group=CONTROL).remote(job.id)
            except Exception:
                pass
            job.attempts = max(0, job.attempts - 1)
            self.spool.save(job)
            self.spool.release(job)
            self._closed()
            log.info("job left in work/ for the next start", job_id=job.id, file=job.source, worker=flight.slot.label)
        self.flights.clear()
        self.progress = None

    def _shutdown_ray(self) -> None:
        if self.owns_ray and self.ray.is_initialized():
            self.owns_ray = False
            self.ray.shutdown()
