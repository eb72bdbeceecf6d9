"""Watching the inbox: one path for inotify and polling, a settle tracker, and a rescan.

Handlers only enqueue into the :class:`Tracker`; the main loop decides what is ready to claim.
"""
from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", ".swp", "~")
SIDECAR_SUFFIXES = (".yaml", ".yml")
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic")
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs")


def ignored(name: str) -> bool:
    """Temporary and hidden names (a browser's .crdownload, rsync's dotfile) are never jobs."""
    return name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES)


def is_sidecar(name: str) -> bool:
    return name.lower().endswith(SIDECAR_SUFFIXES)


def sidecar_for(photo: Path) -> Path | None:
    for suffix in SIDECAR_SUFFIXES:
        candidate = photo.with_suffix(suffix)
        if candidate.is_file() and not candidate.is_symlink():
            return candidate
    return None


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

    def seen(self, path: Path, now: float | None = None) -> None:
        """A rescan found ``path``: track it if new, without restarting a timer."""
        now = time.monotonic() if now is None else now
        with self.lock:
            self.entries.setdefault(path, Entry(now, now))

    def forget(self, path: Path) -> None:
        with self.lock:
            self.entries.pop(path, None)

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
            settle = min(self.settle, 0.2) if entry.closed else self.settle
            if now - max(entry.stable_since, entry.last_event) >= settle:
                out.append(path)
        return out


class Handler(FileSystemEventHandler):
    """Only enqueues: an exception here would end the observer's thread quietly."""

    def __init__(self, inbox: Path, tracker: Tracker) -> None:
        self.inbox, self.tracker = inbox, tracker

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in ("created", "modified", "moved", "closed"):
            return
        raw = event.dest_path if event.event_type == "moved" else event.src_path
        path = Path(os.fsdecode(raw))
        if wanted(path, self.inbox):
            self.tracker.touch(path, closed=event.event_type == "closed")


def wanted(path: Path, inbox: Path) -> bool:
    try:
        rel = path.relative_to(inbox)
    except ValueError:
        return False
    return (1 <= len(rel.parts) <= 2 and not any(ignored(p) for p in rel.parts) and not is_sidecar(path.name)
            and not any(p.lower().endswith(PICTURE_SUFFIXES) for p in rel.parts[:-1]))  # x.jpg/ is skipped


def scan(inbox: Path):
    """Every candidate file in the inbox and its recipe folders (one level deep)."""
    for entry in os.scandir(inbox):
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False) and not ignored(entry.name) \
                and not entry.name.lower().endswith(PICTURE_SUFFIXES):
            for sub in os.scandir(path):
                if not sub.is_dir(follow_symlinks=False) and wanted(Path(sub.path), inbox):
                    yield Path(sub.path)
        elif not entry.is_dir(follow_symlinks=False) and wanted(path, inbox):
            yield path


def skipped_folders(inbox: Path) -> dict[str, str]:
    """Folders the scan passes over that a person may have meant as input, each with why (issue 9).

    A folder named like a picture (``x.jpg/``) and a hidden folder (``.photos/``) would otherwise sit
    in the inbox for ever, unseen by `status`.
    """
    found: dict[str, str] = {}
    tops = [inbox] + [Path(e.path) for e in _dirs(inbox) if not ignored(e.name)]
    for top in tops:
        for entry in _dirs(top):
            rel = Path(entry.path).relative_to(inbox).as_posix()
            if entry.name.startswith("."):
                found[rel] = "a hidden folder: nothing in it is processed; move its pictures into the inbox"
            elif entry.name.lower().endswith(PICTURE_SUFFIXES):
                found[rel] = "a folder named like a picture, not a picture: move the picture itself into the inbox"
    return found


def _dirs(folder: Path) -> list[os.DirEntry]:
    try:
        return [e for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


class Watcher:
    """The observer, restartable by the main loop, plus the rescan."""

    def __init__(self, inbox: Path, tracker: Tracker, mode: str, poll_seconds: float) -> None:
        self.inbox, self.tracker, self.mode, self.poll = inbox, tracker, mode, poll_seconds
        self.observer_class, self.reason = choose_observer(inbox, mode)
        self.observer = None

    def start(self) -> None:
        if self.observer_class is PollingObserver:
            self.observer = PollingObserver(timeout=self.poll)
        else:
            self.observer = Observer()
        self.observer.schedule(Handler(self.inbox, self.tracker), str(self.inbox), recursive=True)
        try:
            self.observer.start()
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                raise OSError(exc.errno, f"out of inotify watches for {self.inbox}: raise "
                              "fs.inotify.max_user_watches (sysctl), or set `watch: polling`") from exc
            raise

    def alive(self) -> bool:
        return self.observer is not None and self.observer.is_alive()

    def restart(self) -> None:
        self.stop()
        self.start()

    def rescan(self) -> int:
        count = 0
        for path in scan(self.inbox):
            self.tracker.seen(path)
            count += 1
        return count

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None
