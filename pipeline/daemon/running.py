"""The folders a running daemon uses, recorded beside its config, so `status` and `report` look where it works.

A folder edit in config.yaml applies at the next start (reload.keep_folders): until then the daemon works in the
old inbox, outbox and spool while the file names new ones, and `status` and `report`, reading the file, looked at
the new spool and said "not running" of a daemon styling photos (rev7f finding 3). So the daemon writes its folders
at start to ``.style-pipeline/<config name>.running.json`` in the config's folder (found from the config path
alone; `install-service` makes that folder writable to the service), and the readers use them while that daemon
lives: its status.json in the recorded spool fresh and written by the recorded pid. A record that cannot be written
costs only this (a warning, and the readers read the file's folders, as before); one left by a killed daemon is
ignored, being not alive.
"""
from __future__ import annotations

import os
from pathlib import Path

import structlog

from ..fsio import pid_alive, write_json
from .config import FOLDER_KEYS
from .status import alive, last_word, read_object

log = structlog.get_logger("style-pipeline")
RUNTIME_DIR = ".style-pipeline"  # beside config.yaml: the one place both the daemon and its readers can derive


def record_path(config_path: str | Path) -> Path:
    config = Path(config_path).resolve()
    return config.parent / RUNTIME_DIR / f"{config.name}.running.json"


def record(config) -> None:
    """At start: this daemon's pid and folders. Never raises: a folder the service may not write (a unit rendered
    before this record existed) costs only the readers' view after a folder edit. A record of another live daemon
    of this config is left alone: a `once` run beside the service took it over and removed it at its stop, and
    `status` said "not running" of the service again (rev8d finding 3); the first daemon's folders are the older.
    That one is named in the log, as a warning: a second daemon of a config started without a word (rev11b), then
    at info level only (rev12b), while it doubles the memory and halves each one's speed."""
    found = folders(config.path)
    if found is None:
        _write(config, warn=True)
        return
    shared = "the two share the inbox" if found["inbox"] == config.inbox else f"its inbox is {found['inbox']}"
    log.warning(f"another daemon (pid {read_object(record_path(config.path)).get('pid')}) is running on this config; "
                f"{shared}: each holds its own engine (twice the memory) and they share the machine (each at about "
                "half speed); stop one unless that is meant", config=str(config.path))


def adopt(config) -> None:
    """At each rescan: the record again when its owner has gone. A second daemon of this config that started while
    the first ran (the service and a `run` by hand) left the record to it, and when the service stopped (its
    forget) the one still running had none: after a folder edit `status` and `report` looked at the new folders
    and said "not running" (left8's list). A live owner is never displaced (pid alone: two daemons on one spool
    take turns writing status.json), and a record that cannot be written was warned of at start."""
    owner = read_object(record_path(config.path)).get("pid")
    if owner != os.getpid() and not pid_alive(owner):
        _write(config, warn=False)


def _write(config, warn: bool) -> None:
    path = record_path(config.path)
    try:
        path.parent.mkdir(exist_ok=True)
        write_json(path, {"pid": os.getpid(), **{key: str(getattr(config, key)) for key in sorted(FOLDER_KEYS)}},
                   fsync=False)
    except OSError as exc:
        if warn:
            log.warning("cannot record the running folders; after a folder edit, status and report look at the "
                        "new ones until the next start", file=str(path), error=exc.strerror or str(exc),
                        fix=f"make {path.parent} writable by this user (install-service lists it)")


def forget(config) -> None:
    """At stop: the record goes, if it is still this daemon's (a newer daemon of the same config keeps its own)."""
    path = record_path(config.path)
    if read_object(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def folders(config_path: str | Path) -> dict[str, Path] | None:
    """The running daemon's inbox, outbox and spool, or None when no daemon of this config is alive (or it left no
    record): the caller then reads the config's own."""
    data = read_object(record_path(config_path))
    if not data or not all(isinstance(data.get(key), str) for key in FOLDER_KEYS):
        return None
    found = {key: Path(data[key]) for key in FOLDER_KEYS}
    word = last_word(found["spool"])
    if not word or word.get("pid") != data.get("pid") or not alive(word):
        return None
    return found

