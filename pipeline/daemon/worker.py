"""The worker: one thread per device, fed in arrival order, running each job's steps top to bottom.

Pre-checks are named steps (as paperless-ngx's consumer does), each with its own reason and fix.
Permanent failures go to failed/ at once; transient ones are retried with backoff, then given up.
"""
from __future__ import annotations

import errno
import os
import queue
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog

from ..engine import Settings, StyleTransfer, images
from ..errors import Cancelled, EngineError, ImageError, TooThin
from ..progress import sha256_file, versions
from ..report import contact_sheet
from . import outputs
from .config import Config, ConfigError, Recipe
from .config_build import load_sidecar
from .spool import Job, Reason, Spool, now_iso

log = structlog.get_logger("style-pipeline.worker")


class JobFailure(Exception):
    """A permanent problem with one input: it goes to failed/ with this reason and fix."""

    def __init__(self, reason: Reason, message: str, fix: str) -> None:
        super().__init__(message)
        self.reason, self.message, self.fix = reason, message, fix


@dataclass
class Plan:
    recipe: Recipe
    settings: Settings
    content: images.Image.Image
    styles: list[images.Image.Image]


class Worker(threading.Thread):
    def __init__(self, engine: StyleTransfer, spool: Spool, get_config: Callable[[], Config],
                 stop: threading.Event) -> None:
        super().__init__(name="worker", daemon=True)
        self.engine, self.spool, self.get_config, self.stop = engine, spool, get_config, stop
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.retry: list[Job] = []
        self.busy = threading.Event()
        self.pause = threading.Event()  # set by the main loop when the run window closes
        self.finished = threading.Event()
        self.progress: dict | None = None
        self.marker = 0  # bumped on every step: the main loop's watchdog reads it
        self.busy_seconds = 0.0
        self.last_errors: list[dict] = []
        self._styles: dict[tuple, images.Image.Image] = {}

    def submit(self, job: Job) -> None:
        self.busy.set()
        self.jobs.put(job)

    def idle(self) -> bool:
        """Room for another job (the main loop dispatches only then)."""
        return not self.busy.is_set() and self.jobs.empty()

    def has_room(self) -> bool:
        """Nothing waiting: the main loop may claim the next file now, so that its decode and claim overlap
        the running job and the worker never waits for them."""
        return self.jobs.empty()

    def unstarted(self) -> list[Job]:
        """At shutdown: take back the jobs handed over but not yet begun."""
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
        """Jobs handed over and not yet ended: `once` waits for zero."""
        return 0 if self.idle() else 1

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            started = time.monotonic()
            try:
                self.process(job)
            finally:
                self.busy_seconds += time.monotonic() - started
                self.progress = None
                if self.jobs.empty():
                    self.busy.clear()
                self.finished.set()

    # --- one job ----------------------------------------------------------------------------
    def process(self, job: Job) -> None:
        structlog.contextvars.bind_contextvars(job_id=job.id, file=job.source)
        try:
            config = self.get_config()
            job.attempts += 1
            job.started_at = now_iso()
            self.spool.save(job)
            if not self._already_written(job, config):
                plan = self.prepare(job, config)
                log.info("job started", recipe=plan.recipe.name, size=plan.settings.size, steps=plan.settings.steps,
                         attempt=job.attempts)
                result = self.engine.stylize(plan.content, plan.styles, plan.settings, on_step=self._on_step(job, plan),
                                             should_stop=self._should_stop, checkpoint=job.checkpoint)
                self.finish(job, config, plan, result)
            kept = self.spool.complete(job, keep_input=config.after_success == "move")
            log.info("job done", kept_input=str(kept) if kept else None)
        except JobFailure as failure:
            self._fail(job, failure.reason, failure.message, failure.fix)
        except EngineError as exc:
            self._fail(job, Reason.ENGINE, exc.problem, exc.fix)
        except TooThin as exc:  # permanent: no retry makes a picture wider
            self._fail(job, Reason.TOO_THIN, exc.problem, exc.fix)
        except Cancelled as exc:
            job.attempts -= 1  # a shutdown or a closing window is not the input's fault
            self.spool.save(job)
            if self.stop.is_set():
                self.spool.release(job)
                log.info("job checkpointed for the next start", step=exc.step)
            else:
                self.retry.append(job)
                log.info("run window closed: job checkpointed, resumes when it opens", step=exc.step)
        except Exception as exc:  # transient or unknown: retried, bounded by max_attempts
            self._transient(job, exc)
        finally:
            structlog.contextvars.clear_contextvars()

    def prepare(self, job: Job, config: Config) -> Plan:
        pre_check_regular_file(job)
        recipe_name, overrides = pre_check_sidecar(job, config)
        recipe = pre_check_recipe(job, config, recipe_name)
        settings = pre_check_settings(job, config, recipe, overrides)
        content = pre_check_image(job, settings)
        return Plan(recipe, settings, content, [self._style(ref.path, settings) for ref in recipe.styles])

    def _should_stop(self) -> bool:
        return self.stop.is_set() or self.pause.is_set()

    def _style(self, path: Path, settings: Settings) -> images.Image.Image:
        """Decoded style pictures are kept by (path, mtime): a night in one style decodes it once."""
        key = (path, path.stat().st_mtime_ns)
        if key not in self._styles:
            self._styles[key] = images.load(path, settings.max_pixels)
        return self._styles[key]

    def _on_step(self, job: Job, plan: Plan):
        config = self.get_config()
        last_log = [0.0]

        def on_step(info) -> None:
            self.marker += 1
            self.progress = {"job_id": job.id, "file": job.source, "recipe": plan.recipe.name, "step": info.step,
                             "total_steps": info.total_steps, "scale": info.scale, "loss": info.loss,
                             "eta_seconds": round(info.eta or 0.0, 1), "elapsed": round(info.elapsed, 1)}
            if time.monotonic() - last_log[0] >= config.progress_seconds:
                last_log[0] = time.monotonic()
                log.info("progress", **{k: v for k, v in self.progress.items() if k not in ("job_id", "file")})
        return on_step

    def _already_written(self, job: Job, config: Config) -> bool:
        """A restart after the output was written but before the input moved: finish, don't redo.

        A log without its image is ours (the stem was recorded before writing): remove it and redo.
        """
        if not job.output_stem:
            return False
        recipe, _, stem = job.output_stem.rpartition("/")
        folder = config.outbox / recipe
        if any((folder / outputs.image_name(stem, fmt)).exists() for fmt in outputs.EXTENSIONS):
            return True
        (folder / f"{stem}.json").unlink(missing_ok=True)
        job.output_stem = None
        return False

    def finish(self, job: Job, config: Config, plan: Plan, result) -> None:
        data = images.encode(result.image, plan.settings.format, plan.settings.quality, alpha=result.alpha)
        self.publish(job, config, plan, result, data, self.record(job, plan, result))

    def publish(self, job: Job, config: Config, plan: Plan, result, data: bytes, record: dict, **log_extra) -> None:
        """Name and write the output: the daemon alone does this, whichever executor ran the job."""
        fmt = plan.settings.format
        folder = config.outbox / plan.recipe.name
        folder.mkdir(parents=True, exist_ok=True)
        sheet = None
        while True:  # another daemon may take the same free name between choosing and writing
            stem = outputs.choose_stem(folder, Path(job.name).stem, fmt)
            job.output_stem = f"{plan.recipe.name}/{stem}"
            self.spool.save(job)
            if config.contact_sheet:
                sheet = folder / f"{stem}.sheet.png"
                record["contact_sheet"] = sheet.name
            try:
                image_path, _ = outputs.write(folder, stem, fmt, data, record)
                break
            except FileExistsError:
                continue
        if sheet is not None:  # a convenience: a failure here must not fail the job
            try:
                contact_sheet(plan.content, plan.styles[0], result.image, sheet)
            except OSError as exc:
                log.warning("contact sheet not written", error=str(exc))
        log.info("output written", output=str(image_path), loss=result.losses["total"], steps=result.steps,
                 seconds=result.timings["total"], stop_reason=result.stop_reason, **log_extra)

    def record(self, job: Job, plan: Plan, result) -> dict:
        st = job.input.stat()
        return {
            "job_id": job.id, "recipe": plan.recipe.name, "source": job.source,
            "input": {"name": job.name, "bytes": st.st_size, "sha256": sha256_file(job.input),
                      "size": list(plan.content.size)},
            "styles": [{"name": r.path.name, "path": str(r.path), "weight": r.weight, "sha256": sha256_file(r.path)}
                       for r in plan.recipe.styles],
            "versions": versions(), "host": socket.gethostname(), "attempts": job.attempts,
            "queued_at": job.queued_at, "claimed_at": job.claimed_at, "started_at": job.started_at,
            "finished_at": now_iso(), "optimizing_seconds": result.timings["total"],
            **result.log(),
        }

    # --- failures ---------------------------------------------------------------------------
    def _fail(self, job: Job, reason: Reason, message: str, fix: str) -> None:
        kept = self.spool.fail(job, reason, message, fix)
        self._remember(job, reason, message)
        log.warning("job failed", reason=str(reason), message=message, fix=fix, kept_as=str(kept))

    def _transient(self, job: Job, exc: Exception) -> None:
        config = self.get_config()
        message = f"{exc.__class__.__name__}: {exc}"[:500]
        job.last_error = message
        if job.attempts >= config.max_attempts:
            self._fail(job, Reason.GAVE_UP, f"failed {job.attempts} times; last error: {message}",
                       "Check the log for this job_id; if the machine was at fault (disk, memory), drop the file again")
            return
        delay = config.retry_backoff_seconds * 2 ** (job.attempts - 1)
        job.not_before = time.time() + delay
        self.spool.save(job)
        self.retry.append(job)
        self._remember(job, "transient", message)
        log.warning("transient failure, will retry", error=message, retry_in=delay, attempt=job.attempts,
                    disk_full=isinstance(exc, OSError) and exc.errno == errno.ENOSPC)

    def _remember(self, job: Job, reason: str, message: str) -> None:
        self.last_errors = (self.last_errors + [{"file": job.source, "reason": str(reason), "message": message,
                                                 "at": now_iso()}])[-5:]


