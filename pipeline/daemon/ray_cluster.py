"""Reaching a Ray cluster for ``executor: ray``, and sizing the workers it can hold.

Apart from the executor so that `validate` can ask the cluster without starting one, and so that the executor
reads as what it does with jobs. Ray is imported lazily: it is an optional extra.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time

import structlog

from ..errors import RayUnavailable
from .config import Config, RayOptions

log = structlog.get_logger("style-pipeline.ray")

INSTALL = "pip install 'style-pipeline[ray]'"


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("executor: ray needs the ray package, which is not installed",
                             fix=f"Install it with `{INSTALL}`, or set `executor: local`") from exc
    return ray


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


def start(options: RayOptions):
    """Connect (or start a local instance) and size the workers: (ray, owns_it, workers, gpus, cpus each)."""
    ray = import_ray()
    owns = connect(ray, options)
    resources = ray.cluster_resources()
    try:
        workers, gpus, cpus = plan_workers(options, resources)
    except ValueError as exc:
        if owns:
            ray.shutdown()
        raise RayUnavailable(str(exc), fix="Change the ray: section of the config") from exc
    log.info("ray ready", address=options.address or "local instance", cpus=resources.get("CPU", 0),
             gpus=resources.get("GPU", 0), workers=workers, gpus_per_worker=gpus, cpus_per_worker=cpus)
    return ray, owns, workers, gpus, cpus


def stop(ray) -> bool:
    """Shut down the local instance this process started; False: nothing left to shut down."""
    if ray.is_initialized():
        ray.shutdown()
    return False


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
