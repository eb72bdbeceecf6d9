"""Settling: a file is claimed once it held still (Tracker) and decodes (DecodeCheck, issue 9).

Quiet time alone (Tracker, fed by the watcher's events and the rescans) claimed a file whose writer paused longer
than `settle_seconds` between chunks, and failed it as truncated while the rest was still coming. Here a file that
does not decode is looked at again once after a longer wait; only if it is unchanged and still broken then is it
claimed, so the worker can move it to failed/ with its reason. A file with a hole before its end is not written
yet, whatever it decodes to (unwritten_gap: a preallocating writer's zeros decode for WebP, TIFF, BMP): it waits
until written, or unchanged for HOLE_WAIT; so does an empty file whose writer has not closed it (an FTP or WebDAV
upload makes its name first: stalled at 0 bytes, it was claimed after 3 s and failed as empty, rev11a). A photo's
sidecar must be quiet too before the claim copies it (sidecar_settled).

This runs on the main loop: the file is opened once (fsio.open_regular: it never waits on a FIFO swapped in
after a check by name) and decoded from that open file, never reopened by name. A file whose lease is being
broken (Samba, NFS: its writer still holds it) is not waited on at all (fsio.NO_WAIT): the first EAGAIN
already starts the break, and a later pass looks again. 0.2 s each cost 5 s a pass for 25 leased files (rev6f A1).

A file whose start no picture format's signature accepts (a text file named .jpg, a PDF renamed .png) is failed at
the door, not behind the queue (DecodeCheck.not_a_picture, mend12a): its header alone is read, under the same waits
as a broken file; a TIFF still uploading (its directory comes last) is a picture's start, left to the claim.
"""
from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable

import structlog
from PIL import Image, UnidentifiedImageError

from ..engine import images
from ..errors import ImageError
from ..fsio import NO_WAIT, FileBusy, NotRegularFile, open_regular, shown
from .spool_job import now_iso

RECHECK_FACTOR, RECHECK_MIN = 10, 3.0  # the longer wait: 10 x settle_seconds, at least 3 s
HOLE_WAIT = 60.0  # a gap not written yet is a writer at work, surely: a minute's stall (Wi-Fi, SMB) is waited out
LEASED, WRITING = "its sidecar is held open by another program", "its sidecar is still being written"
UNREADABLE_PASSES = 3  # a file whose open fails this many passes (EIO, ESTALE) is claimed: the worker fails it
NOT_THE_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)  # the daemon's shortage, never the file's: not counted
HEAD_BYTES = 4096  # what the screen reads of an unidentified file: the signatures, an ftyp box, a TIFF's first tags
log = structlog.get_logger("style-pipeline")


def shown_in(path: Path, inbox: Path) -> str:
    """``path`` as `status` names it: under the inbox, else by its name alone."""
    try:
        return shown(str(path.relative_to(inbox)))
    except ValueError:
        return shown(path.name)


def decodes(file: BinaryIO, max_pixels: int) -> bool:
    """Whether the picture decodes to its end (a truncated one does not: its writer may be at it still), within
    ``max_pixels`` as the worker decodes it (one over the limit waits the longer wait too, as a broken one, so that
    it lands in failed/ whole)."""
    try:
        with images.opened(file, max_pixels) as img:  # the worker's own limit: over it raises, so waits
            img.load()
        return True
    except Exception:  # noqa: BLE001 - Pillow's plugins raise many types for a broken file: all mean "not yet"
        return False


def unwritten_gap(file: BinaryIO, size: int) -> bool:
    """Whether the file has a hole before its end: a part never written yet (rev8b finding 1). Why: a writer that sets
    the final size first (Windows Explorer over SMB, aria2, `rsync --preallocate`, torrent clients) leaves the rest
    as zeros that a WebP, an uncompressed TIFF or a BMP decodes "fully", so a stall past the settle time had the
    photo claimed and styled from a mostly black picture. The file is left at its start, for the decode.

    Limits: a filesystem without SEEK_HOLE answers "all data" (the kernel's default), and so do some for a region
    fallocate()d but unwritten (ext4, xfs and tmpfs report it as a hole); a file sparse on purpose (`cp
    --sparse=always`) only waits the hole's longer wait, then is claimed as it is; and a writer stalled longer than
    that wait is claimed with its gap, as a stalled plain copy is claimed broken."""
    try:
        return os.lseek(file.fileno(), 0, os.SEEK_HOLE) < size
    except OSError:  # ENXIO, EINVAL: no hole seeking here; the decode alone decides
        return False
    finally:
        file.seek(0)