# --- the pre-checks, in order ------------------------------------------------------------------

def pre_check_regular_file(job: Job) -> None:
    """Symlinks, FIFOs and devices are never opened: a link out of the inbox must not be read."""
    st = os.lstat(job.input)
    if stat.S_ISLNK(st.st_mode):
        raise JobFailure(Reason.NOT_REGULAR, "is a symbolic link; links are never followed",
                         "Copy the picture itself into the inbox")
    if not stat.S_ISREG(st.st_mode):
        raise JobFailure(Reason.NOT_REGULAR, "is not a regular file", "Drop a picture file")
    if st.st_size == 0:
        raise JobFailure(Reason.EMPTY, "is empty (0 bytes)", "The copy did not finish; drop the file again")


def pre_check_sidecar(job: Job, config: Config) -> tuple[str | None, dict]:
    """A photo.yaml beside the photo may pick a recipe and override whitelisted settings."""
    if not job.sidecar:
        return None, {}
    try:
        return load_sidecar(job.dir / job.sidecar, config)
    except ConfigError as exc:
        raise JobFailure(Reason.BAD_SIDECAR, "; ".join(exc.problems),
                         f"Fix {job.sidecar} and drop the photo and its sidecar again") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise JobFailure(Reason.BAD_SIDECAR, f"cannot read the sidecar {job.sidecar} ({exc})",
                         "Save the sidecar as UTF-8 YAML") from exc


