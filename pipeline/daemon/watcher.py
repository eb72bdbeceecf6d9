"""Watching the inbox: one path for inotify and polling, a settle tracker, and a rescan.

Handlers only enqueue into the :class:`Tracker`; the main loop decides what is ready to claim.
"""
from __future__ import annotations

import errno
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from ..engine.tiff_kind import RAW_FIX, is_camera_raw
from ..fsio import NO_WAIT, FileBusy, open_regular
from .pairing import is_sidecar

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", ".swp", "~",
                    ".xmp", ".aae", ":zone.identifier")  # photo tools' edit files; WSL's copy of a download's mark
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic")
OWN_MARK = b"generator: style-pipeline"  # in the head of every text file the pipeline writes (report, metrics)
OWN_SUFFIXES = (".html", ".htm", ".prom", ".json", ".txt")
OBSERVER_JOIN = 5.0  # seconds a stop waits for the observer thread (one of the stop's waits: daemon.STOP_WAIT)
# A camera RAW is never claimed (rev11b): Pillow reads only its small preview, which was styled, upscaled, unsaid.
# It stays in the inbox, as a photo tool's .xmp does, and is listed with the skipped folders: beside its JPEG twin
# (a RAW+JPEG camera) nothing is lost, and alone it is told, not failed with a notice per photo every night.
RAW_WHY = (f"a camera RAW file, left in the inbox: only its small preview could be styled. {RAW_FIX} "
           "(or move the RAW files out of the inbox: beside their JPEGs they are not needed here)")
NAMED = 5  # skipped files or folders named for one why (status.json, `status`, the log); beyond, a count (rev11c)
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


@dataclass
class Entry:
    first_seen: float
    last_event: float
    size: int = -1
    mtime: float = -1.0
    closed: bool = False
    stable_since: float | None = None
    opens: int = 0  # descriptors open on it as IN_OPEN, IN_CLOSE_WRITE and IN_CLOSE_NOWRITE count them

    @property
    def done(self) -> bool:
        """Its writer closed it and no one has it open again: a writer back at it (an upload's reopen, which no
        write may follow for a while) opened it after the close, and a reader's open (the decode check's) ends."""
        return self.closed and self.opens == 0


class Tracker:
    """Files seen in the inbox and when they last changed; thread-safe, every file queued once."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.entries: dict[Path, Entry] = {}
        self.lock = threading.Lock()

    def touch(self, path: Path, closed: bool = False, now: float | None = None) -> None:
        """An event on ``path``: it is (still) being written, so its settle timer starts again."""
        now = time.monotonic() if now is None else now
        with self.lock:
            entry = self.entries.setdefault(path, Entry(now, now))
            entry.last_event, entry.closed = now, closed
            entry.stable_since = None
            if closed:
                entry.opens = max(0, entry.opens - 1)

    def opened(self, path: Path, opening: bool) -> None:
        """IN_OPEN (``opening``) or IN_CLOSE_NOWRITE on a tracked file: who holds it open (Entry.done). No timer starts
        again: a reader opens it too, the daemon's own decode check among them. Never below 0 (opened before the
        watch began)."""
        with self.lock:
            entry = self.entries.get(path)
            if entry is not None:
                entry.opens = max(0, entry.opens + (1 if opening else -1))

    def seen(self, path: Path, now: float | None = None) -> None:
        """A rescan found ``path``: track it if new, without restarting a timer."""
        now = time.monotonic() if now is None else now
        with self.lock:
            self.entries.setdefault(path, Entry(now, now))

    def forget(self, path: Path) -> None:
        with self.lock:
            self.entries.pop(path, None)

    def closed(self, path: Path) -> bool:
        """Whether the last event on ``path`` was its writer's close (IN_CLOSE_WRITE) and no one opened it since
        without closing it (Entry.done): never so in polling mode, nor for a file a rescan found
        (settle.DecodeCheck.ready holds an empty one longer then)."""
        entry = self.entries.get(path)
        return entry is not None and entry.done

    def __len__(self) -> int:
        return len(self.entries)

    def ready(self, now: float | None = None) -> list[Path]:
        """Files whose size and mtime held still for the settle time, in arrival order."""
        now = time.monotonic() if now is None else now
        out = []
        with self.lock:
            items = sorted(self.entries.items(), key=lambda kv: kv[1].first_seen)
        for path, entry in items:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                self.forget(path)
                continue
            if (st.st_size, st.st_mtime) != (entry.size, entry.mtime) or entry.stable_since is None:
                entry.size, entry.mtime, entry.stable_since = st.st_size, st.st_mtime, now
            # IN_CLOSE_WRITE says the writer is done: a short settle is enough then.
            settle = min(self.settle, 0.2) if entry.done else self.settle
            if now - max(entry.stable_since, entry.last_event) >= settle:
                out.append(path)
        return out


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
        return False  # inside a folder named like a picture: skipped, with a warning (skipped_folders)
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


def skipped_folders(inbox: Path, exclude: tuple[Path, ...] = ()) -> dict[str, str]:
    """Folders the scan passes over that a person may have meant as input, each with why (issue 9), and camera RAW
    files (why: RAW_WHY).

    A folder named like a picture (``x.jpg/``) and a hidden folder (``.photos/``) would otherwise sit
    in the inbox for ever, unseen by `status`.
    """
    found: dict[str, str] = {}
    for top, dirs, files in os.walk(inbox):
        here = Path(top)
        under = "" if here == inbox else here.relative_to(inbox).as_posix() + "/"  # once a folder, not once a RAW
        found.update({under + name: RAW_WHY for name in files if is_camera_raw(name) and not ignored(name)})
        for name in list(dirs):
            rel = under + name
            if name.startswith("."):
                found[rel] = "a hidden folder: nothing in it is processed; move its pictures into the inbox"
            elif picture_named(name):
                found[rel] = "a folder named like a picture, not a picture: move the picture itself into the inbox"
            if rel in found or (here / name) in exclude or (here / name).is_symlink():
                dirs.remove(name)
    return found


def skipped_groups(skipped: dict[str, str]) -> list[tuple[str, str, list[str]]]:
    """(kind, why, every name sorted) for each why among skipped_folders' finds, kind "file" (a camera RAW) or
    "folder". A RAW+JPEG card leaves a RAW per photo in the inbox for good, and each was its own warning at every
    start, its own entry in status.json (written every second) and its own line of `status` (rev11c)."""
    groups: dict[str, list[str]] = {}
    for rel, why in sorted(skipped.items()):
        groups.setdefault(why, []).append(rel)
    return [("file" if why == RAW_WHY else "folder", why, names) for why, names in groups.items()]


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
