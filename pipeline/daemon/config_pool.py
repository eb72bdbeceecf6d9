"""Issue 13's two keys, checked here: ``devices`` (one executor slot per entry) and ``batch`` (photos a pass).

    devices: auto            # the default: one slot per visible GPU; with none, one slot on `device` (today's path)
    devices: [0, 1]          # GPU numbers, or device names: [cuda:0, cuda:1]; [cpu, cpu] runs two CPU slots
    batch: auto              # the default: as many as the free memory holds at the photo's size; 1 off CUDA
    batch: 4                 # at most 4 photos of one recipe and shape through the network together

Only the spelling is checked here (no torch): whether cuda:1 exists is the daemon's start-up check, which names
the devices it sees.
"""
from __future__ import annotations

from typing import Any

from ..errors import DeviceError
from .yaml_read import Problems

DEVICES_HELP = "auto, or a list of GPU numbers or device names, e.g. [0, 1], [cuda:0, cuda:1] or [cpu, cpu]"


def pool_options(data: dict, problems: Problems) -> dict[str, Any]:
    """The Config fields ``devices`` and ``batch`` from the YAML (absent or auto: None)."""
    return {"devices": _devices(data.get("devices", "auto"), problems), "batch": _batch(data.get("batch", "auto"),
                                                                                        problems)}


def device_name(entry: Any) -> str:
    """0 -> cuda:0; a name is kept. Raises DeviceError for anything else (auto means nothing inside a list)."""
    from ..engine.device import check_name  # the spelling only: no torch here

    if isinstance(entry, int) and not isinstance(entry, bool) and entry >= 0:
        return f"cuda:{entry}"
    check_name(entry)
    if entry == "auto":
        raise DeviceError("auto names no one device", fix="List the devices themselves, or write devices: auto")
    return entry


def _devices(value: Any, problems: Problems) -> tuple[str, ...] | None:
    if value is None or value == "auto":
        return None
    if not isinstance(value, list) or not value:
        problems.add(("devices",), f"must be {DEVICES_HELP} (got {value!r})")
        return None
    names = []
    for index, entry in enumerate(value):
        try:
            names.append(device_name(entry))
        except DeviceError as exc:
            problems.add(("devices", index), str(exc))
    return tuple(names)


def _batch(value: Any, problems: Problems) -> int | None:
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.add(("batch",), f"must be auto or a whole number >= 1 (got {value!r})")
        return None
    return value
