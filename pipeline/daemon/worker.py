"""The worker: one thread per device, fed in arrival order, running each job's steps top to bottom.

Pre-checks are named steps (as paperless-ngx's consumer does), each with its own reason and fix.
Permanent failures go to failed/ at once; transient ones are retried with backoff, then given up.
"""
from __future__ import annotations

import difflib
import os
import queue
import sys
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog

from ..engine import Settings, StyleTransfer, images
from ..errors import Cancelled, ImageError, JobFailure, PipelineError, SettingsError
from ..fsio import service_user, write_atomic
from . import joblog, outputs
from .config import Config, ConfigError, Recipe
from .config_build import load_sidecar
from .failures import FailurePaths
from .spool import Job, Reason, Spool, now_iso

log = structlog.get_logger("style-pipeline.worker")


@dataclass
class Plan:
    recipe: Recipe
    settings: Settings
    content: images.Image.Image
    styles: list[images.Image.Image]


class Worker(FailurePaths, threading.Thread):
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
        self.current: Job | None = None  # the job in hand: the supervisor takes it back if this thread dies
        self.disk_full: str | None = None  # a folder that was full: set here, cleared by the main loop
        self.held: list[Job] = []  # jobs that could not even be moved to failed/: left in work/, not retried
        self.on_event: Callable[[str, dict], None] | None = None  # the daemon's metrics and notices
        self._styles: dict[tuple, images.Image.Image] = {}

    def respawn(self) -> "Worker | None":
        """A fresh thread with this one's queue, retries and errors: the supervisor's restart (local only)."""
        if type(self) is not Worker:
            return None
        new = Worker(self.engine, self.spool, self.get_config, self.stop)
        new.jobs, new.retry, new.last_errors, new.held = self.jobs, self.retry, self.last_errors, self.held
        new.on_event = self.on_event
        new.busy_seconds, new.marker = self.busy_seconds, self.marker + 1
        return new

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
    def process(self, job: Job) -> None:
        """One try of one job; every exception, the failure path's own included, ends in a recorded outcome."""
        structlog.contextvars.bind_contextvars(job_id=job.id, file=job.source)
        try:
            self._try(job)
        except Exception as exc:  # the failure path itself failed (ENAMETOOLONG, EACCES on failed/, a bug)
            log.exception("the failure path failed; keeping the file under its job id")
            self._last_resort(job, exc)
        finally:
            structlog.contextvars.clear_contextvars()

    def _try(self, job: Job) -> None:
        try:
            config = self.get_config()
            if job.crashes >= config.max_crashes:
                raise JobFailure(Reason.CRASHED, f"the daemon stopped {job.crashes} times in a row while styling "
                                 "this file", f"If {job.name} is what crashes it, do not drop it again; else check "
                                 "the machine (journalctl for OOM kills, power) and drop it again")
            job.attempts += 1
            job.started_at = now_iso()
            job.running = True
            self.spool.save(job)
            if not self._already_written(job, config):
                plan = self.prepare(job, config)
                log.info("job started", recipe=plan.recipe.name, size=plan.settings.size, steps=plan.settings.steps,
                         attempt=job.attempts)
                result = self.engine.stylize(plan.content, plan.styles, plan.settings, on_step=self._on_step(job, plan),
                                             should_stop=self._should_stop, checkpoint=job.checkpoint)
                self.finish(job, config, plan, result)
            kept = self.complete_job(job, config)
            log.info("job done", kept_input=str(kept) if kept else None)
        except PipelineError as exc:  # with a reason: permanent (no retry makes a picture wider); else retried
            if exc.reason is None:
                self._os_error(job, exc)
            else:
                self._fail(job, exc.reason, exc.problem, exc.fix)
        except Cancelled as exc:
            self._not_its_fault(job)  # a shutdown or a closing window is not the input's fault
            if self.stop.is_set():
                self.spool.release(job)
                log.info("job checkpointed for the next start", step=exc.step)
            else:
                self.retry.append(job)
                log.info("run window closed: job checkpointed, resumes when it opens", step=exc.step)
        except Exception as exc:  # a filesystem class, else transient or unknown: retried up to max_attempts
            self._os_error(job, exc)

    def prepare(self, job: Job, config: Config) -> Plan:
        pre_check_regular_file(job)
        pre_check_readable(job)
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
        saved: list = [0, None]  # the step and path of the last intermediate picture

        def on_step(info) -> None:
            self.marker += 1
            if config.save_every and info.picture and info.step - saved[0] >= config.save_every:
                saved[:] = [info.step, self._save_picture(job, plan, info) or saved[1]]
            self.progress = {"job_id": job.id, "file": job.source, "recipe": plan.recipe.name, "step": info.step,
                             "total_steps": info.total_steps, "scale": info.scale, "loss": info.loss,
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
        folder = output_folder(job, config, plan.recipe.name)
        folder.mkdir(parents=True, exist_ok=True)
        sheet = None
        while True:  # another daemon may take the same free name between choosing and writing
            stem = outputs.choose_stem(folder, Path(job.name).stem, fmt)
            job.output_stem = f"{folder.relative_to(config.outbox).as_posix()}/{stem}"
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
                outputs.contact_sheet(plan.content, plan.styles[0], result.image, sheet)
            except OSError as exc:
                log.warning("contact sheet not written", error=str(exc))
        log.info("output written", output=str(image_path), loss=result.losses["total"], steps=result.steps,
                 seconds=result.timings["total"], stop_reason=result.stop_reason, **log_extra)
        self._event("done", file=job.source, output=str(image_path), seconds=result.timings["total"],
                    steps=result.steps)

    def _event(self, kind: str, **data) -> None:
        """Tell the daemon (metrics, notices); a listener's fault must not fail the job."""
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception as exc:  # noqa: BLE001
                log.warning("event listener failed", error=f"{exc.__class__.__name__}: {exc}")

    def record(self, job: Job, plan: Plan, result) -> dict:
        """The JSON log (pipeline/daemon/joblog.py); plans the input's name in done/ so the log can say it."""
        keep = self.get_config().after_success == "move"
        return joblog.build(job, plan, result, self.spool.plan_done(job) if keep else None)

    def complete_job(self, job: Job, config: Config) -> Path | None:
        """The input to done/ under the name the log recorded (fixed in the log if another daemon took it)."""
        planned = job.kept_as
        kept = self.spool.complete(job, keep_input=config.after_success == "move")
        if kept and planned and kept.name != planned and job.output_stem:
            joblog.amend_kept(config.outbox / f"{job.output_stem}.json", kept)
        return kept


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


def pre_check_readable(job: Job) -> None:
    """An unreadable photo is a permissions problem, not a broken picture: the fix is chmod, not a new copy."""
    try:
        open(job.input, "rb").close()
    except PermissionError as exc:
        raise JobFailure(Reason.NO_PERMISSION, f"the service user {service_user()} cannot read it ({exc.strerror})",
                         f"Make {job.source} readable (chmod a+r, or chown to the service user) and drop it "
                         "again") from exc


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
    """Sidecar, then the first inbox folder when it names a recipe, then the default recipe.

    Any other folder (an album copied in) takes the default recipe, except one a typo away from a recipe
    name (``stary/``): styling a batch with the wrong recipe all night is worse than saying so at once.
    """
    folder = job.recipe_folder
    if from_sidecar is None and folder and folder not in config.recipes:
        guess = difflib.get_close_matches(folder, list(config.recipes), n=1, cutoff=0.85)
        if guess:
            raise JobFailure(Reason.UNKNOWN_RECIPE, f"no recipe named {folder!r} (from the folder inbox/{folder}/)",
                             f"did you mean {guess[0]!r}? Rename the folder; recipes: {', '.join(config.recipes)}")
    return config.recipes[from_sidecar or (folder if folder in config.recipes else config.default_recipe)]


def output_folder(job: Job, config: Config, recipe: str) -> Path:
    """outbox/<recipe>/ plus the folders the photo lay in below its recipe folder (inbox/starry/vacation/x.jpg
    and inbox/vacation/x.jpg both give outbox/starry/vacation/)."""
    parts = Path(job.source).parts[:-1]
    if parts and parts[0] in config.recipes:
        parts = parts[1:]
    return config.outbox.joinpath(recipe, *parts)


def pre_check_settings(job: Job, config: Config, recipe: Recipe, overrides: dict) -> Settings:
    try:
        return config.recipe_settings(recipe, overrides)
    except SettingsError as exc:
        raise JobFailure(Reason.BAD_SIDECAR, f"the settings are invalid: {exc.problem}",
                         f"Fix {exc.field} in the sidecar") from exc


def pre_check_image(job: Job, settings: Settings) -> images.Image.Image:
    try:
        return images.load(job.input, settings.max_pixels)
    except ImageError as exc:
        raise JobFailure(exc.reason, exc.problem, exc.fix) from exc

