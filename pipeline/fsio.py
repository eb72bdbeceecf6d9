"""One atomic-write helper for every writer, one safe open for every reader of a dropped file, names that always
fit, and the filesystem-error classes.

Why one helper: a fixed temp name (``.status.json.tmp``) shared by two daemons on one inbox let one
daemon rename the other's temp file away and die (issue 9). Every temp name here carries the pid and
random bits, and is short (a hash of the target name), so a 250-byte target never gives a temp name
over the filesystem's limit.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import socket
import stat
import time
import unicodedata
from pathlib import Path
from typing import BinaryIO

NAME_MAX = 255  # bytes, ext4/xfs/btrfs/tmpfs; os.pathconf is asked where it answers
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NO_PERMISSION = (errno.EACCES, errno.EPERM, errno.EROFS)


class NotRegularFile(OSError):
    """A link, FIFO, device, socket or folder where a file to read was expected: refused, never read."""


KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class FileBusy(OSError):
    """Another program holds a kernel lease on the file (Samba's kernel oplocks, an NFS server's delegation) and
    has not let go within the wait: "not yet", never a fault of the file; the reader looks again later."""


BUSY_WAIT = 3.0  # seconds a reader waits out a lease break before FileBusy; the holder lets go in ms on a LAN
NO_WAIT = 0.0  # the main loop's readers never wait out a lease: the first EAGAIN starts its break, a later pass reads
BUSY = (errno.EAGAIN, errno.EWOULDBLOCK)


def open_regular(path: str | Path, busy_wait: float | None = None) -> BinaryIO:
    """The regular file at ``path``, open for reading (blocking, as files are); NotRegularFile for anything else.

    Why: a check by name (lstat, is_file) and then open() leaves a gap in which a FIFO can be swapped in, and a
    plain open() of a FIFO waits for a writer forever: on the main loop the daemon hung, on a worker the stall
    watchdog killed the service. Here the open itself cannot block or follow a link (O_NONBLOCK, O_NOFOLLOW), and
    the kind is checked on the open file (fstat), so what is read is what was checked.
    """
    fd = _open_nonblocking(path, BUSY_WAIT if busy_wait is None else busy_wait)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in KINDS if test(mode)), "a special file")
            raise NotRegularFile(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL,
                                 f"is {kind}, not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_nonblocking(path: str | Path, busy_wait: float) -> int:
    """The descriptor, retried on EAGAIN for up to ``busy_wait`` seconds, then FileBusy.

    Why: on a file under a kernel write lease a non-blocking open starts the lease break and answers EAGAIN at
    once, where a plain open() waited for the holder to let go (fcntl(2), "Leases"); the retries wait as it did,
    bounded. A FIFO never answers a read-only non-blocking open with EAGAIN, so it still cannot hold a reader.
    """
    deadline, pause = time.monotonic() + busy_wait, 0.01
    while True:
        try:
            return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW's answer for a link
                raise NotRegularFile(errno.ELOOP, "is a symbolic link, not a regular file", str(path)) from exc
            if exc.errno not in BUSY:
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise FileBusy(errno.EAGAIN, f"is held open by another program (a lease: Samba, NFS) after "
                                             f"{busy_wait:g} s", str(path)) from exc
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.1)


def temp_name(path: Path) -> Path:
    """``.<hash of the name>.<host>.<pid>.<random>.tmp`` beside ``path``: unique per process and write, and short;
    the host and pid say whose it is, so that :func:`sweep_temps` can tell a dead writer's from a live one's."""
    return path.parent / f".{_name_hash(path.name)}.{HOST_TAG}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _name_hash(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]


HOST_TAG = hashlib.sha1(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:4]
TEMP = re.compile(r"\.([0-9a-f]{10})\.(?:([0-9a-f]{4})\.)?(\d+)\.[0-9a-f]{8}\.tmp")  # temp_name's (host: since rev7b)
STALE_SECONDS = 24 * 3600  # a temp whose writer cannot be asked (another host's, a reused pid) waits this long


def sweep_temps(folder: str | Path, target: str | None = None) -> int:
    """Remove write_atomic's temp files in ``folder`` (of ``target``'s name only, where given) that no live writer
    holds; the bytes freed. Why: a kill -9 inside write_atomic leaves its temp for good (its ``finally`` never
    runs), and a print's checkpoint is gigabytes (rev7b: one hidden beside `--checkpoint` survived the resumed run).
    Whose: this host's with a pid no longer alive goes now; another host's (a shared outbox), a reused pid's or one
    named before the host was in the name goes once untouched for STALE_SECONDS: a live writer's is never taken."""
    prefix = _name_hash(target) if target is not None else None
    freed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = TEMP.fullmatch(entry.name)
        if not match or prefix not in (None, match.group(1)):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and _abandoned(match.group(2), int(match.group(3)), st.st_mtime):
                os.unlink(entry.path)
                freed += st.st_size
        except OSError:
            continue  # gone meanwhile, or not ours to remove: it stays
    return freed


