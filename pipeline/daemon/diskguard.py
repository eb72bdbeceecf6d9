"""A full disk pauses claiming, and claiming resumes by itself when space returns (issue 9).

ENOSPC and EDQUOT are the machine's fault, never the photo's: the job that hit one waits in work/
(no attempt charged), no new file is claimed, and every few seconds the folders we write are
checked: free space over a floor AND a small probe write that succeeds (free blocks alone miss quotas).
A folder that cannot be written for another reason (read-only, a file in its place, no write access: folder_faults.py)
takes the same road, and its own folder is probed too (rev8b findings 2, 4).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import structlog

from ..fsio import free_bytes
from .folder_faults import FolderFault, probe_write

log = structlog.get_logger("style-pipeline")
CHECK_SECONDS = 2.0
RESUME_FREE_BYTES = 2 << 20  # a 384 px output and its log are a few hundred KB
TELL_AGAIN = 3600.0  # a fault the probe cannot see (it would pause each try) is told at most once an hour


class DiskGuard:
    """The disk pause, held in one place: a full disk met anywhere pauses claiming here, and claiming resumes only
    when every folder we write has space over the floor and takes a probe write (free blocks alone miss quotas)."""

    def __init__(self, folders: Callable[[], Iterable[Path]], clock: Callable[[], float] = time.monotonic) -> None:
        self.folders, self.clock = folders, clock
        self.state: dict | None = None  # {"folder", "free_mb"} while paused
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
        self.state = {"folder": str(folder), "free_mb": free, **({"fix": fault.fix} if fault else {})}
        self.checked = self.clock()
        return news

    def _news(self, fault: FolderFault | None) -> bool:
        """A pause begun, or a folder fault other than the one paused on. A fault's fix told within TELL_AGAIN is
        not news again: one the probe cannot see (the probe writes, the job's write fails) would pause each try."""
        if self.state is not None and (fault is None or self.state.get("fix") == fault.fix):
            return False
        if fault is None:
            return True
        if self.clock() - self.told.get(fault.fix, -TELL_AGAIN) < TELL_AGAIN:
            return False
        self.told[fault.fix] = self.clock()
        return True

    def paused(self) -> bool:
        """True while claiming waits for space; looks again every CHECK_SECONDS and resumes by itself."""
        if self.state is None:
            return False
        if self.clock() - self.checked < CHECK_SECONDS:
            return True
        self.checked = self.clock()
        fault = "fix" in self.state
        if fault and not writable(Path(self.state["folder"])):
            self.told.pop(self.state["fix"], None)  # a real outage the probe sees: its return after a resume is news
            return True  # status keeps naming the fault and its fix until that folder takes a write
        short = [f for f in self.folders() if not writable(f)]
        if short:
            self.state = {"folder": str(short[0]), "free_mb": measure(short[0]) >> 20}
            return True
        log.info("the folder takes writes again; claiming resumes" if fault else "disk space is back; claiming "
                 "resumes", waited_in=self.state["folder"])
        self.state = None
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
