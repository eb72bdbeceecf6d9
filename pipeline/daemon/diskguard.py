"""A full disk pauses claiming, and claiming resumes by itself when space returns (issue 9).

ENOSPC and EDQUOT are the machine's fault, never the photo's: the job that hit one waits in work/
(no attempt charged), no new file is claimed, and every few seconds the folders we write are
checked: free space over a floor AND a small probe write that succeeds (free blocks alone miss quotas).
A folder that cannot be written for another reason (read-only, a file in its place, no write access: folder_faults.py)
takes the same road, and its own folder is probed too (rev8b findings 2, 4). The probe keeps its error: a guarded
folder that became a file, a dangling link or a read-only mount while a full disk waited is that folder fault, with
its fix and notice, not "disk full (74734 MB free in .../outbox)" (rev10c); so is one refused for a cause no fix is
known for (EIO) with space over the floor: a fault naming the error (rev10e).
"""
from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

import structlog

from ..fsio import free_bytes, is_disk_full
from .folder_faults import FolderFault, probe_write, unknown_fault
from .outputs import make_folder

log = structlog.get_logger("style-pipeline")
CHECK_SECONDS = 2.0
RESUME_FREE_BYTES = 2 << 20  # a 384 px output and its log are a few hundred KB
FULL = ("disk_full", None)  # the one full disk's key in DiskGuard.pauses
TELL_AGAIN = 3600.0  # a fault the probe cannot see (it would pause each try) is told at most once an hour


@dataclass(frozen=True)
class Pause:
    """One reason claiming waits, of an explicit ``kind``: "disk_full" (``folder`` short of space, ``free_mb``) or
    "folder_fault" (``fault``: folder_faults.py). The kind was the presence of a "fix" key in a dict (rev9d 12)."""

    kind: Literal["disk_full", "folder_fault"]
    folder: Path
    free_mb: int
    fault: FolderFault | None = None


