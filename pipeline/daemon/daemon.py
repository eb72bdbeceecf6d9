"""The main loop: the one place that owns the daemon's state.

Each pass reads top to bottom, as rq's and huey's loops do: stop flag, config reload, observer
health, rescan, hand the next file to the executor, status and heartbeat (reporting.py). Signal handlers only set
flags.
It talks to the executor only through its interface (executor.py): submit, has_room, poll for outcomes,
progress, pause/resume; the retry queue, the disk pause and the held jobs are the daemon's (state.py).
"""
from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import structlog

from ..alerts import FLUSH_WAIT
from ..errors import PipelineError, StartupError
from ..fsio import FileBusy, is_disk_full
from ..notify import Heartbeat, Notifier, watchdog_interval
from . import executors
from . import running
from . import status as status_module
from .diskguard import DiskGuard
from .folder_faults import claim_fault, fixes, spool_fault
from .executor import Executor, left
from .jobs import crashed
from .reload import AGAIN, ConfigEdits, Refused, apply_live, reload_config, remake_folders
from .reporting import Reporter
from .settle import DecodeCheck, Tracker
from .sidecars import UNPAIRED_TICK_S, read_by_another, unpaired_sidecars
from .skipped import skipped_folders, warn_new
from .spool import Spool, now_iso
from .startup import install_signals, load_checked, sweep_killed_writes
from .state import JobBook
from .unclaimable import Unclaimable
from .pairing import sidecar_for
from .watcher import Watcher, excluded, scan, wanted

if TYPE_CHECKING:  # an annotation only: the import would load torch into the daemon layer (rev9d)
    from ..engine import StyleTransfer

log = structlog.get_logger("style-pipeline")
TICK = 0.2
STOP_WAIT = 160  # seconds the whole stop may take, one deadline: under the unit's TimeoutStopSec (180), see there
REFUSED_RETRY_S = 2.0  # a refused config edit is read again this often while refused (a parse and stats: no decode)
SCREEN_TICK_S = 1.0  # the queue's files are screened for no-pictures this often (_screen): a lstat each, headers once