def sweep_tree(root: str | Path) -> int:
    """:func:`sweep_temps` in ``root`` and every folder below it (links not followed); the bytes freed."""
    return sum(sweep_temps(folder) for folder, _, _ in os.walk(root))


def _abandoned(host: str | None, pid: int, mtime: float) -> bool:
    if host == HOST_TAG and not pid_alive(pid):
        return True
    return time.time() - mtime > STALE_SECONDS


def pid_alive(pid: object) -> bool:
    """True while a process with this pid exists (another user's counts). The one copy: status.json's pid and a
    temp name's digits both come from outside (a hand-edited file, a sync tool's copy), so only a positive whole
    number is asked about: os.kill(0, 0) would ask about our own group (always "alive"), a 20-digit pid raises
    OverflowError, which stopped the daemon's start in its temp sweep (rev9d)."""
    if type(pid) is not int or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # another user's process
    return True


# Seconds: a file's mtime is not the daemon's clock. The kernel stamps it from its coarse clock, a tick (up to 10 ms)
# behind time.time(); on a share (an outbox on a NAS, README) the server stamps it from its own clock, which may run
# minutes behind. An hour of older logs parsed costs the tally and the report little (a night's logs are few hundred).
MTIME_SLACK = 3600.0


def written_before(entry: os.DirEntry | Path, moment: float) -> bool:
    """True when the file last changed well before ``moment`` (a timestamp), or is gone. A log is written after the
    time it records, so one changed before a window opened cannot be inside it: one stat (cached on a DirEntry)
    instead of an open and a parse, for the tally and the report alike, however many nights the outbox holds.
    The slack is there because the stamp is another clock's: a log written 2 ms after the window opened can carry
    an mtime from before it, and was skipped (the morning summary said 5 styled for 6 under load); so was every log
    of a window's first minutes on a share whose server's clock ran behind (2 s of slack: one a minute behind)."""
    try:
        return entry.stat().st_mtime < moment - MTIME_SLACK
    except OSError:
        return True


def write_atomic(data: bytes, path: str | Path, replace: bool = True, fsync: bool = True) -> Path:
    """Temp file in the same folder, fsync, then rename (or, with replace=False, link: never overwrites).

    Not mkstemp: its 0600 mode would stick to the output; 0666 here is narrowed by the umask like any file.
    """
    path = Path(path)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # FileExistsError when the name is taken
    finally:
        tmp.unlink(missing_ok=True)
    return path


def json_bytes(data, indent: int = 2) -> bytes:
    """UTF-8 JSON, readable for ordinary non-ASCII names; ASCII escapes when a str holds surrogates.

    Why: os.listdir gives a name that is not UTF-8 (a Latin-1 camera card, a Samba share) as lone surrogates
    (b"caf\\xe9" -> "caf\\udce9"), which UTF-8 refuses: the claim's record and status.json could not be written
    (rev6e). Escaped as \\udce9, json.loads gives the same str back and os functions map it to the same bytes.
    """
    try:
        return json.dumps(data, indent=indent, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, indent=indent, ensure_ascii=True).encode("ascii")


