"""The daemon's outward signs: the watchdog ping, status.json, systemd's STATUS= line, the metrics textfile and
the notices.

The main loop calls ``status_tick`` once a pass (it acts at most once a second), and the ``Reporter`` reads the
daemon's state to render it; the Daemon keeps the state, this module only says how it looks from outside. Kept apart
from the loop so daemon.py reads as the loop alone (rev7e finding 7).
"""
from __future__ import annotations

import time

import structlog

from ..alerts import Alerts, command_problem
from . import status as status_module
from . import status_spare
from .folder_faults import fixes, spool_fault, write_fault
from .metrics import Metrics
from .tally import Tally

log = structlog.get_logger("style-pipeline")
MAX_WORKER_RESTARTS = 5  # after this many deaths the watchdog pings stop: systemd restarts the whole service
STATUS_EVERY = 1.0  # seconds between two status.json writes (and watchdog ticks)
STATUS_ERROR_EVERY = 60.0  # seconds between two warnings that status.json was not written


class Reporter:
    """Renders one Daemon's state for people and for systemd; owns only its own clocks, the metrics and the alerts."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon  # the Daemon (daemon.py), not imported here: that import would run in a circle
        config = daemon.config  # issue 11: the textfile and `notify:`, whose summary counts from disk (tally.py)
        self.metrics, self.alerts = Metrics(), Alerts(Tally(config.spool, config.outbox, config.failed))
        self.last_status = 0.0
        self.last_status_error = 0.0
        self.spared = False  # a spare status.json is beside the config (status_spare.py)
        self.metrics_error: tuple | None = None  # the metrics write's last fault, logged once (rev9b finding 4)
        self.check_notify(config)

    @staticmethod
    def check_notify(config) -> None:
        """A `notify:` command not found on this process's PATH: warned at start and at each reload, and the daemon
        goes on (alerts.command_problem: `validate` refuses it; a night's photos are worth more than its notices)."""
        if problem := command_problem(config.notify):
            log.warning("notices will not go out: fix `notify:` in the config", notify=config.notify, problem=problem)

    def status_tick(self) -> None:
        """Once a second: the watchdog ping, status.json, the STATUS= line, then metrics and the queue notice."""
        now = time.monotonic()
        if now < self.last_status + STATUS_EVERY:
            return
        self.last_status = now
        self.heartbeat()  # first: no failure below may stop the watchdog's pings while the loop runs (rev6e)
        snapshot = status_module.snapshot(self.facts())
        self.write_status(snapshot)
        self.daemon.notifier.status(status_module.one_line(snapshot))
        self.outputs_tick(snapshot)

    def final(self, notice_wait: float) -> None:
        """The last status.json and metrics of a stopping daemon, and the notices still queued, for up to
        ``notice_wait`` seconds (what the stop's one deadline left: daemon.STOP_WAIT)."""
        snapshot = status_module.snapshot(self.facts())
        self.write_status(snapshot)
        self.outputs_tick(snapshot, force=True)
        self.alerts.flush(notice_wait)

    def health(self) -> str:
        """What `status` says: "running" only while a worker is alive and idle or making progress."""
        d = self.daemon
        faults, full = d.disk.faults(), d.disk.full()  # both, when held together: neither hides the other (rev10c)
        disk_full = full and f"disk full ({full.free_mb} MB free in {full.folder})"
        if faults or full:  # every folder fault with its fix (folder_faults.py), then the full disk
            return "paused: " + "; ".join(filter(None, (faults and fixes(faults), disk_full)))
        if d.executor is not None and not d.executor.alive() and d.state == "running":
            return "worker dead; restarting it"
        if d.worker_restarts > MAX_WORKER_RESTARTS:
            return f"worker died {d.worker_restarts} times; watchdog pings stopped"
        if self.busy() and not d.heartbeat.healthy(time.monotonic()):
            return f"stuck: no progress for over {d.config.stall_seconds:.0f} s; watchdog pings stopped"
        return d.state

    def facts(self) -> status_module.DaemonState:
        """The daemon's state now, for status.json: the daemon holds it, status only renders it."""
        d = self.daemon
        executor, watcher = d.executor, d.watcher
        progress = executor.progress() if executor else None
        return status_module.DaemonState(
            started_at=d.started_at, phase=d.state, health=self.health(),
            worker={"alive": executor.alive(), "restarts": d.worker_restarts,
                    "held": [j.source for j in d.book.held]} if executor else None,
            skipped=dict(d.skipped), unpaired=dict(d.unpaired), unclaimable=d.unclaimable.listing(),
            sidecar_held=d.decode.held_listing(d.config.inbox),
            observer={"kind": watcher.observer_class.__name__, "why": watcher.reason,
                      "alive": watcher.alive()} if watcher else None,
            queue=len(d.tracker), current=progress and progress.current, counts=d.spool.counts(),
            busy_seconds=progress.busy_seconds if progress else 0.0, schedule=d.config.schedule, now=d.clock())

    def write_status(self, snapshot: dict) -> None:
        """No status write may kill the daemon (a full disk, a neighbour's rename): logged once a minute."""
        try:
            status_module.write(self.daemon.config.spool, snapshot)
        except Exception as exc:  # noqa: BLE001 - not only OSError: a name that UTF-8 refused killed the pings
            self.status_not_written(snapshot, exc)
            if time.monotonic() - self.last_status_error > STATUS_ERROR_EVERY:
                self.last_status_error = time.monotonic()
                log.warning("status.json not written", error=str(exc))
            return
        if self.spared:
            self.spared = not status_spare.clear(self.daemon.config.path)

    def status_not_written(self, snapshot: dict, exc: Exception) -> None:
        """The spool read-only or without access (rev9b finding 4): the status goes beside the config, where `status`
        finds it, not "not running" of a live daemon; and claiming pauses with its fix and notice only if spool/work
        refuses a probe write too (as a claim there would, also with no photo in flight), paused on work/ and probed
        there. A spool folder that refused only status.json (work/, done/, failed/ the service's own) paused on
        itself and, probed there, never resumed: no photo styled all night (rev10a)."""
        d = self.daemon
        if spool_fault(exc, d.config) is None:
            return
        self.spared = status_spare.write(d.config.path, snapshot) or self.spared
        if not d.disk.pauses and (fault := write_fault(d.config.work, d.config)) is not None:
            d.book.pause(fault.folder, fault)

    def on_job_event(self, kind: str, data: dict) -> None:
        """A job ended (an outcome with an event): count it, and send a notice if it failed."""
        self.metrics.on_event(kind, data)
        self.alerts.on_event(self.daemon.config.notify, kind, data)

    def outputs_tick(self, snapshot: dict, force: bool = False) -> None:
        """The metrics textfile every metrics_seconds, and the notice when the queue empties after work."""
        d = self.daemon
        gpu = d.engine is not None and d.engine.device.type != "cpu"
        try:
            if self.metrics.maybe_write(d.config.metrics_file, 0.0 if force else d.config.metrics_seconds,
                                        queue=snapshot["queue"], in_work=snapshot["in_work"], busy=self.busy(),
                                        gpu=gpu):
                self.metrics_error = None
        except OSError as exc:  # once a fault, not every metrics_seconds: 17,000 lines a day read-only (rev9b)
            if self.metrics_error != (exc.errno, str(d.config.metrics_file)):
                log.warning("metrics file not written", path=str(d.config.metrics_file), error=str(exc))
            self.metrics_error = (exc.errno, str(d.config.metrics_file))
        if d.executor:
            self.alerts.tick(d.config.notify, d.drained())

    def heartbeat(self) -> None:
        """WATCHDOG=1 only while the worker makes progress (or is idle): a stuck step stops the pings,
        and so does a worker that keeps dying (systemd then restarts the service)."""
        d = self.daemon
        if not d.executor.alive() or d.worker_restarts > MAX_WORKER_RESTARTS:
            return
        progress = d.executor.progress()
        d.heartbeat.tick(progress.marker if progress.busy else None)

    def busy(self) -> bool:
        """A job is running now (not only queued or held)."""
        return bool(self.daemon.executor and self.daemon.executor.progress().busy)