def pre_check_recipe(job: Job, config: Config, from_sidecar: str | None) -> Recipe:
    """Sidecar, then the inbox sub-folder, then the default recipe."""
    name = from_sidecar or job.recipe_folder or config.default_recipe
    if name not in config.recipes:
        import difflib
        guess = difflib.get_close_matches(name, list(config.recipes), n=1)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        raise JobFailure(Reason.UNKNOWN_RECIPE, f"no recipe named {name!r} (from the folder inbox/{name}/)",
                         f"{hint}Drop it into one of: {', '.join(config.recipes)}, or the inbox itself")
    return config.recipes[name]


def pre_check_settings(job: Job, config: Config, recipe: Recipe, overrides: dict) -> Settings:
    try:
        return config.recipe_settings(recipe, overrides)
    except ValueError as exc:
        raise JobFailure(Reason.BAD_SIDECAR, f"the settings are invalid: {exc}", "Fix the sidecar") from exc


def pre_check_image(job: Job, settings: Settings) -> images.Image.Image:
    try:
        return images.load(job.input, settings.max_pixels)
    except ImageError as exc:
        too_large = "pixels" in exc.problem or "bomb" in exc.problem
        raise JobFailure(Reason.TOO_LARGE if too_large else Reason.BAD_IMAGE, exc.problem, exc.fix) from exc

