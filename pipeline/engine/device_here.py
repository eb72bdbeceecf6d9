"""Whether this machine can give the CUDA devices a config asks for, judged without importing torch.

`validate` must stay fast and never imports torch (about 2 s on the 2-core box; tests/test_cli.py holds it to that),
so it said OK for `device: cuda` on a CPU-only box, and `run` then stopped at start with exit 2 (left8's list). Two
facts on disk answer it honestly: the installed torch's own build record (torch/version.py: ``cuda = None`` on a
CPU build), and the NVIDIA driver's device nodes (/dev/nvidia0, one a GPU). What they cannot see (a driver that is
loaded but broken, CUDA_VISIBLE_DEVICES narrowing the GPUs) `run` still tells; a ROCm torch (HIP behind the cuda
name, no NVIDIA nodes) and a torch that is not installed are not judged.
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Iterable

DEV = Path("/dev")
_NODE = re.compile(r"nvidia(\d+)")
_FIELD = re.compile(r"^(\w+)\s*(?::[^=]*)?=\s*['\"]?([^'\"\n]*)['\"]?\s*$", re.MULTILINE)


def cuda_missing(names: Iterable[str]) -> str | None:
    """Why the CUDA devices among ``names`` cannot be had here, or None when they can (or it cannot be judged): the
    reason only; its callers name the device (engine.device.missing builds the refusal's sentence)."""
    wanted = [name for name in names if name.startswith("cuda")]
    build = torch_build()
    if not wanted or not build or build.get("hip") not in (None, "None"):
        return None
    if build.get("cuda") in (None, "None"):
        return f"this torch ({build.get('__version__', '?')}) was built without CUDA"
    gpus = _gpus()
    if not gpus:
        return f"no NVIDIA GPU here (no {DEV / 'nvidia0'}: check `nvidia-smi` and the driver)"
    highest = max(int(name.partition(":")[2] or 0) for name in wanted)
    if highest >= len(gpus) and "CUDA_VISIBLE_DEVICES" not in os.environ:
        return f"this machine has {len(gpus)} NVIDIA GPU(s), cuda:0 to cuda:{len(gpus) - 1}"
    return None


def cuda_here() -> list[str]:
    """The CUDA devices this machine gives as far as can be judged without torch (``cuda:0`` ... for each NVIDIA
    device node, none for a torch built without CUDA): what `stylize` lists when it refuses one before torch."""
    build = torch_build() or {}
    return [] if build.get("cuda") in (None, "None") else [f"cuda:{i}" for i in range(len(_gpus()))]


def _gpus() -> list[int]:
    return sorted(int(m.group(1)) for m in map(_NODE.fullmatch, _names(DEV)) if m)


def torch_build() -> dict[str, str] | None:
    """The installed torch's version.py fields (``cuda``, ``hip``, ``__version__``) as written, found without
    importing torch; None when there is no torch or its file cannot be read."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    return {key: value.strip() for key, value in _FIELD.findall(text)}


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []
