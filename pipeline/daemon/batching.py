"""Filling a batch from the queue (issue 13): photos of one recipe and one working shape, taken from the jobs
already handed to the executor. Nothing here waits: a lone photo runs alone, and a job that does not fit the
batch stays where it was in the queue, for any slot.

A queued job is judged before it is opened, from what is cheap: no sidecar (overrides make its own settings), no
checkpoint (a resumed job runs alone, with its checkpoint), its recipe from its inbox folder, and the shape its
picture header gives at the recipe's size. The engine groups by shape again, so a wrong guess costs only speed.
"""
from __future__ import annotations

import queue
from typing import Callable

from PIL import Image

from ..engine.images import fit_size
from .config import Config
from .spool import Job

ORIENTATION = 0x0112  # EXIF: values 5-8 turn the picture a quarter, so width and height swap


class JobQueue(queue.Queue):
    """queue.Queue, plus taking the first few queued jobs that pass a test, in arrival order."""

    def take(self, wanted: Callable[[Job], bool], limit: int) -> list[Job]:
        taken: list[Job] = []
        with self.mutex:
            for job in list(self.queue):
                if len(taken) >= limit:
                    break
                if job is not None and wanted(job):
                    self.queue.remove(job)
                    taken.append(job)
            if taken:
                self.not_full.notify()
        return taken


def header_size(job: Job) -> tuple[int, int] | None:
    """The picture's upright size from its header alone (no decode); None when the header cannot be read."""
    try:
        with Image.open(job.input) as img:
            w, h = img.size
            turned = img.getexif().get(ORIENTATION) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - unreadable here is the pre-checks' business: it simply runs alone
        return None
    return (h, w) if turned else (w, h)


def runs_alone(job: Job) -> bool:
    """A sidecar makes the job's own settings; a checkpoint resumes it alone."""
    return bool(job.sidecar) or job.checkpoint.exists()


def batch_key(job: Job, config: Config) -> tuple | None:
    """(recipe, working shape) of a queued job, or None for one that must run alone."""
    if runs_alone(job):
        return None
    folder = job.recipe_folder
    recipe = config.recipes[folder if folder in config.recipes else config.default_recipe]
    size = header_size(job)
    return None if size is None else (recipe.name, fit_size(size, recipe.settings.size))


def plan_key(job: Job, plan) -> tuple | None:
    """The same key for an opened job, from its plan; None when it must run alone."""
    if runs_alone(job):
        return None
    return plan.recipe.name, fit_size(plan.content.size, plan.settings.size)
