"""A config reload (a changed config.yaml or SIGHUP): other settings apply at once, folders, the executor's
(executor, ray, devices, device, weights, cache_styles), `watch` and `log_format` at the next start.

The Spool and the watcher hold the folders they were started with, so a reload that swapped new folders into
the config half-applied them: outputs went to the new outbox while claims came from the old inbox, and an
outbox that could not be made failed every photo after it (rev6e finding 4). So the running folders are kept,
each change is named in a warning, and the new folders' problems are told now, not at the next start.
A reload never raises: whatever goes wrong keeps the old config (the caller then sends READY=1).
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import structlog

from . import config as config_module
from .config import Config, ConfigError
from ..fsio import NO_WAIT, FileBusy, open_regular
from .config_build import check_folders

log = structlog.get_logger("style-pipeline")
FOLDERS = ("inbox", "outbox", "spool")  # work/, done/ and failed/ live in the spool
AT_START = ("executor", "ray", "devices", "device", "weights", "cache_styles",  # the executor and its engines
            "watch", "log_format")  # the observer's kind and the log's renderer: chosen once, at start
AGAIN = "read again at the next pass"  # reload_config's answer when the file could not be read yet
BUSY_LOG_EVERY = 10.0  # seconds between the warnings of a config held busy (the loop asks ~3 times a second)
RACY_SECONDS = 2.0  # the coarsest mtime a filesystem keeps (FAT's 2 s): a read this soon after it may be superseded
MAX_CONFIG_BYTES = 1 << 20  # a config is a few kB: the hash never reads more than this of a file swapped in
_busy_logged = [0.0]  # when a busy config was last warned about (monotonic)


def config_stamp(path: Path, before: tuple | None = None) -> tuple | None:
    """What tells an edit of the config: its (mtime, ctime, size, inode); ``before`` when it cannot be stat'ed. The
    mtime alone missed one: two saves inside a tick of the kernel's coarse clock (a script's two `sed -i`) carry one
    mtime, and so does a copy that keeps it (`cp -p`, `rsync -t`): the daemon ran on with the edit before, unsaid.
    The ctime no copy can set back; what no stamp tells, a rewrite in place of the same size inside one tick, is
    ConfigEdits' racy look."""
    try:
        st = path.stat()
    except OSError:
        return before
    return st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino


class ConfigEdits:
    """Whether config.yaml was edited since the last look: its stamp (config_stamp) changed, and so did its content.
    A chmod, a chown or a hard link (a backup tool) changes the ctime alone, and each was a "config reloaded" and a
    RELOADING=1 to systemd for the same text (rev11c); the text is small, so it is read and hashed only when the
    stamp moved, or while the last read was *racy* (git's word for the same problem in its index): taken less than
    RACY_SECONDS after the file's mtime, so a rewrite of the same size could still land inside the mtime's tick and
    leave every part of the stamp as it was. Such a rewrite went unread until the next edit; now the text is read
    again at each look until a read is clearly later than the mtime, a few looks after a save. One that cannot be
    read (held, gone) counts as edited when its stamp moved: reload_config says why, or waits."""

    def __init__(self, path: Path, clock=time.time) -> None:
        self.path, self.clock = path, clock  # the wall clock, as the mtime is
        self._look(config_stamp(path))

    def _look(self, stamp: tuple | None) -> None:
        self.stamp, self.digest = stamp, content_digest(self.path)
        self.racy = stamp is None or stamp[0] >= (self.clock() - RACY_SECONDS) * 1e9

    def changed(self) -> bool:
        stamp = config_stamp(self.path, self.stamp)
        if stamp == self.stamp and not self.racy:
            return False
        moved, before = stamp != self.stamp, self.digest
        self._look(stamp)
        return moved if self.digest is None else self.digest != before


def content_digest(path: Path) -> bytes | None:
    """The config's text hashed, None when it cannot be read now: read without following a FIFO or waiting on a
    lease (fsio.open_regular, NO_WAIT), on the main loop."""
    try:
        with open_regular(path.resolve(), NO_WAIT) as file:
            return hashlib.blake2b(file.read(MAX_CONFIG_BYTES)).digest()
    except OSError:
        return None


class Refused:
    """An edit refused for what is outside the file (a painting it names not copied yet, a folder not made yet)
    is read again every ``every`` seconds while it stays refused: its mtime was used up by the refusal, so nothing
    read it again until another save, and a photo dropped into the new recipe's folder went to the default recipe
    as an album folder (rev7a finding 5). The retries are quiet (the refusal was logged once); one that works is
    logged as any reload."""

    def __init__(self, every: float, path: Path | None = None) -> None:
        self.every, self.path = every, path
        self.refused_at: float | None = None  # monotonic, the last try that was refused; None: nothing refused
        self.styles: Path | None = None  # the refused edit's styles_dir (kept out of the scan: refused_styles)

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.refused_at is not None and now >= self.refused_at + self.every

    def tried(self, refused: bool, now: float | None = None) -> None:
        self.refused_at = (time.monotonic() if now is None else now) if refused else None
        self.styles = refused_styles(self.path) if refused and self.path is not None else None


