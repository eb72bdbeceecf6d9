"""Watching the inbox: one path for inotify and polling, which files are candidates, and a rescan.

Handlers only enqueue into the settle tracker (settle.Tracker); the main loop decides what is ready to claim.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from ..engine.tiff_kind import is_camera_raw
from ..fsio import NO_WAIT, FileBusy, open_regular
from .pairing import is_sidecar

if TYPE_CHECKING:  # annotations only: settle imports the decoder (PIL), and `status` and `report` import this module
    from .settle import Tracker

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", ".swp", "~",
                    ".xmp", ".aae", ":zone.identifier")  # photo tools' edit files; WSL's copy of a download's mark
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic")
OWN_MARK = b"generator: style-pipeline"  # in the head of every text file the pipeline writes (report, metrics)
OWN_SUFFIXES = (".html", ".htm", ".prom", ".json", ".txt")
OBSERVER_JOIN = 5.0  # seconds a stop waits for the observer thread (one of the stop's waits: daemon.STOP_WAIT)
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs")


IGNORED_NAMES = ("thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r")  # Windows', macOS's
# Google Takeout's metadata beside each photo: IMG.jpg.json, IMG.jpg(1).json, IMG.jpg.supplemental-metadata.json
# (cut to IMG.jpg.supplemental-me.json when the name is long), and each album's metadata.json.
TAKEOUT = re.compile(r"(.*\.(jpe?g|png|webp|tiff?|bmp|gif|heic|heif|mp4|mov)(\(\d+\))?(\..*)?"
                     r"|.*\.supplemental-metadata.*|metadata)\.json")


def ignored(name: str) -> bool:
    """Temporary and hidden names (a browser's .crdownload, rsync's dotfile) are never jobs, nor the files an
    operating system leaves in an album folder (Windows' Thumbs.db and desktop.ini, macOS's Icon\\r): each went
    to failed/ as bad_image with a failure notice, for every album copied from Windows (rev7a). So did a photo
    tool's metadata beside each photo (Lightroom's and darktable's IMG.xmp or IMG.jpg.xmp, an iPhone's IMG.AAE) and
    the IMG.jpg:Zone.Identifier a copy through WSL leaves (rev9c), and Google Takeout's IMG.jpg.json (rev10b)."""
    lower = name.lower()
    return (name.startswith(".") or lower.endswith(IGNORED_SUFFIXES) or lower in IGNORED_NAMES
            or TAKEOUT.fullmatch(lower) is not None)


def mount_of(path: Path, mountinfo: str = "/proc/self/mountinfo") -> tuple[str, str]:
    """(mount point, filesystem type) holding ``path``: the longest mount point that prefixes it."""
    best, fstype = "/", "unknown"
    target = str(path.resolve())
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return best, fstype
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        point = fields[4].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fstype = point, right.split()[0]
    return best, fstype


def choose_observer(inbox: Path, mode: str, mountinfo: str = "/proc/self/mountinfo"):
    """(observer class, reason): network and FUSE shares deliver no inotify events for remote writes."""
    if mode == "native":
        return Observer, "watch: native in the config"
    if mode == "polling":
        return PollingObserver, "watch: polling in the config"
    point, fstype = mount_of(inbox, mountinfo)
    if fstype in NETWORK_FS or fstype.startswith("fuse"):
        return PollingObserver, f"inbox is on {fstype} at {point}: no inotify events for other machines' writes"
    return Observer, f"inbox is on {fstype} at {point}: native events"


