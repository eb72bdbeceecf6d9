"""The daemon's state as a file (spool/status.json), so `status` works from another process.

The daemon rewrites it about once a second; `status` reads it and recounts the folders itself,
so it is right even when the daemon is not running.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..fsio import is_disk_full, json_bytes, pid_alive, write_json
from .skipped import NAMED, skipped_groups
from .spool import folder_counts, now_iso
from .watcher import own_folders, scan

STATUS_FILE = "status.json"
STALE_SECONDS = 30


def local_now() -> datetime:
    return datetime.now().astimezone().replace(tzinfo=None)


def window(config):
    """The run window of a config (or a DaemonState), or None when the daemon is always on."""
    if not config.schedule:
        return None
    from ..schedule import Window
    return Window.parse(config.schedule)


@dataclass(frozen=True)
class DaemonState:
    """The daemon's facts at one moment, gathered by the daemon itself (Daemon.facts): status renders them."""

    started_at: str
    phase: str  # starting, running, stopping, stopped
    health: str  # the phase, or what is wrong (disk full, worker dead, stuck)
    worker: dict | None  # alive, restarts, held
    skipped: dict[str, str]
    observer: dict | None
    queue: int
    current: dict | None
    counts: dict[str, int]
    busy_seconds: float
    schedule: dict | None
    now: datetime  # local wall-clock time, from the daemon's clock
    unpaired: dict[str, str] = field(default_factory=dict)  # sidecars no photo will read, with why (sidecars.py)
    unclaimable: list[dict] = field(default_factory=list)  # file, path, error, fix (unclaimable.py)
    sidecar_held: list[dict] = field(default_factory=list)  # file, path, sidecar, why (settle.DecodeCheck)


def snapshot(state: DaemonState) -> dict:
    """What the daemon writes to status.json: one name per fact (README, "Watching it run")."""
    win = window(state)
    now = state.now
    health = state.health
    return {
        "pid": os.getpid(), "started_at": state.started_at, "updated_at": now_iso(),
        "state": health if (win is None or win.is_open(now) or health != state.phase) else "outside the run window",
        "healthy": health == state.phase,  # a worker alive and idle or making progress, claiming not paused
        "worker": state.worker,
        "skipped": [{kind: name, "why": why, "total": len(names)}  # the first NAMED of each why, and their count
                    for kind, why, names in skipped_groups(state.skipped) for name in names[:NAMED]],
        "unpaired_sidecars": [{"sidecar": k, "why": v} for k, v in sorted(state.unpaired.items())],
        "unclaimable": state.unclaimable, "sidecar_held": state.sidecar_held,
        "observer": state.observer, "queue": state.queue, "current": state.current, **state.counts,
        "busy_seconds": round(state.busy_seconds, 1),
        "next_window": win.next_open(now).isoformat(timespec="minutes") if win and not win.is_open(now) else None,
    }


def level_and_tiles(current: dict) -> str:
    """A large print's level and tiles (issue 14), where it has more than one: " (level 2/4, 9 tiles)"."""
    parts = [f"level {current['scale']}/{current['n_scales']}"] if current.get("n_scales", 1) > 1 else []
    parts += [f"{current['tiles']} tiles"] if current.get("tiles", 1) > 1 else []
    return f" ({', '.join(parts)})" if parts else ""


def one_line(s: dict) -> str:
    """For systemd's STATUS=: what `systemctl status` shows."""
    current = s.get("current")
    job = (f"styling {current['file']} step {current['step']}/{current['total_steps']}{level_and_tiles(current)} "
           f"ETA {current['eta_seconds']:.0f}s; " if current else "idle; ")
    wait = f"; next window {s['next_window']}" if s.get("next_window") else ""
    return f"{job}{s['queue']} queued, {s['done']} done, {s['failed']} failed{wait}"


