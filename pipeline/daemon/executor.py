"""What the main loop asks of an executor, whoever runs the optimisation (one local engine, Ray actors...).

An executor takes claimed jobs (``submit``), says whether it has room for another (``has_room``), and reports
what runs (``progress``). The job's life around the optimisation is not its business: each executor hands that
to the shared :class:`~.jobs.JobLife` (pre-checks, plan, record, publish, outcomes), so a new executor writes
only how to run a plan. The daemon reads the events below, never an executor's own fields.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable

from .config import Config
from .jobs import JobLife
from .spool import Job, Spool


class Executor(threading.Thread):
    """The interface and the state every executor shares with the main loop."""

    def __init__(self, name: str, spool: Spool, get_config: Callable[[], Config], stop: threading.Event,
                 life: JobLife | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.spool, self.get_config, self.stop = spool, get_config, stop
        self.life = life or JobLife(spool, get_config, stop)
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.busy = threading.Event()  # a job is open
        self.pause = threading.Event()  # set by the main loop when the run window closes: running jobs stop
        self.finished = threading.Event()  # a job ended: the main loop wakes at once
        self.progress: dict | None = None  # what runs now, for status.json's "current"
        self.marker = 0  # bumped on every sign of progress: the main loop's watchdog reads it
        self.busy_seconds = 0.0
        self.current: Job | None = None  # the job in hand: the supervisor takes it back if this thread dies

    # --- the interface: what the main loop calls --------------------------------------------------
    def submit(self, job: Job) -> None:
        raise NotImplementedError

    def has_room(self) -> bool:
        """The main loop may claim and hand over another job now."""
        raise NotImplementedError

    def close(self) -> None:
        """No more jobs: the thread ends after the one in hand (a stop cancels that one)."""
        self.jobs.put(None)

    def unstarted(self) -> list[Job]:
        """At shutdown: the jobs handed over but not yet begun, to be released to the inbox."""
        return []

    @property
    def open_jobs(self) -> int:
        """Jobs handed over and not yet ended: `once` waits for zero."""
        raise NotImplementedError

    def respawn(self) -> "Executor | None":
        """A fresh thread after this one died, or None where that cannot be done here."""
        return None

    # --- the shared job state, held by the job life ----------------------------------------------
    @property
    def retry(self) -> list[Job]:
        return self.life.retry

    @property
    def last_errors(self) -> list[dict]:
        return self.life.last_errors

    @property
    def held(self) -> list[Job]:
        return self.life.held

    @property
    def disk_full(self) -> str | None:
        return self.life.disk_full

    @disk_full.setter
    def disk_full(self, value: str | None) -> None:
        self.life.disk_full = value

    @property
    def on_event(self):
        return self.life.on_event

    @on_event.setter
    def on_event(self, listener) -> None:
        self.life.on_event = listener
