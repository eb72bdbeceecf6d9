"""A folder the daemon writes that cannot be written is the machine's fault, never the photo's (rev8b findings 2, 4).

The outbox's filesystem remounted read-only in the night (ext4 errors=remount-ro, a NAS share), a file written
where the outbox or a recipe's outbox folder was (a sync tool, a script's `> outbox`), an outbox without write access
for the service user: before, every photo of the night was styled and then failed, as permission_denied told to
chmod the daemon's own temp file, or as too_many_attempts with no fix named. Now it takes the full disk's road
(diskguard.py): the job waits in work/ uncharged, claiming pauses, status and one notice name the folder and the
fix, and claiming resumes by itself once a probe write there succeeds. The fixes' wording is shared with the
claim's (unclaimable.fix_for), so a read-only mount reads the same wherever it is met.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import Reason
from ..fsio import service_user, shown, write_atomic
from .outputs import make_folder

CODES = {errno.EROFS: Reason.READ_ONLY, errno.ENOTDIR: Reason.NOT_A_FOLDER, errno.EACCES: Reason.NO_PERMISSION}
RESUMES = "; claiming resumes by itself once it can be written"


@dataclass(frozen=True)
class FolderFault:
    """What a person fixes: ``folder`` (a read-only or unwritable folder, or the file where a folder must be),
    ``code`` (the notice's reason, of the one vocabulary: EROFS, ENOTDIR, permission_denied), ``fix`` (naming the
    folder)."""

    folder: Path
    code: Reason
    fix: str


def fixes(faults: Iterable[FolderFault]) -> str:
    """Every fault's fix in one line, the resume's promise said once: a single fault's is its own fix, as before."""
    return "; ".join(fault.fix.removesuffix(RESUMES) for fault in faults) + RESUMES


def writable_fix(folder: Path, exc: OSError, purpose: str = "") -> str:
    """The fix for a folder the service user cannot write (EACCES) or that is on a read-only mount (EROFS)."""
    where, user = shown(str(folder)), service_user()
    if exc.errno == errno.EROFS:
        return f"{where} is on a read-only mount: mount it read-write"
    name = user.split(" ")[0]
    return (f"the service user {user} needs write access to {where}{purpose}: `chmod g+w {where}` with {name} "
            f"in the folder's group, or `chown {name} {where}`")


def folder_fault(exc: BaseException, outbox: Path, spool: Iterable[Path]) -> FolderFault | None:
    """The folder at fault when ``exc`` is a write under the outbox or the ``spool``'s folders that no photo could
    change; None for anything else (the photo's own errors, unknown ones: the caller's classes). EROFS is the
    machine's wherever it is met; EACCES and ENOTDIR only under those folders."""
    if not isinstance(exc, OSError) or exc.errno not in CODES or not exc.filename:
        return None
    target = Path(os.fsdecode(exc.filename2 or exc.filename))  # a link's or a rename's: where it was going
    roots = [Path(outbox), *map(Path, spool)]
    if exc.errno != errno.EROFS and not any(root == target or root in target.parents for root in roots):
        return None
    if exc.errno == errno.ENOTDIR:
        found = not_a_folder(target, roots)
        if found is None:  # moved away already: the next try tells
            return None
        return FolderFault(found, CODES[exc.errno], in_the_way(found, found == roots[0]) + RESUMES)
    return FolderFault(target.parent, CODES[exc.errno], writable_fix(target.parent, exc) + RESUMES)


def unknown_fault(folder: Path, exc: OSError) -> FolderFault:
    """A write in ``folder`` refused for a cause no fix is known for (EIO: a failing disk, an NFS server gone), with
    space over the floor: a fault of the folder naming the error, not "disk full (68561 MB free ...)" (rev10e)."""
    return FolderFault(Path(folder), Reason.CANNOT_WRITE,
                       f"{shown(str(folder))}: cannot be written ({exc.strerror or exc}): check the disk or the share"
                       + RESUMES)


def spool_fault(exc: BaseException, config) -> FolderFault | None:
    """:func:`folder_fault` for the ``config``'s outbox and spool folders: the folders the daemon writes."""
    return folder_fault(exc, config.outbox, (config.spool, config.work, config.done, config.failed))


def claim_fault(exc: OSError, config) -> FolderFault | None:
    """The claim's error as a folder fault: spool/work (or the spool) refused the job folder's mkdir or its record
    (rev9b finding 2: one pause and one notice, not an "unclaimable" notice per photo all night). A rename's error
    (``filename2`` set) is the inbox's side, not work/'s: the job folder was just made there, so the photo's own
    folder refused the move and that photo alone is unclaimable (unclaimable.py)."""
    return None if exc.filename2 else spool_fault(exc, config)