class DiskGuard:
    """The disk pause, held in one place: a full disk met anywhere pauses claiming here, and claiming resumes only
    when every folder we write has space over the floor and takes a probe write (free blocks alone miss quotas).
    Every folder fault is held, each with its fix, until its own folder takes a write: one held at a time showed
    `status` only the last of two faulted folders, and claiming resumed when that one alone was fixed (closing9).
    ``fault_of`` reads a probe's error as a folder fault (the caller's folders: spool_fault), ``tell`` (set by the
    JobBook) sends the notice of one the probe found."""

    def __init__(self, folders: Callable[[], Iterable[Path]], clock: Callable[[], float] = time.monotonic,
                 fault_of: Callable[[OSError], FolderFault | None] = lambda exc: None) -> None:
        self.folders, self.clock = folders, clock
        self.fault_of = fault_of  # a probe's error as a folder fault (folder_faults.spool_fault), None: not one
        self.tell: Callable[[FolderFault], None] = lambda fault: None  # the notice of a fault the probe found
        # why claiming waits (empty: it goes on): each folder fault by its folder, and one full disk (FULL), its folder
        # the latest met: two were kept, and full(), status and the look's recheck saw only the first (rev10f)
        self.pauses: dict[tuple[str, Path | None], Pause] = {}
        self.checked = 0.0
        self.told: dict[str, float] = {}  # a folder fault's fix -> when it was last told

    def pause(self, folder: Path, fault: FolderFault | None = None) -> bool:
        """Claiming waits; True when this is news (a pause begun, or another folder fault): the caller tells once.
        A ``fault`` (folder_faults.py: read-only, a file where a folder must be, no write access) takes the same
        road as a full disk, and its folder is probed too before claiming resumes."""
        free = free_bytes(folder) >> 20
        news = self._news(fault)
        if news and fault is None:
            log.error("disk full: claiming paused until space returns", folder=str(folder), free_mb=free)
        elif news:
            log.error("a folder cannot be written: claiming paused until it can", folder=str(folder),
                      reason=fault.code, fix=fault.fix)
        kind = "folder_fault" if fault else "disk_full"  # both kinds of one folder held: neither hides the other
        self.pauses[(kind, Path(folder)) if fault else FULL] = Pause(kind, Path(folder), free, fault)
        self.checked = self.clock()
        return news

    def _news(self, fault: FolderFault | None) -> bool:
        """A full disk not paused on yet, or a folder fault not paused on yet. A fault's fix told within TELL_AGAIN
        is not news again: one the probe cannot see (the probe writes, the job's write fails) would pause each try.
        A full disk met while only a fault was held is news too: it went unlogged (rev10c)."""
        if fault is None:
            return self.full() is None
        if fault.fix in {f.fix for f in self.faults()}:
            return False
        if self.clock() - self.told.get(fault.fix, -TELL_AGAIN) < TELL_AGAIN:
            return False
        self.told[fault.fix] = self.clock()
        return True

    def faults(self) -> list[FolderFault]:
        """Every folder fault claiming waits on, in the order met: `status` names each with its fix."""
        return [pause.fault for pause in self.pauses.values() if pause.fault is not None]

    def full(self) -> Pause | None:
        """The full disk claiming waits on, if any."""
        return next((pause for pause in self.pauses.values() if pause.kind == "disk_full"), None)

    def paused(self) -> bool:
        """True while claiming waits; looks again every CHECK_SECONDS and resumes by itself once every folder at
        fault takes a write and every folder we write has space."""
        if not self.pauses:
            return False
        if self.clock() - self.checked < CHECK_SECONDS:
            return True
        self.checked = self.clock()
        faulted = [pause for pause in self.pauses.values() if pause.kind == "folder_fault"]
        for pause in faulted:
            if refusal(pause.folder) is None:
                del self.pauses[("folder_fault", pause.folder)]
                log.info("the folder takes writes again", folder=str(pause.folder))
            else:  # a real outage the probe sees: its return after a resume is news
                self.told.pop(pause.fault.fix, None)
        held = self.full()
        if self.faults():  # status keeps naming each fault and its fix until its folder takes a write
            if held is not None:  # and the full disk beside them as it is now, not as when it was met
                self._recheck_full(held)
            return True
        self.pauses = {}
        short = self._probe_all()
        if short:
            self._hold_full(short[0], logged=held is not None)
        if self.pauses:
            return True
        log.info("disk space is back; claiming resumes" if held else "claiming resumes",
                 waited_in=str(held.folder if held else faulted[-1].folder))
        return False

    def _probe_all(self) -> list[Path]:
        """Probe every folder we write: a folder fault found (the probe's error as fault_of reads it: read-only, a
        file or a dangling link in its place, no write access, or an error no fix is known for, such as EIO, with
        space over the floor: unknown_fault) is paused on and told; those short of space are returned (rev10c)."""
        short = []
        for folder in self.folders():
            exc = refusal(folder)
            fault = None if exc is None or is_disk_full(exc) else self.fault_of(exc) or unknown_fault(folder, exc)
            if fault is not None:
                self.told.pop(fault.fix, None)  # one the probe sees: told whatever the hour
                if self.pause(folder, fault):
                    self.tell(fault)
            elif exc is not None:
                short.append(Path(folder))
        return short

    def _recheck_full(self, held: Pause) -> None:
        """The full disk held beside a folder fault, looked at again: gone once its folder takes a write."""
        del self.pauses[FULL]
        if refusal(held.folder) is None:
            log.info("disk space is back; claiming still waits on a folder", waited_in=str(held.folder))
        else:
            self._hold_full(held.folder, logged=True)

    def _hold_full(self, folder: Path, logged: bool) -> None:
        """The one full disk held, measured again: logged when it begins, not at each look."""
        if logged:
            self.pauses[FULL] = Pause("disk_full", folder, free_bytes(folder) >> 20)
        else:
            self.pause(folder)


def refusal(folder: Path) -> OSError | None:
    """Why a job's write in ``folder`` would fail now (None: it would not), made first as a job's write would (a
    file or a dangling link in its place: ENOTDIR), then space over the floor (short: ENOSPC), then a probe write
    (a quota, a read-only mount, no access). Kept, not a bare False: a fault is no full disk (rev10c)."""
    try:
        make_folder(folder)  # a person who freed space by removing the outbox (rm -rf): made again (rev6e 3)
    except OSError as exc:
        return exc
    if free_bytes(folder) < RESUME_FREE_BYTES:
        return OSError(errno.ENOSPC, "less free space than the floor", str(folder))
    return probe_write(folder, b"\0" * 65536, "space")

