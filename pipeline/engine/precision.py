"""``precision: auto``, measured per device instead of assumed (issue 13).

Why a probe: bf16 autocast halves the network's memory traffic on a GPU with bf16 tensor cores, but it is slower on
CPUs without bf16 instructions and it may cost quality (the Gram's 4th-power scale). So the choice is made from two
measurements on the device itself: the loss pass (forward and backward through the engine's real loss) timed in
the device's default precision and in bf16, and the same few steps run in fp32, the default and bf16, each result
judged in plain fp32. bf16 is chosen only when its pass is faster by at least FASTER_BY and its judged loss is at
most WITHIN above fp32's (:func:`decide`).

Why a record: the probe takes seconds to minutes, and a daemon must reach its first step fast. It runs once, by
``style-pipeline precision --probe`` or ``make bench-gpu``, and is written (atomically, merged with other devices'
records) to ``precision.json`` in the weights cache's folder, keyed by the device's name and the torch version.
``auto`` reads it when a run builds its loss (a small JSON read, remembered per file version); with no record it
is tf32 on CUDA and fp32 elsewhere. A record that is corrupt or does not match its key is ignored with a warning:
a bad cache file costs the speed-up, never a job.
"""
from __future__ import annotations

import json
import statistics
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image

from ..fsio import write_json
from . import images
from .device import cpu_model
from .settings import Settings
from .weights_cache import cache_dir

FILE = "precision.json"
SCHEMA = "style-pipeline precision v1"
CHOICES = ("fp32", "tf32", "bf16")
FASTER_BY = 0.05  # a bf16 pass under 5% faster is within a contended machine's noise: not worth its rounding
WITHIN = 0.01  # the judged loss may be at most 1% above fp32's at the same steps (issue 13)
PROBE = {"cuda": (512, 30), "cpu": (64, 10)}  # (size, steps): seconds on a GPU, a minute or two on a slow CPU


class RecordWarning(UserWarning):
    """The precision record could not be used; the run goes on with the default precision."""


def default(device: torch.device) -> str:
    """What auto means with nothing measured: TF32 on CUDA (free on Ampere and later), plain fp32 elsewhere."""
    return "tf32" if device.type == "cuda" else "fp32"


def resolve(device: torch.device, precision: str) -> str:
    """The precision a run on ``device`` actually uses: fp32, tf32 or bf16 (what the job log records)."""
    if precision == "auto":  # a record passes the guards below too: a tf32 record read off CUDA is fp32
        return resolve(device, recorded(device) or default(device))
    if precision == "tf32" and device.type != "cuda":
        return "fp32"  # TF32 is a CUDA matmul mode; elsewhere it is plain fp32
    if precision == "bf16" and device.type not in ("cuda", "cpu"):
        return "fp32"  # MPS: no bf16 autocast here
    return precision


def autocast(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: no autocast), setting CUDA's TF32 flags to match.

    The flags are process-wide, so they are set as each run builds its loss, from that run's precision."""
    resolved = resolve(device, precision)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = resolved == "tf32"
        torch.backends.cudnn.allow_tf32 = resolved == "tf32"
    return torch.bfloat16 if resolved == "bf16" else None


def faster(device: torch.device, pass_ms: dict[str, float]) -> bool:
    """Is bf16's loss pass faster than the default precision's by at least FASTER_BY?"""
    return pass_ms["bf16"] < pass_ms[default(device)] * (1 - FASTER_BY)


def decide(device: torch.device, pass_ms: dict[str, float], judged: dict[str, float] | None) -> str:
    """bf16 when its loss pass is faster than the default's by FASTER_BY and its judged loss is at most WITHIN
    above fp32's; else the default. A lower loss than fp32's is no fault: both ran the same steps. ``judged`` None
    (not measured, see :func:`probe`) never gives bf16."""
    close = judged is not None and judged["bf16"] <= judged["fp32"] * (1 + WITHIN)
    return "bf16" if faster(device, pass_ms) and close else default(device)


def explain(device: torch.device, pass_ms: dict[str, float], judged: dict[str, float] | None) -> str:
    """The decision in one line, for the CLI, the benchmark and the record."""
    base = default(device)
    speed = f"bf16's loss pass takes {pass_ms['bf16'] / pass_ms[base]:.2f}x the time of {base}'s"
    if judged is None:
        why = "not judged, so not chosen" if faster(device, pass_ms) else f"not judged: not {FASTER_BY:.0%} faster"
        return speed + f" (its runs were {why})"
    return speed + f"; its judged loss is {100 * (judged['bf16'] / judged['fp32'] - 1):+.2f}% against fp32's"


# --- the record -------------------------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    """The card's name on CUDA; the CPU's model elsewhere (the threads it ran with are in the record, not the key:
    both precisions scale with them alike, and a daemon and the probe's command may run with different counts)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model() if device.type == "cpu" else device.type


def key(device: torch.device) -> str:
    return f"{device_name(device)} | torch {torch.__version__}"


def record_path() -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / FILE


# (path, inode, mtime, size, key) -> choice: read (and warned about) once per version. The inode because
# write_json renames a new file into place: two writes within the clock's tick, same size, differ only in it.
_seen: dict[tuple, str | None] = {}


def recorded(device: torch.device) -> str | None:
    """The recorded choice for this device and torch, or None (nothing recorded, or a record we cannot trust)."""
    path = record_path()
    try:
        stat = path.stat() if path else None
    except OSError:
        return None
    if stat is None:
        return None
    memo = (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size, key(device))
    if memo not in _seen:
        _seen[memo] = _read_choice(path, device)
    return _seen[memo]


