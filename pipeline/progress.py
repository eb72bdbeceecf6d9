"""Listeners for the engine's on_step, and the JSON record of a run: shared by the CLI and the daemon."""
from __future__ import annotations

import platform
import socket
from pathlib import Path

from . import __version__
from .engine.vgg import sha256_file  # one hashing helper for weights, inputs and styles


class ProgressBar:
    """A tqdm bar fed by on_step: step, scale, loss and ETA."""

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self.bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def update(self, info) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=info.total_steps, disable=self.disable, unit="step", dynamic_ncols=True)
        self.bar.total = info.total_steps
        self.bar.n = info.step
        self.bar.set_postfix_str(f"scale {info.scale}/{info.n_scales} {info.size[1]}x{info.size[0]} "
                                 f"loss {info.loss:.4g}", refresh=False)
        self.bar.refresh()

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def versions() -> dict[str, str]:
    import torch
    import torchvision

    return {"style_pipeline": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


def run_record(result, *, content: Path, styles: list[Path], output: Path) -> dict:
    """Everything needed to know how an output was made, and to make it again."""
    return {
        "input": {"name": content.name, "bytes": content.stat().st_size, "sha256": sha256_file(content)},
        "styles": [{"name": p.name, "sha256": sha256_file(p)} for p in styles],
        "output": {"name": output.name, "sha256": sha256_file(output), "size": list(result.image.size)},
        "versions": versions(),
        "host": socket.gethostname(),
        **result.log(),
    }
