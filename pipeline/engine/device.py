"""Which device a run uses, checked before any work starts.

A wrong name (``banana``) is refused without importing torch; a device that does not exist here (``cuda`` on a
CPU-only box) is one line that says what was asked, what exists, and what to do, instead of torch's traceback.
"""
from __future__ import annotations

import functools
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DeviceError

if TYPE_CHECKING:
    import torch

NAMES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
CHOICES = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


def check_name(name: str) -> None:
    """The spelling only (no torch): the CLI and `validate` call this before anything slow."""
    if not isinstance(name, str) or not NAMES.fullmatch(name):
        raise DeviceError(f"unknown device {name!r}", fix=f"Use {CHOICES}")


def available() -> list[str]:
    """The devices torch can use on this machine, e.g. ['cpu', 'cuda:0']."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        found.append("mps")
    return found


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (no torch): what a CPU measurement was made on (benchmarks, the precision record).
    Read once: every run asks (precision auto's key), and /proc/cpuinfo is long on a many-core server."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pick_device(name: str = "auto") -> "torch.device":
    import torch

    check_name(name)
    found = available()
    if name == "auto":
        return torch.device(next((d for d in ("cuda:0", "mps") if d in found), "cpu").split(":")[0])
    if (f"{name}:0" if name == "cuda" else name) not in found:
        raise missing(name, _why(name, torch), found)
    return torch.device(name)


def missing(name: str, why: str, found: list[str]) -> DeviceError:
    """The one sentence for a device this machine cannot give, from the engine (torch asked) and the CLI (judged
    before torch by device_here): each built its own, and the CLI's wrapped device_here's own "was asked for"."""
    return DeviceError(f"device {name!r} was asked for, but {why}; devices here: {', '.join(found)}",
                       fix="Use one of those, or auto")


def _why(name: str, torch) -> str:
    if name.startswith("cuda") and torch.version.cuda is None:
        return f"this torch ({torch.__version__}) was built without CUDA"
    if name.startswith("cuda") and not torch.cuda.is_available():
        return "torch sees no CUDA GPU (check `nvidia-smi` and the driver)"
    if name.startswith("cuda"):
        return f"torch sees {torch.cuda.device_count()} CUDA GPU(s)"
    return "this torch has no MPS (Apple GPU) support here"


# The device's out of memory raised as a plain RuntimeError (torch.AcceleratorError, a RuntimeError, from 2.8):
# torch's CPU allocator ("can't allocate memory", checked with torch.empty(2**50)); a CUDA call that fails to
# allocate ("CUDA error: out of memory", e.g. at a context's or a kernel's launch) and cuBLAS's workspace
# ("CUBLAS_STATUS_ALLOC_FAILED"): torch's messages, classified by their words (no GPU here to make them).
OUT_OF_MEMORY = re.compile(r"can't allocate memory|CUDA error: out of memory|CUBLAS_STATUS_ALLOC_FAILED")


def out_of_memory(exc: BaseException) -> bool:
    """Out of memory on the GPU (torch.OutOfMemoryError, or a RuntimeError in OUT_OF_MEMORY's words) or of host
    memory: torch's allocator's RuntimeError, or a MemoryError from numpy or Pillow (the working copies made in a
    batch). The batch and the lone path ask this one question: caught as OutOfMemoryError alone, a batch out of
    host memory failed every photo in it (each fits alone) instead of running each alone."""
    import torch

    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or (
        isinstance(exc, RuntimeError) and OUT_OF_MEMORY.search(str(exc)) is not None)


def after_oom(engine, exc: Exception, device: "torch.device", settings, retries: list[str]):
    """The next try's (device, settings) after ``exc`` on ``device``, or ``exc`` raised again: out of memory is
    retried at 3/4 the size above 256 px on any device (a CPU engine's host runs out too: its fallback is
    itself, and it was raised at once), then on the engine's fallback device where that is another one."""
    import torch

    if not out_of_memory(exc):
        raise exc
    engine.cache.clear()  # the cached Grams hold the device's memory (the host's, on a CPU engine) too
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if settings.size > 256:
        retries.append(f"out of memory at {settings.size} px on {device}; retried at {int(settings.size * 0.75)} px")
        return device, settings.replace(size=int(settings.size * 0.75))
    if device == engine.fallback_device:
        raise exc
    retries.append(f"out of memory on {device}; this job retried on {engine.fallback_device} "
                   f"(the next job starts on {engine.device} again)")
    return engine.fallback_device, settings