def refused_styles(path: Path) -> Path | None:
    """The styles_dir a refused edit names. The usual order is to point styles_dir at inbox/paintings first (refused:
    the paintings are not there yet) and then copy them in: the copy was claimed as photos ~0.4 s after it landed,
    before the 2 s retry took the edit (rev9f finding 1). None when the file cannot say."""
    try:
        return config_module.read_styles_dir(path)
    except (ConfigError, OSError, ValueError):
        return None


def reload_config(old: Config, path: Path, quiet: bool = False) -> Config | str | None:
    """The new config with the running folders kept; None to keep the old one (the reason is logged); AGAIN when
    the file is held by another program (a lease: an editor's save over Samba or NFS). The caller then keeps the
    old config and reads the same edit again at its next pass: taken as invalid, the edit was dropped for good,
    its mtime used up, until another save (rev6f). Read without waiting out the lease (fsio.NO_WAIT): the main
    loop must not stall, the first try starts the lease's break, and the next pass comes in 0.2 s. ``quiet``: a
    retry of a refused edit (Refused), whose refusal was already logged."""
    try:
        loaded = config_module.load(path, busy_wait=NO_WAIT)
        new = keep_at_start(old, keep_folders(old, config_module.remember_removed_recipes(old, loaded), quiet), quiet)
        problems = check_folders(new)  # the running folders, and those of recipes this reload adds
    except ConfigError as exc:
        if isinstance(exc.__cause__, FileBusy):
            if time.monotonic() - _busy_logged[0] >= BUSY_LOG_EVERY:
                _busy_logged[0] = time.monotonic()
                log.warning("the new config is held by another program; it is read again until it can be",
                            file=str(path))
            return AGAIN
        (log.debug if quiet else log.error)("the new config is invalid; keeping the old one", problems=exc.problems)
        return None
    except Exception as exc:  # e.g. inbox/<new recipe> is a regular file: mkdir raises
        (log.debug if quiet else log.error)("the new config cannot be used; keeping the old one",
                                            error=f"{type(exc).__name__}: {exc}")
        return None
    if problems:
        log.warning("the running folders have problems; the daemon goes on with them", problems=problems)
    log.info("config reloaded", recipes=list(new.recipes))
    return new


def keep_folders(old: Config, new: Config, quiet: bool = False) -> Config:
    """``new`` with ``old``'s inbox, outbox and spool; each change is warned about with the new folders' problems.
    ``quiet``: a retry of a refused edit (Refused), warned about when it was saved: the warning came again at
    each 2 s retry, all night, for one edit (rev7f)."""
    changes = [f"{key}: {getattr(old, key)} -> {getattr(new, key)}" for key in FOLDERS  # resolved: an outbox link
               if getattr(old, key).resolve() != getattr(new, key).resolve()]  # kept at start (config_paths._folder)
    if not changes:
        return new
    try:
        problems = check_folders(new)
    except OSError as exc:
        problems = [f"{type(exc).__name__}: {exc}"]
    (log.debug if quiet else log.warning)("folder changes take effect at the next start; other changes apply now",
                                          changes=changes,
                                          **({"next_start_problems": problems} if problems else {}))
    metrics = new.metrics_file
    if metrics is not None and metrics.is_relative_to(new.spool):  # the default lives in the spool: keep it there
        metrics = old.spool / metrics.relative_to(new.spool)
    return dataclasses.replace(new, inbox=old.inbox, outbox=old.outbox, spool=old.spool, metrics_file=metrics)


def keep_at_start(old: Config, new: Config, quiet: bool = False) -> Config:
    """``new`` with ``old``'s settings read at start only (AT_START): the executor and its engines are built once,
    at start, so an edit of them was silently ignored (the log said "config reloaded" and the night ran on the old
    executor: rev9e finding 4); so were `watch` and `log_format` (closing9). Kept, so that the config in use says
    what runs (a job's settings take ``device`` from it), and each change named in a warning, as folder changes
    are. `poll_seconds` and `log_level` apply at once (apply_live)."""
    changes = [f"{key}: {getattr(old, key)} -> {getattr(new, key)}" for key in AT_START
               if getattr(old, key) != getattr(new, key)]
    if not changes:
        return new
    (log.debug if quiet else log.warning)("executor, watch and log_format changes take effect at the next start; "
                                          "other changes apply now", changes=changes)
    return dataclasses.replace(new, **{key: getattr(old, key) for key in AT_START})


def apply_live(old: Config, new: Config, watcher) -> bool:
    """`log_level` and `poll_seconds` applied now: both were read at start only, so an edit of them was silently
    ignored (closing9). The log's level is set again (its format kept: AT_START); a polling observer is started
    again at the new interval (the running one keeps its own). True when the observer was started again: the
    caller rescans, for what landed while it was down."""
    if new.log_level != old.log_level:
        from . import log as log_setup
        log_setup.configure(new.log_format, new.log_level)
    if watcher is None or new.poll_seconds == old.poll_seconds:
        return False
    watcher.poll = new.poll_seconds
    if not watcher.polling():
        return False
    watcher.restart()
    log.info("polling the inbox at the new interval", poll_seconds=new.poll_seconds)
    return True


def remake_folders(config: Config) -> None:
    """The running folders and the recipe folders made again (an inbox removed and made again has none);
    what cannot be made is logged, and the daemon goes on."""
    try:
        problems = check_folders(config)
    except OSError as exc:
        problems = [f"{type(exc).__name__}: {exc}"]
    if problems:
        log.warning("cannot make the folders again", problems=problems)