def _read_choice(path: Path, device: torch.device) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return _distrust(path, f"it cannot be read as JSON ({exc})")
    devices = _devices(data)
    if devices is None:
        return _distrust(path, f"it is not a {SCHEMA!r} file")
    entry = devices.get(key(device))
    if entry is None:
        return None  # measured elsewhere only: this device keeps its default, quietly
    if not isinstance(entry, dict) or entry.get("choice") not in CHOICES:
        return _distrust(path, f"its entry for {key(device)!r} has no choice among {', '.join(CHOICES)}")
    if (entry.get("device"), entry.get("torch")) != (device_name(device), torch.__version__):
        return _distrust(path, f"its entry for {key(device)!r} was measured on {entry.get('device')!r} with torch "
                               f"{entry.get('torch')!r}")
    return entry["choice"]


def _devices(data) -> dict | None:
    """The record's per-device entries, or None when it is not a record of ours (read and write use one rule)."""
    if isinstance(data, dict) and data.get("schema") == SCHEMA and isinstance(data.get("devices"), dict):
        return data["devices"]
    return None


def _distrust(path: Path, why: str) -> None:
    warnings.warn(f"{path}: the precision record is ignored because {why}; precision auto uses the default. "
                  f"Fix: run `style-pipeline precision --probe` to measure again, or delete the file",
                  RecordWarning, stacklevel=2)
    return None


def write_record(device: torch.device, measured: dict) -> Path | None:
    """Add this device's measurement to the record (others' entries kept); None when the cache is off or the
    folder cannot be written (a read-only home under systemd: auto then keeps its default)."""
    path = record_path()
    if path is None:
        return None
    try:
        devices = _devices(json.loads(path.read_text(encoding="utf-8"))) or {}
    except (OSError, ValueError):
        devices = {}  # none yet, or one we would not trust: start a fresh file
    devices[key(device)] = {"device": device_name(device), "torch": torch.__version__, **measured}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_json(path, {"schema": SCHEMA, "devices": devices})
    except OSError:
        return None


# --- the probe --------------------------------------------------------------------------------------------------
def probe(engine, content: Image.Image, style: Image.Image, size: int | None = None, steps: int | None = None,
          repeats: int = 3, judge: bool | None = None) -> dict:
    """Measure the default precision against bf16 on the engine's device; the dict :func:`write_record` stores.

    The same-steps runs are judged only where bf16's pass is faster (``judge=None``), since a slower bf16 is not
    chosen whatever its loss: on a CPU without bf16 instructions its pass is tens of times slower, and its runs
    would take minutes. ``judge=True`` runs them anyway (the benchmark's figures)."""
    device = engine.device
    size, steps = size or PROBE.get(device.type, PROBE["cpu"])[0], steps or PROBE.get(device.type, PROBE["cpu"])[1]
    base = default(device)
    usable = resolve(device, "bf16") == "bf16"  # MPS: no bf16 autocast to measure; the default is recorded
    pass_ms = loss_pass_ms(engine, content, style, size, (base, "bf16"), repeats) if usable else {}
    judged = None
    if usable and (judge or (judge is None and faster(device, pass_ms))):
        judged = {p: judged_loss(engine, content, style, size, steps, p) for p in dict.fromkeys(("fp32", base, "bf16"))}
    choice, why = ((decide(device, pass_ms, judged), explain(device, pass_ms, judged)) if usable
                   else (base, f"bf16 autocast is not available on {device.type}"))
    return {"choice": choice, "why": why, "default": base,
            "size": size, "steps": steps, "repeats": repeats, "threads": torch.get_num_threads(),
            "loss_pass_ms": pass_ms, "judged_loss": judged,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def loss_pass_ms(engine, content: Image.Image, style: Image.Image, size: int, precisions: tuple[str, ...],
                 repeats: int) -> dict[str, float]:
    """Median ms of one forward and backward through the run's real loss, per precision; the precisions
    alternate within each repeat, so a contended machine slows them alike."""
    passes = {p: _pass(engine, content, style, size, p) for p in precisions}
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for fn in passes.values():
        fn()  # warm-up: allocator, autocast caches, cuDNN's algorithm choice
    for _ in range(repeats):
        for p, fn in passes.items():
            started = time.perf_counter()
            fn()
            times[p].append(1000 * (time.perf_counter() - started))
    return {p: statistics.median(t) for p, t in times.items()}


def _pass(engine, content: Image.Image, style: Image.Image, size: int, precision: str):
    problem, hw = engine.build_loss(content, [style], Settings(size=size, scales=1, precision=precision))
    x = engine.layout(images.to_tensor(images.resize_once(content, hw), engine.device)).requires_grad_()

    def once() -> None:
        autocast(engine.device, precision)  # TF32 flags are global: set them for the precision being timed
        x.grad = None
        problem(x)[0].backward()
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
    return once


def judged_loss(engine, content: Image.Image, style: Image.Image, size: int, steps: int, precision: str) -> float:
    """The run's final loss after ``steps`` L-BFGS steps in ``precision``, judged in plain fp32 (TF32 off) on the
    saved 8-bit pixels, as every run's reported loss is."""
    settings = Settings(size=size, steps=steps, scales=1, early_stop_tol=0, precision=precision)
    result = engine.stylize(content, [style], settings)
    autocast(engine.device, "fp32")  # TF32 off before the judge's targets are made, and cached ones dropped:
    engine.cache.clear()  # a tf32 run's Grams would make the judge itself tf32
    judge, hw = engine.build_loss(content, [style], settings.replace(precision="fp32"))
    pixels = engine.layout(images.to_tensor(result.image, engine.device))
    assert tuple(pixels.shape[-2:]) == hw, (pixels.shape, hw)
    with torch.no_grad():
        return float(judge(pixels)[0])