class Daemon:
    """The one owner of the daemon's state (config, retry queue, held jobs, disk pause): the other threads
    (executors, the watcher, the landing) hand it outcomes and events, and only the main loop acts on them, so
    every decision (claim, retry, pause, reload) is taken in one place, in order."""

    def __init__(self, config_path: str | Path, once: bool = False, engine: StyleTransfer | None = None,
                 clock: Callable[[], datetime] = status_module.local_now) -> None:
        self.config_path = Path(config_path)
        self.clock = clock  # local wall-clock time, for the run window: tests pass their own
        self.once = once
        self.stop = threading.Event()
        self.reload_requested = False  # SIGHUP (startup.install_signals), or an edit held by another program
        self.blocked: str | None = None  # `once` stopped on a folder fault: its fix (_blocked)
        # outbox, done/, failed/ unwritable: waits, a pause (rev9b finding 1); any other fault: a refused start
        self.config, self.waits = load_checked(self.config_path)
        self.engine = engine
        self.spool = Spool(self.config.inbox, self.config.work, self.config.done, self.config.failed,
                           lambda photo, sidecar: read_by_another(photo, sidecar, self.config.inbox, self.exclude))
        self.tracker = Tracker(self.config.settle_seconds)
        self.watcher: Watcher | None = None
        self.executor: Executor | None = None
        self.decode = DecodeCheck()
        self.started_at = now_iso()
        self.last_rescan = self.last_unpaired = self.last_screen = 0.0
        self.window: tuple = (None, None)  # (the config, its run window): _window_open parses it once a config
        self.edits = ConfigEdits(self.config_path)  # its (mtime, ctime, size, inode), then its text: an edit
        self.refused = Refused(REFUSED_RETRY_S, self.config_path)  # an edit refused for a painting not there yet
        self.exclude = excluded(self.config)  # never scanned nor claimed; set again at each reload (_exclude_now)
        self.notifier = Notifier()
        self.heartbeat = Heartbeat(self.notifier, self.config.stall_seconds, watchdog_interval())
        self.state = "starting"
        self.worker_restarts = 0
        self.disk = DiskGuard(lambda: (self.config.work, self.config.outbox, self.config.failed),
                              fault_of=lambda exc: spool_fault(exc, self.config))  # a fault is no full disk
        self.reporter = Reporter(self)  # status.json, the watchdog, metrics and notices (reporting.py)
        self.book = JobBook(self.disk, self.reporter.on_job_event)  # the retry queue and the held jobs
        self.skipped: dict[str, str] = {}  # inbox folders passed over, with why (shown by status)
        self.unpaired: dict[str, str] = {}  # sidecars no photo will read, with why (sidecars.py; shown by status)
        self.unclaimable = Unclaimable(lambda: self.config.inbox, self.reporter.on_job_event,  # listed by status
                                       status_module.last_unclaimable(self.config.spool))

    # --- start-up (the checks before it: startup.py) ------------------------------------------------
    def start(self) -> None:
        try:
            self._start()
        except (PipelineError, OSError) as exc:  # no weights, no inotify watches left: the daemon cannot work
            raise StartupError(str(exc)) from exc

    def _start(self) -> None:
        config = self.config
        sweep_killed_writes(config)  # before any write of ours
        running.record(config)  # where status and report find these folders after a folder edit (running.py)
        for folder, fault in self.waits.items():  # told and shown as a running daemon's pause is, and probed in the
            self.book.pause(folder, fault)  # folder itself: a done/ the spool refused to make, not the spool (rev10a)
        self.executor, self.engine = executors.build(config, self.engine, self.spool, lambda: self.config, self.stop)
        self.executor.start()
        if not self.once:
            self.watcher = Watcher(config.inbox, self.tracker, config.watch, config.poll_seconds, self.exclude)
            self.watcher.start()
            log.info("watching", inbox=str(config.inbox), observer=self.watcher.observer_class.__name__,
                     why=self.watcher.reason)
        self._rescan()
        self.state = "running"
        self.notifier.ready()

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        install_signals(self)
        self.start()
        try:
            while not self.stop.is_set():
                try:
                    if self._pass():
                        break
                    self.book.take(self.executor.poll(TICK))  # wakes at once when a job ends
                except Exception:  # nothing outside a job may stop the daemon: log it and go on
                    log.exception("error in the main loop; going on")
                    time.sleep(TICK)
        finally:
            self._shutdown()
        if self.blocked:  # `once` stopped on a folder fault (_blocked): the photos wait for the next run
            return 3
        return 1 if self.executor is not None and self.executor.broken else 0  # non-zero: Restart=on-failure

    def _pass(self, now: float | None = None) -> bool:
        """One pass of the loop; True when `once` has nothing left to do. ``now`` (time.monotonic) is read once a
        pass and handed down, as huey's loop(now=None) takes it: the rescan and sidecar ticks are decided by it, so a
        test drives them without sleeping (the run window has its own wall clock, ``clock``). A tick is due once
        ``now`` reaches last + every: taken as now - last, floating point's rounding put a clock handed in as
        last + 600 at 599.9999999999982 for about 1 reading in 100 (CI met it), a rescan missed when it was due."""
        now = time.monotonic() if now is None else now
        self.book.take(self.executor.poll())  # before dispatching: a full disk found by the last job pauses it
        self._maybe_reload()
        self._check_observer()
        self._check_worker()
        if now >= self.last_rescan + self.config.rescan_seconds:  # due at last + every; not now - last: see below
            self._rescan(now)
        elif now >= self.last_unpaired + UNPAIRED_TICK_S:
            self._check_unpaired(now)
        if self._window_open():
            self.executor.resume()
            if self.executor.has_room() and not self.disk.paused():
                self._dispatch(now)
        else:
            self.executor.pause()  # the running job checkpoints and waits for the next window
        if now >= self.last_screen + SCREEN_TICK_S and not self.disk.paused():
            self._screen(now)
        self.reporter.status_tick()
        return self.once and (self._blocked() or self.drained())

    def _dispatch(self, now: float) -> None:
        """Give the executor its next job: due retries and recovered jobs first, then the oldest ready file."""
        job = self.book.take_due(time.time(), now)
        if job is not None:
            self.executor.submit(job)
            return
        for path in self.tracker.ready():
            if self._try_claim(path):
                return

    def _screen(self, now: float) -> None:
        """Each quiet file in the queue that can never be a picture (settle.DecodeCheck.not_a_picture: its header,
        once) is claimed and failed now, window open or not, as paperless-ngx's consumer runs its pre-checks up
        front: behind a night's backlog, a text file named .jpg waited hours for the worker to fail it, and whoever
        dropped it heard nothing meanwhile (mend12a). One failure path: the executor's reject (JobLife.conclude).
        A file someone holds open (its writer, stalled) is not screened: it is not done, whatever it starts with."""
        self.last_screen = now
        for path in self.tracker.ready():
            if self.tracker.held_open(path):
                continue
            failure = self.decode.not_a_picture(path, self.config.settle_seconds)
            if failure is not None:
                self._try_claim(path, failure)

    def _try_claim(self, path: Path, failure: Exception | None = None) -> bool:
        try:
            return self._claim(path, failure)
        except Exception:  # one odd file must not block the ones behind it
            log.exception("cannot claim this file; it is looked at again at the next rescan", file=str(path))
            self.tracker.forget(path)
            return False

    def _claim(self, path: Path, failure: Exception | None = None) -> bool:
        """True when the file is claimed and handed to the executor (or, ``failure``: failed at the door,
        _screen), or claiming must wait (full disk)."""
        if not wanted(path, self.config.inbox, self.exclude):  # seen before a reload left its folder out (rev9f #1)
            self.tracker.forget(path)
            return False
        settle = self.config.settle_seconds
        closed = self.tracker.closed(path)
        verdict = failure is not None or self.decode.ready(path, self._decode_limit(), settle, closed)
        sidecar = sidecar_for(path) if verdict else None
        if not verdict or not self.decode.sidecar_settled(path, sidecar, settle):  # one being written waits (rev11a)
            if verdict is None:
                self.tracker.forget(path)
            return False
        try:
            job = self.spool.claim(path, self.tracker.queued_at(path), sidecar)
        except FileBusy as busy:  # its sidecar's writer holds it: the photo waits, drained() false (rev10e)
            self.decode.sidecar_held(path, busy.filename)
            return False
        except OSError as exc:
            self._claim_failed(path, exc)
            return True
        self.tracker.forget(path)
        self.decode.forget(path)
        if job is None:
            return False
        structlog.contextvars.bind_contextvars(job_id=job.id)
        log.info("claimed", file=job.source, sidecar=job.sidecar)
        structlog.contextvars.clear_contextvars()
        if failure is not None:
            self.executor.reject(job, failure)
        else:
            self.executor.submit(job)
        return True

    def _decode_limit(self) -> int:
        """The largest recipe's max_pixels: with the default recipe's, a photo for a recipe allowing more was held
        the broken file's longer wait before its claim (rev7a); the worker applies the photo's own recipe's."""
        return max(recipe.settings.max_pixels for recipe in self.config.recipes.values())

    def _claim_failed(self, path: Path, exc: OSError) -> None:
        """The file stays in the inbox: a full disk or a spool folder fault pauses claiming (one notice, not one a
        photo: claim_fault); anything else is told once (with its fix), listed by status and retried at the next
        rescan."""
        fault = claim_fault(exc, self.config)
        if is_disk_full(exc) or fault:
            self.book.pause(fault.folder if fault else self.config.work, fault)
        else:
            self.unclaimable.add(path, exc)
        self.tracker.forget(path)

    def drained(self) -> bool:
        """Nothing queued, open or due again. Open jobs are read before the outcomes, so a job ending between
        the two reads is still seen (its outcome is out before it stops counting as open)."""
        open_jobs = self.executor.progress().open_jobs
        self.book.take(self.executor.poll())
        return len(self.tracker) == 0 and open_jobs == 0 and not self.book.retry

    def _blocked(self) -> bool:
        """`once` paused on a folder fault with nothing running: only a person can fix it, so it stops (rev9b
        finding 5: it ran until killed, cron starting another beside it), and says so even with nothing waiting (a
        first try). _shutdown releases the waiting jobs to work/, taken up at the next run; a full disk may clear
        by itself, so it still waits for space."""
        faults = self.disk.paused() and self.disk.faults()
        if faults and self.executor.progress().open_jobs == 0:
            self.blocked = fixes(faults)
        return self.blocked is not None

    def _window_open(self) -> bool:
        """The run window parsed once a config (a reload brings a new one), not on every 0.2 s tick."""
        if self.window[0] is not self.config:
            self.window = (self.config, status_module.window(self.config))
        return self.window[1] is None or self.window[1].is_open(self.clock())

    # --- health, reload ---------------------------------------------------------------------------
    def _check_worker(self) -> None:
        """The supervisor: a dead executor is replaced, its job taken back (as a crash, not an attempt)."""
        if self.executor.alive() or self.stop.is_set():
            return
        old, job = self.executor, self.executor.progress().job
        new = old.respawn()
        if new is None:
            return  # not restartable here: status says so and the watchdog pings stop
        self.worker_restarts += 1
        log.error("the worker thread died; starting a new one", restarts=self.worker_restarts,
                  file=job.source if job else None)
        self.book.take(old.poll())
        self.executor = new
        if job is not None:
            self.book.take([crashed(job)])
        self.executor.start()

    def _check_observer(self) -> None:
        if self.watcher and not self.watcher.alive():
            log.error("the observer thread died; restarting it and rescanning")
            self.watcher.restart()
            self._rescan()
        elif self.watcher and self.watcher.replaced():  # rm -rf inbox; mkdir inbox (rev6e finding 9)
            log.warning("the inbox was made again; watching the new one and rescanning", inbox=str(self.config.inbox))
            self.watcher.restart()
            remake_folders(self.config)  # the recipe folders
            self._rescan()

    def _rescan(self, now: float | None = None) -> None:
        self.last_rescan = time.monotonic() if now is None else now
        running.adopt(self.config)  # the running-folders record, when a daemon of this config that held it went
        self.book.take_up(self.spool)  # jobs a dead daemon left in work/ (at start, or a killed neighbour's)
        skipped = skipped_folders(self.config.inbox, self.exclude)
        warn_new(skipped, self.skipped)  # one warning per why, for those new since the last rescan (rev11c)
        self.skipped = skipped
        self._check_unpaired(self.last_rescan)
        self.decode.prune()  # the files gone meanwhile: never asked about again (rev11a)
        if self.watcher:
            self.watcher.rescan()
        else:
            for path in scan(self.config.inbox, self.exclude):
                self.tracker.seen(path)

    def _check_unpaired(self, now: float | None = None) -> None:
        """On a tick of its own, not only at a rescan (60 s shipped): README says a lonely sidecar is told 30 s
        after it lands, and at the rescan it was told 30-90 s after (rev8a). A walk of the inbox: 17 ms for 2,000
        photos on the 2-core box (bench/bench_outputs.py), every UNPAIRED_TICK_S."""
        self.last_unpaired = time.monotonic() if now is None else now
        unpaired = unpaired_sidecars(self.config.inbox, self.exclude)
        for rel in unpaired.keys() - self.unpaired.keys():
            log.warning("a sidecar in the inbox is not used", sidecar=rel, why=unpaired[rel])
        self.unpaired = unpaired

    def _maybe_reload(self) -> None:
        asked = self.edits.changed() or self.reload_requested
        if not (asked or self.refused.due()):
            return  # no wait for an idle worker: the next job reads the new config when it starts
        self.reload_requested = False
        if asked:  # a quiet retry of a refused edit is no reload systemd was told of
            self.notifier.reloading()
        try:
            new = reload_config(self.config, self.config_path, quiet=not asked)  # the running folders kept
            self.refused.tried(new is None)
            if new is AGAIN:  # held by another program: the same edit is read at the next pass
                self.reload_requested = True
            elif new is not None:
                old, self.config = self.config, new
                if apply_live(old, new, self.watcher):  # poll_seconds: the observer started again
                    self._rescan()
                self.reporter.check_notify(new)
                self.tracker.settle, self.heartbeat.stall_seconds = new.settle_seconds, new.stall_seconds
            self._exclude_now()
        finally:  # systemd waits for READY=1 after RELOADING=1, whatever the reload did
            if asked:
                self.notifier.ready()

    def _exclude_now(self) -> None:
        """The left-out folders as the config in use says, plus a refused edit's styles_dir (watcher.excluded)."""
        self.exclude = excluded(self.config, self.refused.styles)
        if self.watcher:
            self.watcher.exclude_now(self.exclude)

    # --- shutdown (the signals that ask for it: startup.install_signals) ------------------------------
    def _shutdown(self) -> None:
        self.state = "stopping"
        self.notifier.stopping()
        self.stop.set()
        deadline = time.monotonic() + STOP_WAIT  # every wait below shares it: systemd counts the whole stop
        if self.watcher:
            self.watcher.stop()
        if self.executor:
            for job in self.executor.close(timeout=left(deadline - FLUSH_WAIT)):  # slots, writes, sheets
                self.spool.release(job)  # claimed ahead, never begun: the next start takes it up
            self.book.take(self.executor.poll())
            for job in self.book.retry:
                self.spool.release(job)
        self.state = "stopped"
        self.reporter.final(left(deadline))  # the last notices: FLUSH_WAIT at least
        running.forget(self.config)
        log.info("stopped", **self.spool.counts())

