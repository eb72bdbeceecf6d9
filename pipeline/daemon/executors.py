"""Which executor runs the jobs, chosen from the config: the one place that knows them all (executor.py's interface).

    executor: local   one Worker, or a Pool of a slot per device (pool.py), on engines loaded here
    executor: ray     Ray actors (ray_executor.py), each with its own engine on its own machine

Kept out of daemon.py, which chose with an if/else and a lazy import and then logged the engine's internals: the
main loop talks to an Executor and nothing else. The executors are imported inside ``build``: pool.py and
ray_executor.py load torch (and Ray), and the daemon layer above must import without it (rev9d, test_layers).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

import structlog

from .config import Config
from .executor import Executor
from .spool import Spool

if TYPE_CHECKING:
    from ..engine import StyleTransfer

log = structlog.get_logger("style-pipeline")


def build(config: Config, engine: "StyleTransfer | None", spool: Spool, get_config: Callable[[], Config],
          stop: threading.Event) -> tuple[Executor, "StyleTransfer | None"]:
    """The executor ``config.executor`` names, and the local engine it runs on (None for Ray, whose engines live
    in its actors). ``engine``, when given (tests, the in-process daemon), is the local executor's first."""
    if config.executor == "ray":  # issue 6: imported only here; the rest of the daemon is unchanged
        from .ray_executor import RayExecutor

        return RayExecutor(spool, get_config, stop), engine
    from .pool import local_executor  # issue 13: one Worker, or a pool of a slot per device

    executor, engine = local_executor(config, engine, spool, get_config, stop)
    log.info("engine ready", device=str(engine.device), weights=engine.weights.path, kind=engine.weights.kind,
             seconds=round(engine.load_seconds, 2),
             precision_auto=engine.precision("auto"))  # issue 13: as `precision --probe` recorded
    return executor, engine