class Handler(FileSystemEventHandler):
    """Only enqueues: an exception here would end the observer's thread quietly."""

    def __init__(self, inbox: Path, tracker: Tracker, exclude: tuple[Path, ...] = ()) -> None:
        self.inbox, self.tracker, self.exclude = inbox, tracker, exclude
        self.inbox_gone = False  # the inbox itself was deleted: its watch (and the emitter) ended

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type == "deleted" and Path(os.fsdecode(event.src_path)) == self.inbox:
            self.inbox_gone = True
        if event.event_type not in ("created", "modified", "moved", "closed", "opened", "closed_no_write"):
            return
        raw = event.dest_path if event.event_type == "moved" else event.src_path
        path = Path(os.fsdecode(raw))
        if event.event_type in ("opened", "closed_no_write"):  # who holds it open, not a change (Tracker.opened)
            if not event.is_directory:
                self.tracker.opened(path, event.event_type == "opened")
            return
        if event.is_directory:
            if event.event_type in ("created", "moved") and wanted(path, self.inbox, self.exclude):
                for found in scan_folder(path, self.inbox, self.exclude):  # an album moved in raises no file events
                    self.tracker.touch(found)
            return
        if wanted(path, self.inbox, self.exclude):
            self.tracker.touch(path, closed=event.event_type == "closed")


def scan_folder(folder: Path, inbox: Path, exclude: tuple[Path, ...]):
    """The candidates under one folder of the inbox (a folder moved in whole)."""
    try:
        yield from (p for p in scan(folder, exclude) if wanted(p, inbox, exclude))
    except OSError:
        return


def own_folders(config) -> tuple[Path, ...]:
    """Folders never scanned for photos, even when a config puts them inside the inbox: those the daemon writes,
    and styles_dir below the inbox (a share's inbox/paintings/): its paintings were claimed as photos, and each
    photo of their recipes then failed (rev9c). Not a styles_dir holding the inbox, which would hide every photo
    (config_build refuses one that is the inbox itself). None: the report's view when its config cannot say."""
    return (config.outbox, config.spool, *_styles_below(config.inbox, config.styles_dir))


def excluded(config, refused_styles: Path | None = None) -> tuple[Path, ...]:
    """own_folders, plus the styles_dir of an edit refused for now when it lies below the inbox (reload.Refused):
    its paintings are copied in while the edit waits for them, and must not be claimed meanwhile (rev9f #1)."""
    return own_folders(config) + _styles_below(config.inbox, refused_styles)


def _styles_below(inbox: Path, styles: Path | None) -> tuple[Path, ...]:
    """(styles,) when that styles_dir lies below the inbox, else (): the one rule of both callers above."""
    return (styles,) if styles is not None and inbox in styles.parents else ()


def wanted(path: Path, inbox: Path, exclude: tuple[Path, ...] = ()) -> bool:
    """A candidate at any depth (as paperless-ngx's recursive consumption): not hidden or temporary, not a
    sidecar or camera RAW, not inside a folder the daemon writes (an outbox or spool put in the inbox), not written
    by us. Compared as parts tuples: `e in path.parents` built every parent as a Path for each folder, and relative_to
    parses its argument again each call; behind a backlog that was the main loop's hot spot (a rescan 555 ms at
    3,000 photos, bench/backlog_loop.py)."""
    parts = path.parts
    rel = parts[len(inbox.parts):]
    if (not rel or not _under(parts, inbox) or any(ignored(p) for p in rel) or is_sidecar(path.name)
            or is_camera_raw(path.name)):
        return False
    if any(picture_named(p) for p in rel[:-1]):
        return False  # inside a folder named like a picture: skipped, with a warning (skipped.skipped_folders)
    return not any(_under(parts, e) for e in exclude) and written_by_us(path) is False


def _under(parts: tuple[str, ...], folder: Path) -> bool:
    """The path whose ``parts`` these are is ``folder`` or inside it (lexically, as Path.is_relative_to)."""
    return parts[:len(folder.parts)] == folder.parts


def written_by_us(path: Path) -> bool | None:
    """A report or metrics file the pipeline wrote (its head carries OWN_MARK): never claimed as a photo.

    Only regular files with text suffixes are read, and only their first 1 KB, so a scan of a full inbox stays
    cheap; a FIFO or a link is never read (fsio.open_regular: a FIFO would block its reader until written to).
    A leased one (its Samba or NFS writer holds it) is not waited for (fsio.NO_WAIT: this runs on the main loop's
    scan, in `status` and on the watcher's thread; 0.2 s a file stalled the rescan 2 s for 10 Takeout .json files,
    rev7e): None, not known yet, so not a candidate yet; the first try starts the break, a later rescan reads it.
    """
    if not path.name.lower().endswith(OWN_SUFFIXES):
        return False
    try:
        with open_regular(path, NO_WAIT) as file:
            return OWN_MARK in file.read(1024)
    except FileBusy:
        return None  # settle would not claim it while its writer holds it either
    except OSError:
        return False