def write(spool: Path, data: dict) -> None:
    """Through the one atomic writer: a temp name unique per process, so two daemons never collide.

    On a full disk a new file cannot be made, so the old one is overwritten in place (its blocks are
    already ours): "paused: disk full" must reach `status` exactly when the disk is full.
    """
    path = spool / STATUS_FILE
    try:
        write_json(path, data, fsync=False)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        text = json_bytes(data)
        with open(path, "r+b") as handle:  # FileNotFoundError if there is none: the caller logs it
            old = handle.seek(0, os.SEEK_END)
            handle.seek(0)
            handle.write(text + b" " * max(0, old - len(text)))  # trailing blanks are valid JSON


def read(config, word: dict | None = None) -> dict:
    """What `status` prints: the daemon's last word (``word``: read elsewhere, status_spare.last_word), checked for
    staleness, plus fresh counts of the folders."""
    data = last_word(config.spool) if word is None else word
    if not alive(data):
        not_running(data, config.inbox)
    failed = sorted(config.failed.glob("*.error.json"), key=lambda p: p.stat().st_mtime)
    data.update(folder_counts(config.done, config.failed, config.work))
    data["queue"] = sum(1 for _ in scan(config.inbox, own_folders(config))) if config.inbox.is_dir() else 0
    data["recent_failures"] = [_error_line(p) for p in failed[-5:]]
    data["unclaimable"] = still_waiting(data.get("unclaimable"))
    data["sidecar_held"] = still_waiting(data.get("sidecar_held"))
    return data


def not_running(data: dict, inbox: Path) -> None:
    """A dead or stopped daemon's last word, made true of now: `healthy` and the worker's and watcher's `alive`
    kept the last write's true after a kill -9 or a clean stop, so a check of `healthy` (README) saw a dead daemon
    as healthy all night (rev8a); its unpaired sidecars are those still there, as with the unclaimable."""
    data.update(current=None, state="not running", healthy=False)
    for part in ("worker", "observer"):
        if isinstance(data.get(part), dict):
            data[part]["alive"] = False
    if isinstance(data.get("unpaired_sidecars"), list):
        data["unpaired_sidecars"] = [e for e in data["unpaired_sidecars"] if isinstance(e, dict)
                                     and os.path.lexists(inbox / str(e.get("sidecar", "")))]


def last_unclaimable(spool: Path) -> list[dict]:
    """The unclaimable files of the last status.json in ``spool`` (running or stopped) that are still there: the
    morning report's line, and the files a restarted daemon does not notify again (unclaimable.py)."""
    return still_waiting(last_word(spool).get("unclaimable"))


def last_word(spool: Path) -> dict:
    """The daemon's last status.json in ``spool`` as written, fresh or not: `status`, the report, the running-folders
    record and a restarted daemon all read it, so it is read here once."""
    return read_object(spool / STATUS_FILE)


