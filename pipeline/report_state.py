"""The morning page's "state of the service" block: what the daemon last said and what waits on disk, at report time.

The rest of the page is the night's outputs and failures. A night the daemon spent paused (a full disk), stuck or
stopped made neither, and the page read "No outputs. Nothing failed." as if the night had been empty (rev7d). These
lines come from what is on disk, so they are right whether the daemon runs or not: status.json (its word when fresh,
its last word when not), the photos waiting in the inbox, the jobs in spool/work/ and those held there. Nothing here
may cost the page: a damaged status.json reads as "not running" (status.read), and any other failure is one line.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from .daemon import status
from .daemon.watcher import own_folders, scan
from .report import parse_time, shown_time

def service_state(folders: dict[str, Path], config: Path | None = None) -> list[str]:
    """The block's lines for an install's folders (inbox, outbox, spool, as config.read_folders gives them);
    ``config``: its file, for styles_dir (see _styles_dir)."""
    try:
        return _lines(_folders(folders, _styles_dir(config)))
    except Exception as exc:  # noqa: BLE001 - whatever the disk holds, the night's page is still due
        return [f"The state of the service could not be read ({type(exc).__name__}: {exc})."]


def _folders(folders: dict[str, Path], styles_dir: Path | None = None) -> SimpleNamespace:
    """What status.read and the inbox scan ask of a config, from the folders alone (no torch, no styles checked)."""
    spool = folders["spool"]
    return SimpleNamespace(inbox=folders["inbox"], outbox=folders["outbox"], spool=spool, work=spool / "work",
                           done=spool / "done", failed=spool / "failed", styles_dir=styles_dir)


def _styles_dir(config: Path | None) -> Path | None:
    """styles_dir, which the scan leaves out below the inbox (watcher.own_folders): without it, paintings kept in
    inbox/paintings/ were counted as photos waiting (rev9c). None where the config cannot say: a config broken
    since the daemon started still gets its page."""
    from .daemon.config import ConfigError, read_styles_dir

    try:
        return read_styles_dir(config) if config is not None else None
    except (ConfigError, OSError):
        return None


def _lines(config: SimpleNamespace) -> list[str]:
    data = status.read(config)
    lines = [_state_line(data, _last_word(config.spool))]
    waiting = [p.relative_to(config.inbox).as_posix() for p in scan(config.inbox, own_folders(config))] \
        if config.inbox.is_dir() else []
    lines.append(_files(len(waiting), "photo", "waiting in the inbox", waiting) if waiting
                 else "Nothing is waiting in the inbox.")
    if data.get("in_work"):
        lines.append(f"{_count(data['in_work'], 'job')} in spool/work/ (running, waiting to retry, or left for "
                     f"the next start).")
    held = [str(h) for h in _list(_dict(data.get("worker")).get("held"))]
    if held:
        lines.append(_files(len(held), "job", "held in spool/work/: not even moving it to failed/ worked "
                            "(the daemon's log says why)", held))
    passed = status.skipped_listed(data)  # status.json names a few of each why, and counts them all (rev11c)
    folders = [f"{name} ({why})" for kind, why, _, names in passed if kind == "folder" for name in names]
    if folders:
        lines.append(_files(sum(g[2] for g in passed if g[0] == "folder"), "inbox folder", "passed over", folders))
    raws = [name for kind, _, _, names in passed if kind == "file" for name in names]  # skipped.RAW_WHY
    if raws:
        lines.append(_files(sum(g[2] for g in passed if g[0] == "file"), "camera RAW file", "left in the inbox, not "
                            "styled (export a JPEG or TIFF from your photo app, or move them elsewhere)", raws))
    unpaired = [str(s.get("sidecar")) for s in _list(data.get("unpaired_sidecars")) if isinstance(s, dict)]
    if unpaired:
        lines.append(_files(len(unpaired), "sidecar", "in the inbox with no photo to read it (its settings were not "
                            "used; drop a sidecar before or with its photo)", unpaired))
    return lines


def _state_line(data: dict, last: tuple[str, str] | None) -> str:
    """'Service: running', or what is wrong; a daemon that is gone, with its last word when that was not 'stopped'."""
    state = str(data.get("state") or "not running")
    if state == "outside the run window" and data.get("next_window"):
        state += f"; the run window opens {data['next_window']}"
    if state == "not running" and last and last[0] not in ("stopped", "stopping"):
        state += f"; its last word, at {last[1]}: {last[0]}"
    return f"Service: {state}."


def _last_word(spool: Path) -> tuple[str, str] | None:
    """status.json's state and time as written, fresh or not; None when there is none or it cannot be read."""
    data = status.last_word(spool)
    if not isinstance(data.get("state"), str) or not data["state"]:
        return None
    return data["state"], shown_time(parse_time(data.get("updated_at")))


def _files(n: int, noun: str, what: str, names: list[str]) -> str:
    return f"{_count(n, noun)} {what}: {status.named(n, names)}."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []
