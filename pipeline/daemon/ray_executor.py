"""``executor: ray`` (issue 6): jobs run on Ray actors; the daemon still owns the folders.

The daemon watches, claims, runs the pre-checks, writes outputs and failures exactly as with the local
:class:`~.worker.Worker`. Only the optimisation moves: the input file's bytes, the style files' bytes (put
in the object store once per style file) and the Settings go to an actor; the encoded image, ``result.log()``
and the losses come back as bytes and plain data. Workers never see the shared folder.

One actor per GPU (``num_gpus_per_worker``), or per ``num_cpus_per_worker`` CPUs where there is none. Each
loads VGG once (:class:`pipeline.engine.StyleTransfer`) and keeps its own style-target cache.

- Back-pressure: at most ``max_inflight`` jobs are claimed and sent; the rest stay unclaimed in the inbox,
  so a restart loses nothing.
- An actor that dies mid-job (``RayActorError``, a lost node): the actor is replaced and the job retried on
  another one through the usual retry path (``max_attempts``, then failed/ with ``too_many_attempts``).
- The daemon killed with jobs in flight: its actors die with it; the jobs stay in work/ and ``recover()``
  re-queues them at the next start. Only the daemon names outputs, so none is written twice.

Ray is an optional extra: this module is imported only when ``executor: ray``, and imports ray itself lazily.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import queue
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import structlog

from ..errors import Cancelled, EngineError, ImageError, PipelineError
from ..progress import versions
from .config import Config, RayOptions
from .spool import Job, Reason, Spool, now_iso
from .worker import JobFailure, Plan, Worker

log = structlog.get_logger("style-pipeline.ray")

INSTALL = "pip install 'style-pipeline[ray]'"
CONTROL = "control"  # the actors' second concurrency group: progress/cancel/stats answer while a job runs
PROGRESS_EVERY = 1.0
STYLE_REFS_KEPT = 64


class RayUnavailable(PipelineError):
    """The cluster cannot be reached or cannot host one worker: the daemon cannot start."""

    code = "ray_unavailable"


class WorkerLost(Exception):
    """An actor (or its node) died while it held a job: the job is retried elsewhere."""


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("executor: ray needs the ray package, which is not installed",
                             fix=f"Install it with `{INSTALL}`, or set `executor: local`") from exc
    return ray


# --- the actor (runs on a worker node; never touches the shared folder) ------------------------

class StyleActor:
    """One engine per actor: VGG loaded once, its own style-target cache. Turned into an actor by ray.remote."""

    def __init__(self, label: str, weights: str | None, device: str, cache_size: int, threads: int) -> None:
        import torch

        from ..engine import StyleTransfer

        if threads:
            torch.set_num_threads(threads)
        self.label = label
        self.engine = StyleTransfer(weights, device, cache_size=cache_size)
        self._lock = threading.Lock()  # one job at a time, even if a caller queues two
        self._progress: dict | None = None
        self._cancel: set[str] = set()
        self._styles: dict[str, Any] = {}
        self.jobs = 0
        self.styles_seen: set[str] = set()
        import ray
        context = ray.get_runtime_context()
        self.identity = {"actor": label, "node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                         "host": socket.gethostname(), "pid": os.getpid()}

    def hello(self) -> dict:
        return {**self.identity, "device": str(self.engine.device), "load_seconds": round(self.engine.load_seconds, 2),
                "versions": versions()}

    def run(self, job_id: str, name: str, settings, content: bytes, *styles: bytes) -> dict:
        """Decode, stylize, encode. Permanent problems come back as data; anything else raises (transient)."""
        import hashlib

        from ..engine import images

        with self._lock:
            started = time.monotonic()
            self._progress = {"job_id": job_id, "step": 0, "total_steps": settings.steps, "scale": 1, "loss": 0.0,
                              "eta": 0.0, "elapsed": 0.0}
            try:
                with tempfile.TemporaryDirectory(prefix="style-actor-") as tmp:
                    path = Path(tmp) / ("input" + Path(name).suffix.lower())
                    path.write_bytes(content)
                    picture = images.load(path, settings.max_pixels)
                    pictures = []
                    for data in styles:
                        key = hashlib.sha256(data).hexdigest()
                        self.styles_seen.add(key)
                        if key not in self._styles:
                            style_path = Path(tmp) / f"style-{key[:12]}"
                            style_path.write_bytes(data)
                            self._styles[key] = images.load(style_path)
                        pictures.append(self._styles[key])
                result = self.engine.stylize(picture, pictures, settings, on_step=self._on_step(job_id),
                                             should_stop=lambda: job_id in self._cancel)
                data = images.encode(result.image, settings.format, settings.quality, alpha=result.alpha)
            except Cancelled as exc:
                return {"status": "cancelled", "step": exc.step, "worker": self.identity}
            except (EngineError, ImageError) as exc:  # the reason travels as its code (a str)
                return {"status": "failed", "reason": str(exc.reason), "problem": exc.problem, "fix": exc.fix,
                        "worker": self.identity}
            finally:
                self._progress = None
                self._cancel.discard(job_id)
            self.jobs += 1
            return {"status": "ok", "data": data, "log": result.log(), "losses": result.losses, "steps": result.steps,
                    "stop_reason": result.stop_reason, "timings": result.timings, "worker": self.identity,
                    "seconds": round(time.monotonic() - started, 3)}

    def _on_step(self, job_id: str):
        def on_step(info) -> None:
            self._progress = {"job_id": job_id, "step": info.step, "total_steps": info.total_steps,
                              "scale": info.scale, "loss": info.loss, "eta": info.eta or 0.0, "elapsed": info.elapsed}
        return on_step

    # the CONTROL group: answered from a second thread while run() holds the first
    def progress(self) -> dict | None:
        return self._progress

    def cancel(self, job_id: str) -> None:
        self._cancel.add(job_id)

    def stats(self) -> dict:
        return {"actor": self.label, "jobs": self.jobs, "cache_misses": self.engine.cache_misses,
                "cache_hits": self.engine.cache_hits, "styles_seen": len(self.styles_seen), **self.identity}


# --- sizing and reaching the cluster ------------------------------------------------------------

def plan_workers(options: RayOptions, resources: dict) -> tuple[int, float, float]:
    """(num_workers, gpus each, cpus each) for this cluster; ValueError says what to change."""
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    per_gpu = options.num_gpus_per_worker if options.num_gpus_per_worker is not None else (1.0 if gpus else 0.0)
    per_cpu = options.num_cpus_per_worker
    if per_gpu and per_gpu > gpus:
        raise ValueError(f"each worker wants {per_gpu:g} GPU(s) but the cluster has {gpus:g}; "
                         "set ray.num_gpus_per_worker: 0 to run on CPUs, or add GPU nodes")
    if per_cpu > cpus:
        raise ValueError(f"each worker wants {per_cpu:g} CPU(s) but the cluster has {cpus:g}; "
                         "lower ray.num_cpus_per_worker")
    fits = int(gpus // per_gpu) if per_gpu else int(cpus // per_cpu)
    fits = min(fits, int(cpus // per_cpu)) if per_cpu else fits
    workers = options.num_workers or max(fits, 1)
    if workers > fits:
        log.warning("more workers asked for than the cluster holds now; the rest start when nodes join",
                    asked=workers, fit_now=fits)
    return workers, per_gpu, per_cpu


def _reachable(address: str, timeout: float = 3.0) -> str | None:
    """A plain TCP connect to HOST:PORT (cheap; ray.init to a dead address can wait for a minute)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return None  # let ray.init judge the form
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
        return None
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or exc})"