def scan(inbox: Path, exclude: tuple[Path, ...] = ()):
    """Every candidate file in the inbox, at any depth; links to folders are not followed."""
    for top, dirs, files in os.walk(inbox):
        here = Path(top)
        dirs[:] = sorted(d for d in dirs if not ignored(d) and not picture_named(d) and (here / d) not in exclude)
        for name in sorted(files):  # a RAW by its name first: 3,000 left in the inbox cost a Path each (rev11c)
            if not is_camera_raw(name) and wanted(here / name, inbox, exclude):
                yield here / name
        # os.walk lists a link to a folder among dirs and does not descend into it: it is a candidate
        # file to the worker (which fails it as not_a_regular_file), as a link to a file is.
        for name in dirs[:]:
            if (here / name).is_symlink():
                dirs.remove(name)
                if wanted(here / name, inbox, exclude):
                    yield here / name


def picture_named(folder_name: str) -> bool:
    return folder_name.lower().endswith(PICTURE_SUFFIXES)


def identity(folder: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino): the same path may name another folder after rm -rf and mkdir; None while it is missing."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Watcher:
    """The observer, restartable by the main loop, plus the rescan."""

    def __init__(self, inbox: Path, tracker: Tracker, mode: str, poll_seconds: float,
                 exclude: tuple[Path, ...] = ()) -> None:
        self.inbox, self.tracker, self.mode, self.poll = inbox, tracker, mode, poll_seconds
        self.exclude = exclude
        self.observer_class, self.reason = choose_observer(inbox, mode)
        self.observer = self.handler = None
        self.identity: tuple[int, int] | None = None

    def start(self) -> None:
        self.identity = identity(self.inbox)  # before the watch: a swap in between is seen at the next check
        if self.polling():
            self.observer = PollingObserver(timeout=self.poll)
        else:
            self.observer = Observer()
        self.handler = Handler(self.inbox, self.tracker, self.exclude)
        self.observer.schedule(self.handler, str(self.inbox), recursive=True)
        try:
            self.observer.start()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                raise OSError(exc.errno, f"out of inotify watches for {self.inbox}: raise "
                              "fs.inotify.max_user_watches (sysctl), or set `watch: polling`") from exc
            raise

    def polling(self) -> bool:
        """The observer polls (every ``poll`` seconds) rather than hearing native events."""
        return self.observer_class is PollingObserver

    def alive(self) -> bool:
        return self.observer is not None and self.observer.is_alive()

    def replaced(self) -> bool:
        """The inbox was removed and made again (or a share remounted): the watch is on the old folder, its
        observer thread stays alive and sees nothing of the new one (rev6e finding 9). The deletion event
        counts as much as a new (st_dev, st_ino): ext4 often gives the new folder the old one's inode."""
        now = identity(self.inbox)
        if now is None or self.identity is None:
            return False  # gone and not made again yet: nothing to watch
        return now != self.identity or bool(self.handler and self.handler.inbox_gone)

    def restart(self) -> None:
        self.stop()
        self.start()

    def exclude_now(self, exclude: tuple[Path, ...]) -> None:
        """The folders left out, as the config in use says: a reload can move styles_dir below the inbox, and the
        start's list let its paintings be claimed as photos (rev9f finding 1)."""
        self.exclude = exclude
        if self.handler is not None:
            self.handler.exclude = exclude

    def rescan(self) -> int:
        count = 0
        for path in scan(self.inbox, self.exclude):
            self.tracker.seen(path)
            count += 1
        return count

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=OBSERVER_JOIN)
            self.observer = None
