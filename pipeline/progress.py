"""Listeners for the engine's on_step, and the facts every run record names (files, software, machine): shared by
the CLI and the daemon, whose one record builder is pipeline/daemon/joblog.py."""
from __future__ import annotations

import functools
import platform
import socket
import sys
import time
from pathlib import Path

from . import __version__
from .fsio import sha256_file  # one hashing helper for weights, inputs and styles


class ProgressBar:
    """Progress fed by on_step. On a terminal, a tqdm bar (step, scale, loss, ETA). On a pipe or a file (a log,
    cron's mail), a plain line every ``every_seconds`` as neural-style's -print_iter does, rather than one long
    line of \\r frames."""

    def __init__(self, disable: bool = False, every_seconds: float = 10.0, stream=None) -> None:
        self.disable, self.every = disable, every_seconds
        self.stream = stream if stream is not None else sys.stderr
        self.plain = not self.stream.isatty()
        self.bar = None
        self.first: tuple[float, int] | None = None  # (clock, step) when the first step was seen
        self.printed_at = float("-inf")
        self.last = self.shown = None

    def __enter__(self) -> "ProgressBar":
        return self

    def update(self, info) -> None:
        if self.disable:
            return
        if self.plain:
            self._plain(info)
        else:
            self._bar(info)

    def _bar(self, info) -> None:
        from tqdm import tqdm

        if self.bar is None:  # initial= keeps the first frame's rate honest (steps before the bar are not "instant")
            self.bar = tqdm(total=info.total_steps, initial=info.step, unit="step", dynamic_ncols=True,
                            file=self.stream)
        self.bar.total = info.total_steps
        self.bar.n = info.step
        self.bar.set_postfix_str(_describe(info), refresh=False)
        self.bar.refresh()

    def _plain(self, info) -> None:
        now = time.monotonic()
        self.first = self.first or (now, info.step)
        self.last = info
        if now >= self.printed_at + self.every:
            self._print(info, now)

    def _print(self, info, now: float) -> None:
        self.printed_at, self.shown = now, info
        seconds, steps = now - self.first[0], info.step - self.first[1]
        rate = f", {steps / seconds:.2f} steps/s" if seconds >= 1 and steps > 0 else ""
        eta = f", ETA {info.eta:.0f} s" if info.eta is not None and info.step < info.total_steps else ""
        print(f"step {info.step}/{info.total_steps} {_describe(info)}{rate}{eta}", file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.plain and self.last is not None and self.shown is not self.last:
            self._print(self.last, time.monotonic())  # a log always ends with the step the run stopped at


def _describe(info) -> str:
    tiles = f" in {info.tiles} tiles" if info.tiles > 1 else ""
    return f"scale {info.scale}/{info.n_scales} {info.size[1]}x{info.size[0]}{tiles} loss {info.loss:.4g}"


def versions() -> dict[str, str]:
    """torchvision's from its package metadata: importing it took 6 s on the 2-core box, and nothing else needs it."""
    return dict(_versions())  # a copy: a record may be changed after


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    """Read once a process: the metadata lookup searched every path entry's distributions for each photo's record,
    12 ms a photo on the 2-core box (eighth session's profile), and what this process runs cannot change under it."""
    from importlib import metadata

    import torch

    return (("style_pipeline", __version__), ("torch", torch.__version__),
            ("torchvision", metadata.version("torchvision")), ("python", platform.python_version()))


def file_facts(path: Path) -> dict:
    """A file as a record names it: the CLI's and the daemon's run records both describe inputs this way."""
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def provenance() -> dict:
    """What made an output besides its inputs: the software and the machine. One place for both records."""
    return {"versions": versions(), "host": socket.gethostname()}