def connect(ray, options: RayOptions) -> bool:
    """ray.init for this config; True when this process started a local instance (and so shuts it down)."""
    if ray.is_initialized():
        return False
    with _keep_signal_handlers():  # ray.init installs its own SIGTERM handler (exit 15): the daemon's must stay
        return _init(ray, options)


@contextlib.contextmanager
def _keep_signal_handlers():
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _init(ray, options: RayOptions) -> bool:
    quiet = {"log_to_driver": False, "include_dashboard": False, "namespace": "style-pipeline"}
    if options.address is None:
        cpus = (options.num_workers * options.num_cpus_per_worker) if options.num_workers else os.cpu_count() or 1
        ray.init(num_cpus=max(1, math.ceil(cpus)), **quiet)
        return True
    address = options.address
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401  (Ray Client needs it)
        except ImportError as exc:
            raise RayUnavailable(f"ray.address {address} uses Ray Client, which needs grpcio",
                                 fix="Install it with `pip install 'ray[client]'`, or use address: auto on "
                                     "a machine that joined the cluster with `ray start`") from exc
    if address != "auto":
        problem = _reachable(address)
        if problem:
            raise RayUnavailable(f"ray.address {address}: {problem}", fix=_fix(address))
    quiet.pop("include_dashboard")
    try:
        ray.init(address=address, **quiet)
    except Exception as exc:  # ConnectionError, RuntimeError, ...: all mean "no cluster there"
        raise RayUnavailable(f"cannot reach the Ray cluster at {address} ({exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})", fix=_fix(address)) from exc
    return False


