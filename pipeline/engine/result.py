"""A run's Result, and how a run closes: the judged loss of what is saved, the curve closed, the picture.

The closing sits between one photo's last step and the next photo's first (issue 13), so it does only what the
Result needs: one forward pass of the final level's objective, reused from the run (the same content and style
targets, so the same value as building it again), on the clamped, rounded pixels that are saved.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from PIL import Image

from .settings import Settings
from .vgg import WeightsInfo

# Which judge the reported losses come from (issue 10): the engine scores its own saved 8-bit output, with the
# painting resized once (LANCZOS) to the working shape, as bench/judge.py independently does; they agree to <0.5%.
JUDGE = "engine (notebook losses on the saved 8-bit output; painting resized once, LANCZOS, to the working shape)"

@dataclass
class Result:
    """What one run gives its caller: the picture and everything its JSON log records (losses, curve, timings,
    weights, settings), so the daemon writes the log without reaching into the engine."""

    image: Image.Image
    alpha: Image.Image | None
    losses: dict[str, float]
    curve: list[dict]
    steps: int
    scales: list[tuple[int, int]]
    timings: dict[str, float]
    device: str
    stop_reason: str
    style_weight: float
    weights: WeightsInfo
    settings: Settings
    retries: list[str] = field(default_factory=list)
    resumed_from_step: int | None = None
    canvas: tuple[int, int] | None = None  # a thin picture's padded shape (issue 9); None when not padded
    tiles: dict[int, dict] = field(default_factory=dict)  # level index -> its tile plan, where tiled (issue 14)
    precision: str = "fp32"  # what the network ran in: fp32, tf32 or bf16 (``auto`` resolved, issue 13)
    speed: dict[str, str] = field(default_factory=dict)  # what cudnn_benchmark and compile did here (speed.py)
    level_steps: list[int] = field(default_factory=list)  # the steps planned for each level, beside scales
    style_weights: list[float] = field(default_factory=list)  # each level's style weight (size-aware: rev9a #2)
    lr: float | None = None  # the Adam step used (lr 0 resolved, a gentle retry's halved); None: settings.lr
    level_lrs: list[float] = field(default_factory=list)  # each level's Adam step, beside scales ([]: L-BFGS)

    def log(self) -> dict:
        """The JSON-ready record of the run (everything but the pixels)."""
        return {
            "losses": self.losses, "judge": JUDGE, "steps": self.steps, "stop_reason": self.stop_reason,
            "scales": [list(s) for s in self.scales], "level_steps": self.level_steps, "style_weights": self.style_weights,
            "level_lrs": self.level_lrs, "timings": self.timings, "device": self.device,
            "precision": self.precision, "speed": self.speed,
            "style_weight": self.style_weight, "settings": self._settings(), "retries": self.retries,
            "resumed_from_step": self.resumed_from_step, "curve": self.curve,
            "canvas": list(self.canvas) if self.canvas else None, "tiles": self.tiles,
            "weights": {"path": self.weights.path, "kind": self.weights.kind, "sha256": self.weights.sha256},
        }


    def _settings(self) -> dict:
        """The settings as used: the lr Adam stepped at, not the 0 that means its default (rev9a #5)."""
        return {**self.settings.to_dict(), **({} if self.lr is None else {"lr": self.lr})}


def close(run, pixels: torch.Tensor, resumed: int | None, judged: dict[str, float] | None = None) -> Result:
    """``run``'s Result from its final pixels (transfer._Run; batch.py closes each of its runs the same way, with
    ``judged``: the losses of these pixels, saved, judged for the whole batch in one pass).

    Then the monitor's links back to the run (render: run.picture; save: a checkpoint of the run) are cut: they made
    the run a reference cycle, freed only at the next full collection, which a daemon reaches rarely, so each
    finished run kept its paintings, photo and tensors (host or GPU memory) meanwhile: ~20 MB a version of a
    replaced 2400 px painting (rev8c finding 1). Now the run is freed the moment its caller lets go of it."""
    started = time.perf_counter()
    pixels = pixels.clamp(0, 255).round()  # what is saved is what is judged
    losses = judged or _judge(run, pixels)
    monitor = run.monitor
    last = monitor.curve[-1]["step"] if monitor.curve else -1
    if last != monitor.step_count:  # an early stop ends between logged points: close the curve
        monitor.curve.append({"step": monitor.step_count, "scale": len(run.levels), **losses,
                              "loss": losses["total"], "elapsed": round(monitor.elapsed, 3)})
    image = run.picture(pixels)
    elapsed = monitor.elapsed
    canvas = tuple(pixels.shape[-2:]) if tuple(pixels.shape[-2:]) != run.levels[-1] else None
    timings = {**run.timings, "closing": round(time.perf_counter() - started, 4), "total": round(elapsed, 3),
               "per_step": round(elapsed / max(monitor.step_count, 1), 4),
               "load_weights": round(run.engine.load_seconds, 3)}
    result = Result(image, run.alpha, dict(losses), monitor.curve, monitor.step_count, run.levels, timings,
                    str(run.engine.device), monitor.stop_reason, run.style_weight, run.engine.weights, run.settings,
                    run.retries, resumed, canvas, {k: p.to_dict() for k, p in run.tiles.items()}, run.precision,
                    run.speed, list(run.steps_per_level), list(run.style_weights), run.lr,
                    list(run.level_lrs))
    monitor.render = monitor.save = None  # the run is over: its monitor lets go of it (see above)
    return result


def _judge(run, saved: torch.Tensor) -> dict[str, float]:
    """The final level's objective on the saved pixels: total, content, style, tv."""
    with torch.no_grad():
        total, parts = run.loss(run.levels[-1]).loss(saved)
    return {"total": float(total), **{k: float(v) for k, v in zip(("content", "style", "tv"), parts)}}