def accepted(head: bytes) -> bool:
    """Whether some Pillow format's signature check accepts ``head`` as its start (Image.open's first look, on its
    16 bytes): a picture being written, or one the worker names (a TIFF layout Pillow lacks). A check that raises
    on a short start accepts nothing, as in Image.open."""
    Image.init()
    for _, accept in Image.OPEN.values():
        try:
            if accept and accept(head[:16]):
                return True
        except Exception:  # noqa: BLE001 - struct.error, IndexError on a start shorter than the plugin reads
            continue
    return False


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

    def held_open(self, path: Path) -> bool:
        """Whether someone holds ``path`` open as the watcher counted (Entry.opens): its writer, most likely, at it
        still. Never so in polling mode, nor for an open made before the watch began."""
        entry = self.entries.get(path)
        return entry is not None and entry.opens > 0

    def queued_at(self, path: Path) -> str:
        """When ``path`` was first seen, as wall-clock time (its job's queued_at); now when it is not tracked."""
        entry = self.entries.get(path)
        if entry is None:
            return now_iso()
        seen = time.time() - (time.monotonic() - entry.first_seen)
        return datetime.fromtimestamp(seen, timezone.utc).isoformat(timespec="milliseconds")

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


class DecodeCheck:
    """The main loop's memory of files that did not decode yet (or could not be opened): a paused writer gets the
    longer wait, and a broken file is claimed once it is unchanged, so it reaches failed/ with its reason."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.clock = clock  # how long a file stayed unchanged: tests hand in their own, so no wait races the load
        self.wall = wall  # the clock files' mtimes are stamped with, for a sidecar's quiet time
        self.first_failure: dict[Path, tuple] = {}  # path -> ((size, mtime), when it first failed to decode)
        self.open_errors: dict[Path, int] = {}  # path -> passes its open raised (not EMFILE and the like)
        self.held_sidecars: dict[Path, tuple[str, str]] = {}  # photo -> (its sidecar, why: LEASED or WRITING)
        self.pictures: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) whose header named a picture

    def ready(self, path: Path, max_pixels: int, settle_seconds: float, closed: bool = False) -> bool | None:
        """True: claim it. False: wait. None: it is gone.

        ``closed``: the watcher saw its writer close it (inotify's IN_CLOSE_WRITE, watcher.Tracker.closed). An empty
        file not so closed waits HOLE_WAIT, as a gap does: emptiness is no sign of a finished file, and the decode
        cannot tell (nor can SEEK_HOLE: ENXIO at 0), while what a writer still holding it writes would land in
        failed/ beside a note saying it is empty. Closed, and held open by no one since (a writer's reopen, stalled
        before its first byte, holds it: Tracker.opened), it is really empty: the short recheck. With no close
        events (polling, a file found by a rescan) only the quiet time tells, as for a stalled transfer elsewhere.

        Only what the worker fails with its own reason (not_a_regular_file, the permissions fix) is claimed unread;
        any other open error (EMFILE, EIO, ESTALE) raises, and the loop leaves the file for the next rescan; one
        that fails the open UNREADABLE_PASSES times (EIO, ESTALE: not the daemon's EMFILE) is claimed, so the
        worker fails it with that error: it stayed in the inbox with a traceback every rescan (rev6f A4).
        """
        try:
            file = open_regular(path, NO_WAIT)
        except FileNotFoundError:
            self.forget(path)
            return None
        except FileBusy:  # its writer (a Samba or NFS client) still holds it: not written yet, as far as we know
            return False
        except (NotRegularFile, PermissionError):
            return True
        except OSError as exc:
            if exc.errno in NOT_THE_FILES:
                raise
            self.open_errors[path] = self.open_errors.get(path, 0) + 1
            if self.open_errors[path] >= UNREADABLE_PASSES:
                return True
            raise
        with file:
            st = os.fstat(file.fileno())
            if unwritten_gap(file, st.st_size) or (st.st_size == 0 and not closed):  # a writer at it, maybe
                return self._stale(path, st, max(RECHECK_FACTOR * settle_seconds, HOLE_WAIT))
            if decodes(file, max_pixels):
                return True
        return self._stale(path, st, max(RECHECK_FACTOR * settle_seconds, RECHECK_MIN))

    def not_a_picture(self, path: Path, settle_seconds: float) -> ImageError | None:
        """Why a quiet file (Tracker.ready) can never be a picture, once it is: its header names no format Pillow
        reads, and it stayed so, unchanged, for the broken file's longer wait (as ready() claims one). The daemon
        then fails it at once (Daemon._screen), where it waited behind every photo dropped before it, a night's
        backlog, to fail at the worker (mend12a). The header only (Image.open: a few KB, nothing decoded; 0.04 ms,
        bench/screen_bad_drop.py), once per version of a file: a truncated photo passes, and fails when the worker
        decodes it, as before. An empty file, one with a hole, one that cannot be opened (leased, unreadable) or gone
        is none of this check's business: None, and ready() and the claim decide, as for any file.

        Unidentified is not enough: a TIFF that libtiff writes (GIMP, ImageMagick, libvips, scanners, Pillow's own
        compressed ones) has its directory after the image data, so every prefix of it is unidentified while it
        uploads, and a stall of the longer wait failed it at the door, window closed or not (rev12c). A start that
        some format's signature accepts (accepted) is a picture's start: the claim's own waits and the worker decide.
        The explainers are handed the bytes read here, never the name: nothing is reopened by name on the main loop
        (a FIFO swapped in, a lease)."""
        try:
            st = os.lstat(path)
            if self.pictures.get(path) == (st.st_size, st.st_mtime_ns):
                return None
            file = open_regular(path, NO_WAIT)
        except OSError:
            return None
        with file:
            st = os.fstat(file.fileno())
            if st.st_size == 0 or unwritten_gap(file, st.st_size):
                return None
            try:
                Image.open(file).close()  # closes the image, not a file handed in
                head = None
            except UnidentifiedImageError:
                file.seek(0)
                head = file.read(HEAD_BYTES)
            except Exception:  # noqa: BLE001 - a plugin's refusal past the header (too large, ...): the worker's
                return None
        if head is None or accepted(head):
            self.pictures[path] = (st.st_size, st.st_mtime_ns)
            return None
        if self._stale(path, st, max(RECHECK_FACTOR * settle_seconds, RECHECK_MIN)):
            return images.unidentified(path, head)
        return None

    def _stale(self, path: Path, st: os.stat_result, wait: float) -> bool:
        key = (st.st_size, st.st_mtime_ns)
        first = self.first_failure.setdefault(path, (key, self.clock()))
        if first[0] != key:
            self.first_failure[path] = (key, self.clock())
            return False
        return self.clock() - first[1] >= wait

    def sidecar_settled(self, photo: Path, sidecar: Path | None, settle_seconds: float) -> bool:
        """Whether the photo's sidecar is quiet: its mtime ``settle_seconds`` old, or unchanged that long as seen
        here (an mtime from a clock ahead: a share's, a clock stepped back). The claim copies it whole
        (spool_sidecar.copy_in), and one still being written was copied cut short, where a half-written `steps: 300`
        is a valid `steps: 3` (rev11a). Not quiet: the photo waits, told once, as for a leased sidecar."""
        if sidecar is None:
            return True
        try:
            st = os.lstat(sidecar)
        except OSError:  # gone: the photo's recipe; unreadable: copy_in records why
            return True
        if self.wall() - st.st_mtime >= settle_seconds or self._stale(sidecar, st, settle_seconds):
            if self.held_sidecars.get(photo, ("", ""))[1] == WRITING:
                del self.held_sidecars[photo]  # quiet now; a lease met next is told as such (its own entry)
            return True
        self.sidecar_held(photo, str(sidecar), WRITING)
        return False

    def sidecar_held(self, path: Path, sidecar: str, why: str = LEASED) -> None:
        """The claim met the photo's sidecar held open by another program (a lease: Samba, NFS), or still being
        written: the photo waits, as one whose own writer holds it does, and this is logged once. The claim answered
        None and the photo was forgotten: `once` exited 0 with it unstyled and no word why, `run` retried it unsaid
        each rescan (rev10e)."""
        if self.held_sidecars.get(path) != (sidecar, why):
            log.warning(f"the photo waits: {why}", file=str(path), sidecar=sidecar)
        self.held_sidecars[path] = (sidecar, why)

    def held_listing(self, inbox: Path) -> list[dict]:
        """For status.json (``sidecar_held``): the photos waiting on their sidecar (leased, or still being written)
        that are still there (one lstat each; there are few). Logged once, they were missing from `status`, which
        lists other held files."""
        return [{"file": shown_in(photo, inbox), "path": str(photo), "sidecar": shown_in(Path(sidecar), inbox),
                 "why": why} for photo, (sidecar, why) in self.held_sidecars.items() if os.path.lexists(photo)]

    def prune(self) -> None:
        """Forgets the files gone from the inbox (at each rescan; one lstat each, and there are few): ready() is
        never asked about them again, so a night's broken, unreadable or waiting files stayed here (rev11a)."""
        for memory in (self.first_failure, self.open_errors, self.held_sidecars, self.pictures):
            for path in [path for path in memory if not os.path.lexists(path)]:
                del memory[path]

    def forget(self, path: Path) -> None:
        self.first_failure.pop(path, None)
        self.open_errors.pop(path, None)
        self.pictures.pop(path, None)
        self.held_sidecars.pop(path, None)