def _fix(address: str) -> str:
    if address == "auto":
        return ("Start or join a cluster on this machine with `ray start --head` (or `ray start --address HEAD:6379`), "
                "or set ray.address: null to start a local instance")
    port = "10001 (Ray Client)" if address.startswith("ray://") else "6379 (GCS)"
    return (f"Check the head node runs `ray start --head`, that port {port} is open from here, "
            "or set ray.address: null to start a local instance")


def check_cluster(config: Config) -> list[str]:
    """For `validate` (only when executor: ray): can the cluster be reached and hold a worker? Lines to print;
    a line starting with "problem:" means it cannot."""
    options = config.ray
    try:
        ray = import_ray()
    except RayUnavailable as exc:
        return [f"problem: {exc}"]
    if options.address is None:
        workers = options.num_workers or "one per GPU (else per num_cpus_per_worker CPUs)"
        return [f"ray: a local Ray instance is started with the daemon; workers: {workers}"]
    started = time.monotonic()
    try:
        connect(ray, options)
        resources = ray.cluster_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        workers, gpus, cpus = plan_workers(options, resources)
    except RayUnavailable as exc:
        return [f"problem: {exc}"]
    except ValueError as exc:
        return [f"problem: ray: {exc}"]
    finally:
        if ray.is_initialized():
            ray.shutdown()
    return [f"ray: reached {options.address} in {time.monotonic() - started:.1f} s: {len(nodes)} node(s), "
            f"{resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s); {workers} worker(s) of "
            f"{gpus:g} GPU / {cpus:g} CPU, max_inflight {options.max_inflight or workers}. Every node needs "
            f"`{INSTALL}` at the daemon's version"]


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


class RemoteResult:
    """What Worker.record() reads from an engine Result, rebuilt from an actor's reply."""

    def __init__(self, reply: dict) -> None:
        self.reply = reply
        self.losses, self.steps, self.timings = reply["losses"], reply["steps"], reply["timings"]
        self.stop_reason = reply["stop_reason"]

    def log(self) -> dict:
        return self.reply["log"]

    @property
    def image(self):
        from PIL import Image
        return Image.open(io.BytesIO(self.reply["data"]))


_NOTHING = object()