def read_object(path: Path) -> dict:
    """A JSON object we wrote, or {} when it is missing, unreadable, or valid JSON but not an object (a null, a
    list: a hand edit, rev6e)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def still_waiting(entries: object) -> list[dict]:
    """The unclaimable (or sidecar-held) files of the daemon's last word that are still there: a stopped daemon's
    list is read by `status` and the report, and a file taken away since must not be shown."""
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and os.path.lexists(str(e.get("path", "")))]


def alive(data: dict) -> bool:
    """A daemon that wrote status.json recently and still runs (``data``: what it wrote)."""
    if not data or data.get("state") == "stopped" or not pid_alive(data.get("pid", 0)):
        return False
    try:
        updated = datetime.fromisoformat(str(data.get("updated_at"))).timestamp()
    except ValueError:
        return False
    return time.time() - updated < STALE_SECONDS


def _error_line(path: Path) -> dict:
    """A failure's line; a note that cannot be read, or lacks its fields (hand-edited, damaged), names its file and
    says so (rev12a F3: `failed: None: None: None`)."""
    try:
        e = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(e, dict) and all(isinstance(e.get(key), str) for key in ("file", "code", "message")):
            return {"file": e["file"], "code": e["code"], "message": e["message"], "fix": e.get("fix")}
        why = "lacks its fields (file, code, message)"
    except OSError as exc:
        why = f"cannot be read ({exc.strerror or exc})"
    except ValueError:
        why = "is not valid JSON"
    return {"file": path.name.removesuffix(".error.json"), "code": "unreadable",
            "message": f"its note {path.name} in failed/ {why}; the photo beside it is kept", "fix": None}


def now_lines(current: dict | None) -> list[str]:
    """A "now:" line for every photo running: a pool's slots and Ray's actors run several at once (``running``),
    and showing the first alone hid the others (rev9e finding 6)."""
    lines = []
    for job in (current.get("running") or [current]) if current else []:
        where = f" on {job['worker']} ({job['node']})" if job.get("worker") else ""
        lines.append(f"now: {job['file']} [{job['recipe']}]{where} step {job['step']}/"
                     f"{job['total_steps']}{level_and_tiles(job)}, loss {job['loss']:.4g}, "
                     f"ETA {job['eta_seconds']:.0f} s")
        if job.get("latest_picture"):
            lines.append(f"latest picture: {job['latest_picture']}")
    return lines


def skipped_listed(data: dict) -> list[tuple[str, str, int, list[str]]]:
    """(kind, why, total, the names listed) for each why in status.json's "skipped": it names the first NAMED of
    each (snapshot), and `total` says how many in all (a file without it, written before rev11c: those listed)."""
    listed: dict[tuple[str, str], list[str]] = {}
    totals: dict[tuple[str, str], int] = {}
    entries = data.get("skipped") if isinstance(data.get("skipped"), list) else []
    for entry in (e for e in entries if isinstance(e, dict)):
        kind = "file" if "file" in entry else "folder"  # a camera RAW (skipped.RAW_WHY), or a folder
        key = (kind, str(entry.get("why")))
        listed.setdefault(key, []).append(str(entry.get(kind)))
        totals[key] = max(totals.get(key, 0), entry["total"] if isinstance(entry.get("total"), int) else 0)
    return [(kind, why, max(totals[kind, why], len(names)), names) for (kind, why), names in listed.items()]


def named(total: int, names: list[str]) -> str:
    """The first NAMED of ``names`` and a count of the rest: "a, b, c, d, e and 295 more"."""
    return ", ".join(names[:NAMED]) + (f" and {total - len(names[:NAMED])} more" if total > len(names[:NAMED]) else "")


def render(data: dict) -> str:
    running = data["state"] != "not running"
    lines = [f"daemon: {data['state']}" + (f" (pid {data['pid']})" if running else "")]
    for kind, why, total, names in skipped_listed(data):
        lines.append(f"skipped {kind}: inbox/{names[0]}: {why}" if total == 1 else
                     f"skipped {total} {kind}s: {named(total, [f'inbox/{n}' for n in names])}: each {why}")
    for sidecar in data.get("unpaired_sidecars") or []:
        lines.append(f"sidecar not used: inbox/{sidecar['sidecar']}: {sidecar['why']}")
    for stuck in data.get("unclaimable") or []:
        lines.append(f"cannot take from the inbox: {stuck.get('file')}: {stuck.get('error')}; fix: {stuck.get('fix')}")
    for held in data.get("sidecar_held") or []:
        lines.append(f"waiting in the inbox: {held.get('file')}: {held.get('why')} ({held.get('sidecar')})")
    if running and data.get("observer"):  # a stopped daemon watches nothing
        lines.append(f"watching with {data['observer']['kind']}: {data['observer']['why']}")
    lines += now_lines(data.get("current"))
    lines.append(f"queue: {data.get('queue', 0)} waiting in the inbox, {data.get('in_work', 0)} in work/")
    lines.append(f"done: {data['done']}   failed: {data['failed']}")
    if data.get("next_window"):
        lines.append(f"next run window opens {data['next_window']}")
    for f in data.get("recent_failures", []):
        lines.append(f"  failed: {f['file']}: {f.get('code')}: {f.get('message')}")
    return "\n".join(lines)
