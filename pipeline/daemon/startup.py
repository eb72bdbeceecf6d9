"""What a start checks and clears before the daemon takes its first photo: the config and its folders, and the
temp files of writes a kill left; and the signal handlers, which only set the main loop's flags.

Apart from daemon.py, whose loop these run before (or beside): each is a refusal to start with its fix, or a
cleanup that must come before any write of ours.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Protocol

import structlog

from ..errors import StartupError
from ..fsio import sweep_tree
from . import config as config_module
from .config import Config, ConfigError
from .config_build import check_folders
from .folder_faults import start_faults

log = structlog.get_logger("style-pipeline")


class Flags(Protocol):
    """What the handlers set (daemon.Daemon): the loop reads them at its next pass."""
    stop: threading.Event
    reload_requested: bool


def load_checked(config_path: Path) -> tuple[Config, dict]:
    """The config, and the folders a start waits for (start_faults: outbox, done/, failed/ unwritable, a pause,
    rev9b finding 1); StartupError with every fix when it is wrong or the other folders cannot be used."""
    try:
        config = config_module.load(config_path)
    except ConfigError as exc:
        raise StartupError(str(exc)) from exc
    waits = start_faults(config)
    try:
        problems = check_folders(config, skip=waits)
    except OSError as exc:  # inbox/<recipe> a regular file: mkdir raises (rev6e: a bare traceback)
        problems = [f"{exc.filename}: cannot make this folder ({exc.strerror}); move away what is there"]
    if problems:
        raise StartupError("cannot use the folders:\n  " + "\n  ".join(problems))
    return config, waits


def sweep_killed_writes(config: Config) -> None:
    """Before any write of ours: a kill -9 inside write_atomic left its temp (an output, a record, status.json),
    rev7b."""
    freed = sum(sweep_tree(folder) for folder in (config.outbox, config.spool))
    if freed:
        log.info("removed the temp files of writes killed mid-way", bytes=freed)


def install_signals(daemon: Flags) -> None:
    """SIGTERM and SIGINT: checkpoint the current job and exit; a second one: stop at once. SIGHUP: reload. Only
    on the main thread (Python runs handlers there, and signal.signal refuses elsewhere: a test's daemon thread)."""
    if threading.current_thread() is not threading.main_thread():
        return
    stops = [0]

    def on_stop(signum, frame) -> None:
        stops[0] += 1
        if stops[0] > 1:
            os._exit(1)
        daemon.stop.set()

    def on_hup(signum, frame) -> None:
        daemon.reload_requested = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