class RayWorker(Worker):
    """The Worker's interface for the main loop, with jobs running on Ray actors.

    ``idle()`` means "fewer than max_inflight jobs open", so the main loop keeps claiming until the
    actors are full; ``open_jobs`` is what ``once`` waits for.
    """

    open_jobs: int = 0  # a plain counter here, shadowing the local Worker's property

    def __init__(self, spool: Spool, get_config: Callable[[], Config], stop: threading.Event) -> None:
        super().__init__(None, spool, get_config, stop)  # no engine here: the actors hold them
        self.name = "ray-worker"
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
        self.open_jobs = 0
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
            self.open_jobs += 1
            self.busy.set()
        self.jobs.put(job)
        if self.idle():
            self.finished.set()  # room for more: the main loop claims the next at once, not after a tick

    def idle(self) -> bool:
        return self.open_jobs < self.max_inflight

    def has_room(self) -> bool:
        return self.idle()

    def unstarted(self) -> list[Job]:
        return []  # jobs in flight are left in work/ by _leave_in_flight

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
            config = self.get_config()
            job.attempts += 1
            job.started_at = now_iso()
            self.spool.save(job)
            if self._already_written(job, config):
                kept = self.complete_job(job, config)
                log.info("job done", kept_input=str(kept) if kept else None)
                return
            plan = self.prepare(job, config)  # the same pre-checks, here, before anything is sent
            slot = self._pick(job)
            if slot.handle is None:  # every actor is being re-created: wait, without counting an attempt
                job.attempts -= 1
                job.not_before = time.time() + 5
                self.spool.save(job)
                self.retry.append(job)
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
        except JobFailure as failure:
            self._fail(job, failure.reason, failure.problem, failure.fix)
        except Exception as exc:
            self._transient(job, exc)
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
                kept = self.complete_job(job, config)
                log.info("job done", kept_input=str(kept) if kept else None, worker=reply["worker"]["actor"],
                         node=slot.node, seconds=reply["seconds"])
            elif status == "cancelled":
                self._cancelled(job, reply.get("step", 0))
            else:
                self._fail(job, Reason(reply["reason"]), reply["problem"], reply["fix"])
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError,
                ray.exceptions.LocalRayletDiedError) as exc:
            self._lost(flight, exc)
        except Exception as exc:  # a task error in the actor, a full disk here: retried, bounded
            self._transient(job, exc)
        finally:
            self._closed()
            self.marker += 1
            self.finished.set()
            structlog.contextvars.clear_contextvars()
        self._update_progress()

    def finish_remote(self, job: Job, config: Config, plan: Plan, reply: dict) -> None:
        """Worker.finish with the actor's encoded bytes: the daemon alone picks the name and writes."""
        result = RemoteResult(reply)
        record = self.record(job, plan, result)
        record["executor"] = "ray"
        record["worker"] = reply["worker"]
        record["lost_attempts"] = self.history.pop(job.id, [])
        self.publish(job, config, plan, result, reply["data"], record, worker=reply["worker"]["actor"],
                     node=reply["worker"]["host"])

    def _cancelled(self, job: Job, step: int) -> None:
        """A closing run window (or a stop): not the input's fault; without a checkpoint it restarts later."""
        job.attempts -= 1
        self.spool.save(job)
        if self.stop.is_set():
            self.spool.release(job)
            log.info("job left in work/ for the next start", step=step)
        else:
            self.retry.append(job)
            log.info("run window closed: job cancelled on its worker, runs again when it opens", step=step)

    def _lost(self, flight: Flight, exc: Exception) -> None:
        job, slot = flight.job, flight.slot
        entry = {"attempt": job.attempts, "actor": slot.label, "node": slot.node, "error": exc.__class__.__name__,
                 "at": now_iso()}
        self.history.setdefault(job.id, []).append(entry)
        log.warning("worker lost mid-job; the job goes to another worker", worker=slot.label, node=slot.node,
                    error=exc.__class__.__name__, attempt=job.attempts, lost_attempts=self.history[job.id])
        if slot.generation == flight.generation:
            self._replace(slot, exc)
        self._transient(job, WorkerLost(f"worker {entry['actor']} on {entry['node']} died mid-job "
                                        f"({exc.__class__.__name__})"))

    def _closed(self) -> None:
        with self._lock:
            self.open_jobs = max(0, self.open_jobs - 1)
            if self.open_jobs == 0:
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
