"""A full disk pauses claiming, and claiming resumes by itself when space returns (issue 9).

ENOSPC and EDQUOT are the machine's fault, never the photo's: the job that hit one waits in work/
(no attempt charged), no new file is claimed, and every few seconds the folders we write are
checked: free space over a floor AND a small probe write that succeeds (free blocks alone miss quotas).
A folder that cannot be written for another reason (read-only, a file in its place, no write access: folder_faults.py)
takes the same road, and its own folder is probed too (rev8b findings 2, 4).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

import structlog

from ..fsio import free_bytes
from .folder_faults import FolderFault, probe_write

log = structlog.get_logger("style-pipeline")
CHECK_SECONDS = 2.0
RESUME_FREE_BYTES = 2 << 20  # a 384 px output and its log are a few hundred KB
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
    `status` only the last of two faulted folders, and claiming resumed when that one alone was fixed (closing9)."""

    def __init__(self, folders: Callable[[], Iterable[Path]], clock: Callable[[], float] = time.monotonic) -> None:
        self.folders, self.clock = folders, clock
        self.pauses: dict[Path, Pause] = {}  # folder -> why claiming waits on it; empty: claiming goes on
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
        self.pauses[Path(folder)] = Pause("folder_fault" if fault else "disk_full", Path(folder), free, fault)
        self.checked = self.clock()
        return news

    def _news(self, fault: FolderFault | None) -> bool:
        """A pause begun, or a folder fault not paused on yet. A fault's fix told within TELL_AGAIN is not news
        again: one the probe cannot see (the probe writes, the job's write fails) would pause each try."""
        if self.pauses and (fault is None or fault.fix in {f.fix for f in self.faults()}):
            return False
        if fault is None:
            return True
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
            if writable(pause.folder):
                del self.pauses[pause.folder]
                log.info("the folder takes writes again", folder=str(pause.folder))
            else:  # a real outage the probe sees: its return after a resume is news
                self.told.pop(pause.fault.fix, None)
        if self.faults():
            return True  # status keeps naming each fault and its fix until its folder takes a write
        short = [f for f in self.folders() if not writable(f)]
        if short:
            self.pauses = {Path(short[0]): Pause("disk_full", Path(short[0]), measure(short[0]) >> 20)}
            return True
        full = self.full()
        log.info("disk space is back; claiming resumes" if full else "claiming resumes",
                 waited_in=str(full.folder if full else faulted[-1].folder))
        self.pauses = {}
        return False


def writable(folder: Path) -> bool:
    """Space over the floor and a probe write that succeeds."""
    return measure(folder) >= RESUME_FREE_BYTES and probe(folder)


def measure(folder: Path) -> int:
    """Free bytes, making the folder first: a person who frees space by removing the outbox (rm -rf) must not
    leave claiming paused for good (a missing folder measures 0 and nothing else remakes it while paused)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # still full, or not ours to make: measured as it is, and looked at again in CHECK_SECONDS
    return free_bytes(folder)


def probe(folder: Path) -> bool:
    """Can a small file be written here now?"""
    return probe_write(folder, b"\0" * 65536, "space") is None
