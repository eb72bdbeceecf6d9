"""Photos the service cannot move out of the inbox: remembered, told once, and listed until they go.

The usual cause is a recipe folder a person made without write access for the service user (`mkdir inbox/scream`
as themself, mode 755): the claim's rename gets EACCES, the photo stays where it is. Before (rev7d finding 3) the
daemon logged one line a minute for it all night and forgot it, so `status`, the morning report, failed/ and the
notices all said nothing. Now each such file is logged and notified once, with a fix that names the folder and
the permission, and status.json lists it (``unclaimable``) until it is claimed or taken away.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable, Iterable

import structlog

from ..errors import Reason
from ..fsio import is_no_permission, service_user, shown
from .folder_faults import writable_fix
from .settle import shown_in

log = structlog.get_logger("style-pipeline")


def blocking_folder(path: Path, exc: OSError) -> Path:
    """The folder the claim's rename was refused in: the photo's own, or the one the error names."""
    return Path(exc.filename).parent if exc.filename else path.parent


def fix_for(path: Path, exc: OSError) -> str:
    """What a person does so the service can take the photo: the folder and the permission, by the error."""
    folder = blocking_folder(path, exc)
    user = service_user()
    name = user.split(" ")[0]
    if exc.errno == errno.EACCES:
        return writable_fix(folder, exc, " to move the photo out") + "; it is taken at the next rescan"
    if exc.errno == errno.EPERM:
        return (f"{shown(str(folder))} does not let {user} move {shown(path.name)} out (the sticky bit, or an "
                f"immutable file): `chmod -t {shown(str(folder))}`, or `chown {name} {shown(str(path))}`")
    if exc.errno == errno.EROFS:
        return writable_fix(folder, exc) + ", or copy the photo elsewhere"
    if exc.errno == errno.EXDEV:  # never copied instead: the claim must stay one atomic move (rev8e)
        return ("inbox and spool are on different mounts (systemd ReadWritePaths or two filesystems): put them under "
                "one folder / re-run install-service and install its unit; it is tried again at each rescan")
    return f"{exc.strerror or exc}: check the photo and {shown(str(folder))}; it is tried again at each rescan"


class Unclaimable:
    """The inbox's files whose claim failed (not for a full disk: that pauses claiming instead). `tell` gets one
    event per new file (the notice); the list prunes itself when a file is claimed after all or taken away."""

    def __init__(self, inbox: Callable[[], Path], tell: Callable[[str, dict], None], last: Iterable[dict] = ()) -> None:
        """``last``: the last run's entries still in the inbox (its status.json), already told. They stay listed
        until this run tries their claim again: claims go one ahead of the worker, so behind a backlog that is
        hours, and a restart meanwhile wrote a status.json without them, the next start telling again (rev8d)."""
        self.inbox, self.tell = inbox, tell
        self.files: dict[str, dict] = {}  # path -> what status.json shows
        self.carried = {str(e["path"]): e for e in last}  # the last run's, not yet tried in this one
        self.told = set(self.carried)  # paths whose notice went out, this run or an earlier one

    def add(self, path: Path, exc: OSError) -> None:
        """Remember a failed claim; log the first time for this file in this run, and tell the first time ever: the
        last run's notices are known from its status.json (status.last_unclaimable), so a restart sent one more
        notice a file (rev7d)."""
        if str(path) in self.files:
            return
        self.carried.pop(str(path), None)
        entry = {"file": shown_in(path, self.inbox()), "path": str(path), "error": exc.strerror or str(exc),
                 "fix": fix_for(path, exc)}
        if exc.errno in (errno.EACCES, errno.EROFS):  # a fix access(2) can see: listing checks it (fixed_since)
            entry["folder"] = str(blocking_folder(path, exc))
        self.files[str(path)] = entry
        log.error("cannot claim; the file stays in the inbox", file=str(path), error=str(exc), fix=entry["fix"])
        if str(path) in self.told:
            return
        self.told.add(str(path))
        code = str(Reason.NO_PERMISSION) if is_no_permission(exc) else errno.errorcode.get(exc.errno or 0, "OSError")
        self.tell("unclaimable", {"file": entry["file"], "reason": code, "message": entry["error"],
                                  "fix": entry["fix"]})

    def listing(self) -> list[dict]:
        """For status.json: the files still in the inbox and not fixed since (one stat each; there are few)."""
        there = {key: os.path.lexists(key) for key in {*self.told, *self.files, *self.carried}}
        for listed in (self.files, self.carried):
            for key in [k for k, entry in listed.items() if not there[k] or fixed_since(entry)]:
                del listed[key]
        self.told = {k for k in self.told if there[k]}  # gone: a new drop is told
        return list(self.files.values()) + list(self.carried.values())


def fixed_since(entry: dict) -> bool:
    """The folder whose write permission (EACCES) or read-only mount (EROFS) refused the claim can be written now:
    the entry goes from the listing at once, not when its claim is tried again, which behind a backlog, or with a
    long rescan_seconds, is hours after the fix (left8's list); status and the report had gone on naming a fixed
    folder. Its notice stays told, and a claim that fails again lists it again. access(2) judges with the service's
    own user and capabilities; EPERM (the sticky bit, an immutable file) and EXDEV are not what it sees, so those
    stay until the claim."""
    folder = entry.get("folder")
    return isinstance(folder, str) and os.access(folder, os.W_OK | os.X_OK)
