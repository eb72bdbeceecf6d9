"""A photo's sidecar on its way into a job folder (Spool.claim): copied in before the photo moves, with the inbox
file's identity, so the claim never splits a pair and removes the inbox's copy only while it is still that file
(Spool.let_go_sidecar). Out of spool.py to keep it one sitting long."""
from __future__ import annotations

import os
from pathlib import Path

from ..fsio import NO_WAIT, FileBusy, NotRegularFile, open_regular, write_atomic
from .spool_count import SIDECARS
from .spool_job import Job


def sidecar_in(folder: Path, photo: str) -> str | None:
    """A sidecar in a job folder whose record does not name it: only a job claimed by a daemon from before the
    claim rewrite of 2026-11-29 (rev10d), which moved it in, then failed to save; a claim now saves the record first."""
    try:
        return next((n for n in os.listdir(folder) if n != photo and n.lower().endswith(SIDECARS)), None)
    except OSError:
        return None


def copy_in(job: Job, sidecar: Path, inbox: Path) -> None:
    """The sidecar copied into the job folder, with the inbox file's identity to remove it by (let_go_sidecar): a
    copy, not a link, so the inbox file's removal and a link rule (fs.protected_hardlinks, another user's file)
    change nothing. One that cannot be read (another user's 0600, a FIFO swapped in) is recorded so, and the photo
    fails as bad_sidecar naming it (prechecks); it raised out of the claim before, leaving both photos of a shared
    pair unclaimable with a wrong fix (rev10d). Gone meanwhile: the photo goes on with its recipe."""
    try:
        with open_regular(sidecar, NO_WAIT) as source:
            job.sidecar_id = identity_of(os.fstat(source.fileno()))
            data = source.read()
    except FileNotFoundError:
        return
    except FileBusy:  # its writer (Samba, NFS) still holds it: the claim raises it: the photo waits
        raise
    except OSError as exc:
        job.sidecar_error = exc.strerror if isinstance(exc, NotRegularFile) else \
            f"cannot be read by the service user ({exc.strerror})"
        job.sidecar_id = identity(sidecar)
    else:
        write_atomic(data, job.dir / sidecar.name, replace=False)
    job.sidecar, job.sidecar_from = sidecar.name, str(sidecar.relative_to(inbox))


def identity_of(st: os.stat_result) -> list[int]:
    """Which file a name holds: a sidecar saved again under its name (even on a reused inode) is another file."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def identity(path: Path) -> list[int] | None:
    try:
        return identity_of(os.lstat(path))
    except OSError:
        return None
