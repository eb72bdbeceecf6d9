"""status.json's spare place, for a spool that cannot take it (rev9b finding 4).

The disk holding the inbox and the spool remounted read-only (ext4's errors=remount-ro): status.json could not be
written there, so `status` read the last one, stale after 30 s, and said "not running" of a live daemon (healthy
false, naming no folder and no fix); monitoring then restarted it. Now the daemon writes its status beside its
config, in the running-folders record's folder (``.style-pipeline/<config name>.status.json``: found from the
config path alone, and made writable to the service by install-service), and `status` reads that one while the
spool's is stale. It is removed once the spool takes status.json again.
"""
from __future__ import annotations

from pathlib import Path

from ..fsio import write_json
from . import status
from .running import record_path


def spare_path(config_path: str | Path) -> Path:
    record = record_path(config_path)
    return record.with_name(record.name.removesuffix(".running.json") + ".status.json")


def write(config_path: str | Path, snapshot: dict) -> bool:
    """True when written. Never raises: the spool's own failure is what the daemon logs."""
    path = spare_path(config_path)
    try:
        path.parent.mkdir(exist_ok=True)
        write_json(path, snapshot, fsync=False)
    except OSError:
        return False
    return True


def clear(config_path: str | Path) -> bool:
    """True when no spare status is left: the spool's status.json is the daemon's word again."""
    try:
        spare_path(config_path).unlink(missing_ok=True)
    except OSError:
        return False
    return True


def last_word(config_path: str | Path, spool: Path) -> dict:
    """The live daemon's last word: the spool's status.json, or the spare one while the spool's is stale."""
    data = status.last_word(spool)
    if not status.alive(data):
        spare = status.read_object(spare_path(config_path))
        if status.alive(spare):
            return spare
    return data
