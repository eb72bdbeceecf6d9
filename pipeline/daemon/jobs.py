"""A job's life, written once: begin, the pre-checks (named steps), the plan, the record, publishing, and the
outcomes (done; failed with a reason; transient with a retry time; cancelled at a step), which the executor's
poll() hands to the daemon.

Every executor (the local Worker, the Pool of a slot per device, Ray actors) runs the optimisation its own way and hands the
rest to a :class:`JobLife`: so a job is claimed, checked, named, written and failed the same way wherever it ran.
Pre-checks are named steps (as paperless-ngx's consumer does), each with its own reason and fix. Permanent
failures go to failed/ at once; transient ones are retried with backoff, then given up.
"""
from __future__ import annotations

import contextlib
import dataclasses
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog

from ..engine import Settings, images, transparency
from ..errors import Cancelled, JobFailure, PipelineError, Reason, WorkerLost, clipped
from ..fsio import FileBusy
from . import joblog, outputs
from .config import Config, Recipe
from .failures import FailurePaths
from .folder_faults import FolderFault
from .handover import Lander, Prefetcher
from .prechecks import (pre_check_image, pre_check_painting, pre_check_painting_decodes, pre_check_readable,
                        pre_check_recipe, pre_check_record, pre_check_regular_file, pre_check_settings,
                        pre_check_sidecar)
from .sheets import SheetWriter
from .spool import RECORD, Job, Spool, job_id_in, now_iso

log = structlog.get_logger("style-pipeline.worker")
BUSY_RETRY = 5.0  # seconds a job whose photo or sidecar is still leased waits (the kernel ends a lease within 45 s)
STUCK_STOPS = 3  # stops in a row finding one photo's step running, no step completed between: a hung step, a crash
HUNG_FIX = ("If {name} is what hangs it, do not drop it again (a smaller size in a sidecar may pass); else check the "
            "machine (the GPU driver: dmesg) and drop it again")


@dataclass
class Plan:
    """What a job will run: its recipe, resolved settings and decoded pictures (made by the pre-checks)."""

    recipe: Recipe
    settings: Settings
    content: images.Image.Image
    styles: list[images.Image.Image]
    working: object = None  # engine.prepared.Prepared: the photo's first working copy, made by whoever prepared it


@dataclass(frozen=True)
class Outcome:
    """How one try of a job ended, as the executor's poll() hands it to the daemon, which acts on it.

    kind: done, failed, transient, cancelled, crashed, waiting (no room to run it yet), disk_full, held (not
    even failed/ could take it: it stays in work/). ``retry_at``: the daemon queues the job again from then
    (time.time()); ``disk_full``: a folder found full, where claiming pauses; ``fault``: why, when it is not a
    full disk (folder_faults.FolderFault); ``event``: what metrics and notices hear (done and failed jobs).
    """

    job: Job
    kind: str
    retry_at: float | None = None
    disk_full: str | None = None
    event: dict | None = None
    fault: FolderFault | None = None


def crashed(job: Job) -> Outcome:
    """The executor running it died: a crash, not an attempt charged to the photo; it runs again at once."""
    job.charge_crash()
    return Outcome(job, "crashed", retry_at=job.not_before)


def too_many_crashes(job: Job) -> JobFailure:
    """max_crashes reached: the daemon died (or a step hung, JobLife.stopped_mid_step) in each of the last tries."""
    if job.stops >= STUCK_STOPS:
        return JobFailure(Reason.CRASHED, f"a step of this file was still running at each of the daemon's last "
                          f"{job.stops} stops, with no step completed between: a step that hangs, charged as "
                          f"{job.crashes} crashes in a row", HUNG_FIX.format(name=job.name))
    return JobFailure(Reason.CRASHED, f"the daemon stopped {job.crashes} times in a row while styling this file",
                      f"If {job.name} is what crashes it, do not drop it again; else check the machine (journalctl "
                      "for OOM kills, power) and drop it again")


@contextlib.contextmanager
def logging_for(job: Job):
    """Every log line inside names the job (its id and file), whichever thread writes it."""
    structlog.contextvars.bind_contextvars(job_id=job.id, file=job.source)
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()


def current(job: Job, plan: Plan, info, **more) -> dict:
    """status.json's "current" for one running job, from the engine's StepInfo (or a Ray actor's copy of it)."""
    get = info.get if isinstance(info, dict) else lambda key, default=None: getattr(info, key, default)
    return {"job_id": job.id, "file": job.source, "recipe": plan.recipe.name, "step": get("step", 0),
            "total_steps": get("total_steps", plan.settings.steps), "scale": get("scale", 1),
            "n_scales": get("n_scales", 1), "tiles": get("tiles", 1), "loss": get("loss", 0.0), "eta_seconds": round(get("eta") or 0.0, 1),
            "elapsed": round(get("elapsed", 0.0), 1), **more}


class JobLife(FailurePaths):
    """Each step of a job's life, for whichever executor runs it; how each try ended goes to ``outcomes``
    (drained by the executor's poll()), so the daemon alone keeps the retry queue and pauses on a full disk.

    ``stop`` says whether a cancel is a shutdown (the job is released) or a closing window (it waits).
    """

    def __init__(self, spool: Spool, get_config: Callable[[], Config], stop) -> None:
        self.spool, self.get_config, self.stop = spool, get_config, stop
        self.outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.lost_attempts: dict[str, list[dict]] = {}  # job id -> the tries lost with a remote worker
        self._styles: dict[Path, tuple[tuple, images.Image.Image]] = {}  # path -> (file's stamp, decode)
        self.sheets = SheetWriter()  # contact sheets off the worker's path; the daemon closes it at shutdown
        self.prefetch = Prefetcher(self.prepare)  # the next photos' pre-checks and decode, ahead (handover.py)
        self.landing = Lander()  # finished photos written behind the worker; executors flush it as they close

    def _out(self, job: Job, kind: str, retry: bool = False, **details) -> None:
        self.outcomes.put(Outcome(job, kind, job.not_before if retry else None, **details))

    def drain(self) -> list[Outcome]:
        """The outcomes since the last call, oldest first."""
        found = []
        while not self.outcomes.empty():
            found.append(self.outcomes.get_nowait())
        return found

    def open(self, job: Job, in_process: bool = True, batched: bool = False) -> tuple[Config, Plan] | None:
        """begin, then the pre-checks: what to run; None when the try already ended here (its output was
        written before a restart: now completed; a pre-check failed: concluded)."""
        try:
            job.batched = batched
            config = self.begin(job, in_process)
            if not self.already_written(job, config):
                return config, self.prefetch.take(job, config)
            self.complete(job, config)
            self._out(job, "done")
        except Exception as exc:
            self.conclude(job, exc)
        finally:  # a try that ended without take() frees its prepared-ahead place (handover.py)
            self.prefetch.discard(job.id)
        return None

    def started(self, job: Job, plan: Plan, **extra) -> None:
        """The "job started" line, one wording for every executor (bench/daemon_log.py and the tests read its keys):
        the recipe, size, steps and attempt, and what the executor adds (opened_ms, batch, Ray's worker and node)."""
        log.info("job started", recipe=plan.recipe.name, size=plan.settings.size, steps=plan.settings.steps,
                 attempt=job.attempts, **extra)

    def land(self, job: Job, config: Config, plan: Plan, result, record: dict | None = None, **log_fields) -> None:
        """The executor's result written and its input moved (see finish); any fault is concluded here."""
        try:
            self.finish(job, config, plan, result, record, **log_fields)
            kept = self.complete(job, config)
            log.info("job done", kept_input=str(kept) if kept else None, **log_fields)
        except Exception as exc:
            self.conclude(job, exc)

    def lost(self, job: Job, worker: str, node: str, exc: Exception) -> None:
        """The remote worker running it died mid-job: noted for its record, then retried (elsewhere), bounded."""
        entry = {"attempt": job.attempts, "actor": worker, "node": node, "error": exc.__class__.__name__,
                 "at": now_iso()}
        self.lost_attempts.setdefault(job.id, []).append(entry)
        log.warning("worker lost mid-job; the job goes to another worker", **entry)
        self.conclude(job, WorkerLost(f"worker {worker} on {node} died mid-job ({entry['error']})"))

    def defer(self, job: Job, seconds: float, why: str) -> None:
        """Nothing can run it yet (no executor slot ready): it waits, not charged as an attempt."""
        job.not_before = time.time() + seconds
        self._not_its_fault(job)
        self._out(job, "waiting", retry=True)
        log.warning(why, retry_in=seconds)

    def begin(self, job: Job, in_process: bool = True) -> Config:
        """Count the try and save it; ``in_process``: a daemon crash now would be this job's crash (one in its
        batch, where ``open`` set job.batched, sends it to run alone; spool.Job.charge_crash)."""
        config = self.get_config()
        pre_check_record(job, config)  # here only (every try begins): before the crash limit, told as its record (rev12d)
        if in_process and job.crashes >= config.max_crashes:
            raise too_many_crashes(job)
        job.attempts += 1
        job.started_at = now_iso()
        job.running, job.batched = in_process, in_process and job.batched
        self.spool.save(job)
        return config

    def conclude(self, job: Job, exc: Exception) -> None:
        """The one exit for a try that raised: a reason fails it for good, a cancel waits, the rest is classified."""
        if isinstance(exc, PipelineError) and exc.reason is not None:  # no retry makes a picture wider
            self._fail(job, exc.reason, exc.problem, exc.fix)
        elif isinstance(exc, Cancelled):
            self.cancelled(job, exc.step, saved=exc.checkpoint is not None)
        elif isinstance(exc, FileBusy):  # its writer (Samba, NFS) still holds it: never the photo's fault (rev6f A2)
            job.last_error = clipped(f"{exc.filename} {exc.strerror}")
            self.defer(job, BUSY_RETRY, "the photo or its sidecar is held by another program; the job waits")
        else:  # a filesystem class, else transient or unknown: retried up to max_attempts
            self._os_error(job, exc)

    def cancelled(self, job: Job, step: int, saved: bool = True) -> None:
        """A shutdown or a closing window is not the input's fault: the job waits in work/ or for the window.
        ``saved``: a checkpoint was written; the log never claims one that was not (rev9e #1: Ray's said so)."""
        self._not_its_fault(job)
        what = "job checkpointed" if saved else "job stopped without writing a checkpoint"
        if self.stop.is_set():
            self.spool.release(job)
            log.info(f"{what} for the next start", step=step)
        else:
            log.info(f"{what}; it runs again when the run window opens", step=step)
        self._out(job, "cancelled", retry=not self.stop.is_set())

    def stopped_mid_step(self, jobs: list[Job]) -> None:
        """A stop whose deadline passed with these jobs still in their try (one step outlasting it): the process
        exits with them, but a stop is no crash, so each record says not running and not charged, as a cancel's
        does; found running at the next start, the photo was charged a crash, and three stops failed it. A copy is
        saved: the job's own thread may yet end its try before the exit (its cancel would discount it twice). Its
        lock stays with the process: that thread may still land it.

        The copy is made and saved under the spool's record lock, and only while the try still runs (its record
        there): taken before the landing named the output and saved after it, it sent the written photo to be
        styled again (rev11c). A step that hangs is told apart from a long one by its steps (Job.stepped, counted by
        the progress events): STUCK_STOPS stops in a row with no step completed between are charged as a crash, as
        the stall watchdog's kill would be; else such a photo headed the queue night after night, stopped by hand
        before the watchdog's 600 s, charged nothing. Not by its checkpoint (rev11e): one is due only after 25 steps
        and 30 s, ~54 min of steps that outlast the join, and a batch writes none, so good prints were charged."""
        for job in jobs:
            with self.spool.records:
                if not job.running or not (job.dir / RECORD).exists():
                    continue  # its own thread ended the try meanwhile (a cancel, a landing, a failure)
                stopped = dataclasses.replace(job)
                stuck = job.stepped == job.stop_stepped  # no step completed since the last such stop
                stopped.stops, stopped.stop_stepped = (job.stops + 1 if stuck else 1), job.stepped
                if stopped.stops < STUCK_STOPS:
                    self._not_its_fault(stopped)
                    log.info("stopped mid-step at the stop's deadline; resumes from its last checkpoint",
                             job_id=job.id, file=job.source)
                    continue
                stopped.charge_crash()
                self.save_or_warn(stopped)
            log.warning("stopped mid-step again with no step completed since: a step that hangs, charged as a "
                        "crash", job_id=job.id, file=job.source, stops=stopped.stops, crashes=stopped.crashes,
                        fix=HUNG_FIX.format(name=job.name))

    def step_completed(self, job: Job) -> None:
        """One more step of ``job`` completed (Job.stepped, told by the progress events). The first since a stop
        found it mid-step is saved at once: saved only at a try's begin and end, a kill -9 (an OOM, a power cut,
        systemd's SIGKILL) lost the try's steps, and a stop in the next try's first step counted one more "no step
        completed between": two kills so placed charged a print making progress as a hung step, and a third failed
        it (crashes). One save a stop, not a step: only "changed since" counts. Not once the daemon stops (under the
        record lock): the stop's own copy (stopped_mid_step) is not saved over with a running record."""
        job.stepped += 1
        if job.stop_stepped is None or job.stepped != job.stop_stepped + 1:
            return
        with self.spool.records:  # nor once its landing removed the folder (a pool's late progress event, rev12d)
            if not self.stop.is_set() and job.running and (job.dir / RECORD).exists():
                self.save_or_warn(job)

    def prepare(self, job: Job, config: Config) -> Plan:
        """The pre-checks, then the photo's first working copy. engine.prepared is imported here, not at the top:
        it needs torch, and the daemon's main loop imports this module without ever running a job (rev9d)."""
        from ..engine.prepared import prepare as prepare_working

        pre_check_regular_file(job)
        pre_check_readable(job)
        recipe_name, overrides = pre_check_sidecar(job, config)
        recipe = pre_check_recipe(job, config, recipe_name)
        settings = pre_check_settings(job, config, recipe, overrides)
        content = pre_check_image(job, settings)
        return Plan(recipe, settings, content, [self.style(ref.path, settings) for ref in recipe.styles],
                    prepare_working(content, settings))

    def style(self, path: Path, settings: Settings) -> images.Image.Image:
        """Decoded style pictures, one per path with its file's (mtime, size, inode): a night in one style decodes
        it once, and a painting replaced under its name is decoded anew and its old version let go. Keyed by
        (path, mtime) every version stayed for the process's life, ~30 MB a 2400 px replacement (rev8c finding 1);
        the size and inode also catch a replacement that kept the mtime (`cp -p`, `rsync -t`)."""
        info = pre_check_painting(path)  # renamed or removed since config.yaml was read: failed, naming it
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        held = self._styles.get(path)
        if held is None or held[0] != stamp:
            held = self._styles[path] = (stamp, pre_check_painting_decodes(path, settings.max_pixels))
        return held[1]

    def already_written(self, job: Job, config: Config) -> bool:
        """A restart after the output was written but before the input moved: finish, don't redo.

        Only an output whose log names this job is its own: with two daemons on one inbox, a neighbour may have
        written a.png (from a.png) at the stem a.jpg recorded before its daemon died (rev7c finding 1). Our log
        without its image is removed; else the recorded stem is let go and the job runs again under a free one.
        """
        if not job.output_stem:
            return False
        recipe, _, stem = job.output_stem.rpartition("/")
        folder = config.outbox / recipe
        if job_id_in(folder / f"{stem}.json") == job.id:
            if any((folder / outputs.image_name(stem, fmt)).exists() for fmt in outputs.EXTENSIONS):
                return True
            (folder / f"{stem}.json").unlink(missing_ok=True)
        job.output_stem = None
        return False

    def finish(self, job: Job, config: Config, plan: Plan, result, record: dict | None = None,
               **log_fields) -> None:
        """Encode and publish an engine Result (made here or on another machine); ``record``: keys the
        executor adds to the JSON log (Ray: which worker ran it)."""
        data = images.encode(result.image, plan.settings.format, plan.settings.quality, alpha=result.alpha,
                             dpi=plan.settings.print_dpi)
        self.publish(job, config, plan, result, data, {**self.record(job, plan, result, config), **(record or {})},
                     **log_fields)

    def publish(self, job: Job, config: Config, plan: Plan, result, data: bytes, record: dict, **log_extra) -> None:
        """Name and write the output: the daemon alone does this, whichever executor ran the job."""
        fmt = plan.settings.format
        folder = output_folder(job, config, plan.recipe.name)
        outputs.make_folder(folder)  # a file in its place pauses claiming (a folder fault), never fails the photo
        sheet = None
        while True:  # another daemon may take the same free name between choosing and writing
            stem = outputs.choose_stem(folder, Path(job.name).stem, fmt, sheet=config.contact_sheet)
            job.output_stem = f"{folder.relative_to(config.outbox).as_posix()}/{stem}"
            self.spool.save(job)
            if config.contact_sheet:
                sheet = folder / outputs.sheet_name(stem)
                record["contact_sheet"] = sheet.name
            try:
                image_path, _ = outputs.write(folder, stem, fmt, data, record)
                break
            except FileExistsError:
                continue
        if sheet is not None:  # a convenience, written off this thread (sheets.py): it never fails nor delays the job
            self.sheets.submit(plan.content, plan.styles[0], result.image, sheet)
        log.info("output written", output=str(image_path), loss=result.losses["total"], steps=result.steps,
                 seconds=result.timings["total"], stop_reason=result.stop_reason, **log_extra)
        if how := record.get("input", {}).get("transparency"):  # styled laid on white (engine/transparency.py)
            log.info("transparency laid on white", file=job.source, output=how,
                     **({"fix": transparency.KEEP_FIX} if how == "flattened" else {}))
        self._out(job, "done", event={"file": job.source, "output": str(image_path),
                                      "seconds": result.timings["total"], "steps": result.steps,
                                      "batch": log_extra.get("batch", 1)})

    def record(self, job: Job, plan: Plan, result, config: Config) -> dict:
        """The JSON log (pipeline/daemon/joblog.py); plans the input's name in done/ so the log can say it.
        ``config``: the one the try opened with, which complete() keeps or deletes the input by; a reload that
        landed meanwhile made the log say kept_as for an input deleted (rev9d item 2)."""
        keep = config.after_success == "move"
        return joblog.build(result, job.input, plan.content.size, [(r.path, r.weight) for r in plan.recipe.styles],
                            job=job, recipe=plan.recipe.name, kept=self.spool.plan_done(job) if keep else None,
                            frames=images.frames(plan.content))

    def complete(self, job: Job, config: Config) -> Path | None:
        """The input to done/ under the name the log recorded (fixed in the log if another daemon took it)."""
        planned = job.kept_as
        kept = self.spool.complete(job, keep_input=config.after_success == "move")
        if kept and planned and kept.name != planned and job.output_stem:
            joblog.amend_kept(config.outbox / f"{job.output_stem}.json", kept)
        return kept


def output_folder(job: Job, config: Config, recipe: str) -> Path:
    """outbox/<recipe>/ plus the folders the photo lay in below its recipe folder (inbox/starry/vacation/x.jpg
    and inbox/vacation/x.jpg both give outbox/starry/vacation/)."""
    parts = Path(job.source).parts[:-1]
    if parts and config.recipe_named(parts[0]) is not None:
        parts = parts[1:]
    return config.outbox.joinpath(recipe, *parts)