def shown(text: str) -> str:
    """``text`` for a person (a page, a notice, systemd's STATUS=): a name's bytes that are not UTF-8 as \\xe9
    escapes, the file's name byte for byte, never a lone surrogate that a UTF-8 writer refuses (rev6e)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_json(path: str | Path, data, indent: int = 2, replace: bool = True, fsync: bool = True) -> Path:
    return write_atomic(json_bytes(data, indent), path, replace=replace, fsync=fsync)


def split_ext(name: str) -> tuple[str, str, str]:
    """(stem, ".", ext) like rpartition; a leading dot or an "extension" over 16 bytes is part of the stem."""
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    if len(ext.encode("utf-8", "surrogateescape")) > 16:
        return name, "", ""
    return stem, dot, ext


def fit_name(name: str, reserve: int = 0, limit: int = NAME_MAX) -> str:
    """``name`` itself when it fits in ``limit - reserve`` bytes; else a deterministic short form.

    The short form keeps the start of the stem (cut on a character boundary), then ``~`` and 8 hex
    digits of the full name's sha1, then the extension: the same long name always gives the same short
    one, and two long names that share a start still differ.
    """
    room = limit - reserve
    if len(name.encode("utf-8", "surrogateescape")) <= room:
        return name
    stem, dot, ext = split_ext(name)
    tail = f"~{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}{dot}{ext}"
    budget = room - len(tail.encode("utf-8", "surrogateescape"))
    cut = stem.encode("utf-8", "surrogateescape")[:max(budget, 1)]
    return cut.decode("utf-8", "ignore") + tail


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when a library re-raised it as another type (torch.save gives RuntimeError)."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    return any(text in str(exc) for text in ("No space left on device", "Disk quota exceeded"))


def is_no_permission(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_PERMISSION


def sha256_file(path: str | Path) -> str:
    """A file's SHA-256, read in 1 MiB blocks: the one hashing helper for weights, inputs and styles. Here, in the
    base layer, because the job records (progress, joblog) need it and engine/vgg.py, its old home, loads torch into
    the daemon layer (rev9d)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def service_user() -> str:
    """Who the daemon runs as, for a permissions fix a person can act on."""
    try:
        import pwd
        return f"{pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"
    except (KeyError, ImportError):
        return f"uid {os.geteuid()}"


def nfc(name: str) -> str:
    """``name`` in Unicode's composed form (NFC), for comparing names; a name's bytes that are not UTF-8 stay."""
    return unicodedata.normalize("NFC", name)


def spellings(names) -> dict[str, list[str]]:
    """Names by their NFC form: each form -> the names spelt so (two where a Mac's NFD copy of a name lies beside
    the same name typed here: Linux keeps both)."""
    spelt: dict[str, list[str]] = {}
    for name in names:
        spelt.setdefault(nfc(name), []).append(name)
    return spelt


def on_disk(path: Path) -> Path:
    """``path`` as the disk spells it: where no entry has its exact bytes, the one entry of its folder whose NFC
    form is its name's (each missing part in turn, so a folder named the other way is found too). A name typed on
    Linux or Windows (config.yaml, a command line) is NFC, and one copied from a Mac is often NFD ("é" as "e" and a
    combining accent): Linux keeps the bytes as given, so "café.jpg" was "no such file" beside café.jpg (closing9).
    ``path`` itself where nothing (or more than one entry) matches: the caller says what is missing."""
    if os.path.lexists(path) or path.parent == path:
        return path
    folder = on_disk(path.parent)
    try:
        names = spellings(os.listdir(folder)).get(nfc(path.name), [])
    except OSError:  # a folder missing or unreadable: the caller's own check names it
        return folder / path.name
    return folder / names[0] if len(names) == 1 else folder / path.name
