"""Filling a batch from the queue (issue 13): photos of one recipe and one working shape, taken from the jobs
already handed to the executor. Nothing here waits: a lone photo runs alone, and a job that does not fit the
batch stays where it was in the queue, for any slot.

A queued job is judged before it is opened, from what is cheap: no sidecar (overrides make its own settings), no
checkpoint (a resumed job runs alone, with its checkpoint), no crash (runs_alone), its recipe from its inbox
folder, and the shape its picture header gives at the recipe's size; once, as it is queued. The engine groups by
shape again, so a wrong guess (a config reloaded since) costs only speed.
"""
from __future__ import annotations

import queue
from typing import Callable

from PIL import Image

from ..engine.batch import batchable
from ..engine.images import fit_size
from ..engine.levels import for_size
from ..fsio import NO_WAIT, open_regular
from .config import Config
from .spool import Job

ORIENTATION = 0x0112  # EXIF: values 5-8 turn the picture a quarter, so width and height swap


ANY = object()  # take(): every queued job, whatever its key


class JobQueue(queue.Queue):
    """queue.Queue whose jobs carry their batch key, worked out once as each is queued (``keyer``, outside the
    lock: it reads the picture's header), so that taking a batch compares stored keys under the lock instead of
    reopening every queued picture on every take."""

    def __init__(self, keyer: Callable[[Job], tuple | None] = lambda job: None) -> None:
        super().__init__()
        self.keyer, self.keys = keyer, {}

    def put(self, item: Job | None, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            try:
                self.keys[item.id] = self.keyer(item)
            except Exception:  # noqa: BLE001 - a key is only a speed-up: a job that has none runs alone
                self.keys[item.id] = None
        super().put(item, block, timeout)

    def _get(self) -> Job | None:
        job = super()._get()
        if job is not None:
            self.keys.pop(job.id, None)
        return job

    def take(self, key, limit: int) -> list[Job]:
        """The first ``limit`` queued jobs whose key is ``key`` (ANY: any job), in arrival order; a job keyed
        None (it runs alone) is never taken for a batch."""
        taken: list[Job] = []
        with self.mutex:
            for job in list(self.queue):
                if len(taken) >= limit:
                    break
                if job is not None and (key is ANY or (key is not None and self.keys.get(job.id) == key)):
                    self.queue.remove(job)
                    self.keys.pop(job.id, None)
                    taken.append(job)
            if taken:
                self.not_full.notify()
        return taken


def header_size(job: Job) -> tuple[int, int] | None:
    """The picture's upright size from its header alone (no decode); None when the header cannot be read, or
    the input is no regular file: this runs on the main loop's thread as the job is queued, and a plain open() of
    a FIFO waits for a writer forever (the daemon hung); fsio.open_regular never waits (such inputs fail in the
    worker). A leased picture is not waited for (it runs alone, as one whose header cannot be read)."""
    try:
        with open_regular(job.input, NO_WAIT) as file, Image.open(file) as img:
            w, h = img.size
            turned = img.getexif().get(ORIENTATION) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - unreadable here is the pre-checks' business: it simply runs alone
        return None
    return (h, w) if turned else (w, h)


def runs_alone(job: Job) -> bool:
    """A sidecar makes the job's own settings; a checkpoint resumes it alone; a job the daemon died in (crashes)
    runs alone, so that the next crash is charged to the photo that causes it alone: a kill during a batch is noted
    on every photo in it (batch_crashes), and batched again, a poison photo took its whole batch to failed/."""
    return bool(job.sidecar) or job.crashes > 0 or job.batch_crashes > 0 or job.checkpoint.exists()


def batch_key(job: Job, config: Config) -> tuple | None:
    """(recipe, working shape) of a queued job, or None for one that must run alone."""
    if runs_alone(job):
        return None
    recipe = config.recipes[config.recipe_named(job.recipe_folder) or config.default_recipe]
    size = header_size(job)
    return None if size is None else _key(recipe.name, size, recipe.settings)


def plan_key(job: Job, plan) -> tuple | None:
    """The same key for an opened job, from its plan; None when it must run alone."""
    if runs_alone(job):
        return None
    return _key(plan.recipe.name, plan.content.size, plan.settings)


def _key(recipe: str, size: tuple[int, int], settings) -> tuple | None:
    """(recipe, working shape), or None for a photo the engine would not batch (a multi-level auto print: it
    then runs the lone path, with its checkpoint, instead of waiting in a batch it cannot join)."""
    return (recipe, fit_size(size, settings.size)) if batchable(tuple(for_size(size, settings)[1]), settings) else None