def start_faults(config) -> dict[Path, FolderFault]:
    """The outbox, done/ and failed/ that cannot be written at start, each with its fault: a pause, never a refusal
    to start (rev9b finding 1). A running daemon pauses on them and resumes once fixed; a restart meanwhile (a
    watchdog kill, an upgrade, a reboot with the NAS still read-only) exited 2 with "not writable by this user; fix
    its permissions" (wrong for a read-only mount) or "cannot create (File exists)", and systemd restarted it every
    10 s. The inbox and work/ are not here: without them nothing can be claimed, so those still refuse to start.
    A recipe's outbox folder that is there but no folder (a file, a link to a share not mounted) is met here too:
    `once` with nothing waiting exited 0 without a word, and `run` found it only after a photo's whole run (rev10b);
    one that is missing is made by the first output, as before."""
    found = {}
    recipes = [config.outbox / name for name in config.recipes]
    for folder in (config.outbox, config.done, config.failed, *(r for r in recipes if _not_a_folder(r))):
        fault = write_fault(Path(folder), config)
        if fault is not None:
            found[Path(folder)] = fault
    return found


def _not_a_folder(path: Path) -> bool:
    return os.path.lexists(path) and not path.is_dir()


def write_fault(folder: Path, config) -> FolderFault | None:
    """The folder fault a probe write in ``folder`` meets (made first, as a job's write would), None if it takes it."""
    try:
        make_folder(folder)  # a file in its place: ENOTDIR, "move the file away"
    except OSError as exc:
        return spool_fault(exc, config)
    refused = probe_write(folder, b"", "start")
    return None if refused is None else spool_fault(refused, config)


def probe_write(folder: Path, data: bytes, kind: str) -> OSError | None:
    """The error a small write in ``folder`` meets now (None: it took it): the one probe behind the start's check
    (write_fault) and the pause's resume (diskguard.refusal), which had each written their own."""
    path = folder / f".{kind}-probe-{os.getpid()}"
    try:
        write_atomic(data, path, fsync=False)
        path.unlink()
    except OSError as exc:
        return exc
    return None


def folder_problem(folder: Path, outbox: bool = False) -> str | None:
    """What keeps ``folder`` from being made or written (None: a folder the daemon can write), in the pause's words:
    check_folders (the start's inbox and work/, a reload's running and new folders) said "cannot create (File
    exists)" of an outbox linked into a share not mounted, while the start's pause named the link (closing9), and
    "fix its permissions" of a read-only mount."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        found = not_a_folder(folder, [Path(folder.anchor)])
        return in_the_way(found, outbox and found == folder) if found else f"{folder}: cannot create ({exc.strerror})"
    except OSError as exc:
        return f"{folder}: cannot create ({exc.strerror})"
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
    return writable_fix(folder, OSError(errno.EROFS if read_only else errno.EACCES, "cannot be written"))


def in_the_way(found: Path, outbox: bool) -> str:
    """The fix for what stands where a folder must be. A link to a missing target (outbox/starry -> a share not
    mounted tonight) is no file to move away: doing so removed the person's link, and the outputs then landed in a
    local folder, not the share (rev9b finding 3)."""
    if found.is_symlink() and not found.exists():
        target = os.path.normpath(found.parent / os.readlink(found))
        return (f"{shown(str(found))} is a link to {shown(target)}, which is not there (a share not mounted?): "
                "mount it or make that folder")
    label = "the outbox" if outbox else "it"
    return f"{shown(str(found))} is a file: {label} must be a folder: move the file away"


def not_a_folder(target: Path, roots: list[Path]) -> Path | None:
    """The first of ``target``'s folders (from the top, no higher than a root) that is a file, not a folder."""
    for path in reversed([target, *target.parents]):
        if not any(root == path or root in path.parents for root in roots):
            continue
        if os.path.lexists(path) and not path.is_dir():
            return path
    return None


def once_stopped(fix: str, in_inbox: int, in_work: int) -> str:
    """`once`'s line for cron's mail when a folder fault stopped it. It counted work/ alone ("0 photos wait in
    work/" with the photos in the inbox) and kept RESUMES, which a `once` that has exited never does (rev9f #3):
    both places are counted, and the next `once` is named as what takes them up."""
    waiting = in_inbox + in_work
    return (f"stopped: {waiting} photo{' waits' if waiting == 1 else 's wait'} ({in_inbox} in the inbox, "
            f"{in_work} in work/), safe where they are: {fix.replace(RESUMES, '')}; the next `once` takes them up")
