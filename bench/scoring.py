"""Scoring frames after a run: the judges, and how fast a run reached a target.

The seed judge is bench/judge.py (issue 10: built apart from the engine). The engine-built judge here stays for
pastiche's own objective only, which the engine's pieces rebuild exactly (see :class:`Judge`).
"""
from __future__ import annotations

import torch
from PIL import Image

from bench import judge as independent  # shares no code with the engine
from bench.common import p10
from bench.recorder import Frame
from pipeline.engine import Settings, StyleTransfer, images
from pipeline.engine.losses import ContentLoss, StyleLoss, TotalLoss
from pipeline.engine.settings import CONTENT_LAYER, STYLE_LAYERS

SEED_LAYER_WEIGHTS = (1.0, 0.8, 0.5, 0.3, 0.1)


class Judge:
    """The seed's loss at the output's size, applied to an 8-bit picture; same for every tool.

    kind="pastiche" instead scores pastiche's own objective (relu layers, Gram / (h*w), layer weight 10 / C^2,
    content layer weight 0.01), rebuilt from the same engine pieces: with content weight 1, style weight 1 and
    layer weights 1000 / (C*h*w) the engine's TotalLoss is exactly 100 x pastiche's loss.
    """

    def __init__(self, engine: StyleTransfer, content: Image.Image, style: Image.Image, kind: str = "seed") -> None:
        self.independent = independent.Judge(content, style) if kind == "seed" else None
        if engine.weights.kind != "caffe":
            raise SystemExit(f"the judge needs the original (caffe) VGG19 weights, got {engine.weights.kind}")
        self.engine, self.content, self.style = engine, content.convert("RGB"), style.convert("RGB")
        self.kind = kind
        self.settings = Settings()                      # style_scale 1.0: style resized to the content's shape
        self._by_hw: dict[tuple[int, int], tuple[TotalLoss, float]] = {}

    def weights(self, hw: tuple[int, int]) -> tuple[float, float, tuple[float, ...], float]:
        """(content weight, style weight, layer weights, divisor) of this judge at this size."""
        if self.kind == "seed":
            return 1.0, Settings().resolved_style_weight("caffe"), SEED_LAYER_WEIGHTS, 1.0
        with torch.no_grad():
            feats = self.engine.vgg(torch.zeros(1, 3, *hw, device=self.engine.device), STYLE_LAYERS)
        lw = tuple(1000.0 / (f.shape[1] * f.shape[2] * f.shape[3]) for f in (feats[n] for n in STYLE_LAYERS))
        return 1.0, 1.0, lw, 100.0

    def loss_at(self, hw: tuple[int, int]) -> tuple[TotalLoss, float]:
        """This judge's loss at one size, and the unmodified photo's own style loss there."""
        if hw not in self._by_hw:
            self._by_hw[hw] = self._build(hw)
        return self._by_hw[hw]

    def _build(self, hw: tuple[int, int]) -> tuple[TotalLoss, float]:
        e = self.engine
        cw, sw, lw, _ = self.weights(hw)
        targets = e.style_targets(self.style, hw, self.settings)
        content = images.to_tensor(self.content.resize(hw[::-1], Image.Resampling.LANCZOS), e.device)
        with torch.no_grad():
            target = e.vgg(content, (CONTENT_LAYER,))[CONTENT_LAYER].float()
            total = TotalLoss(e.vgg, ContentLoss(target), StyleLoss(targets, lw), cw, sw, 0.0)
            own_style = float(total(content)[1][1])
        return total, own_style

    def __call__(self, picture: Image.Image | torch.Tensor) -> dict[str, float]:
        pixels = images.to_tensor(picture.convert("RGB")) if isinstance(picture, Image.Image) else picture.float()
        pixels = pixels.clamp(0, 255).round().to(self.engine.device)
        if self.independent is not None:
            return self.independent.score(pixels.cpu())
        total, own_style = self.loss_at(tuple(pixels.shape[-2:]))
        div = 100.0 if self.kind == "pastiche" else 1.0
        with torch.no_grad():
            loss, parts = total(pixels)
        return {"loss": float(loss) / div, "content": float(parts[0]), "style": float(parts[1]),
                "style_ratio": float(parts[1]) / own_style}


def judge_frames(judge: Judge, frames: list[Frame]) -> list[dict]:
    """The judged points of a run's final-scale frames that kept pixels."""
    return [{"step": f.step, "t": round(f.elapsed, 4), "cpu": round(f.cpu, 4), "raw": f.raw, "evals": f.evals,
             **judge(f.pixels)} for f in frames if f.pixels is not None and f.scale == f.n_scales]


def first_reach(points: list[dict], target: float) -> dict | None:
    """The first judged point at or under the target (None if never)."""
    return next((p for p in points if p["loss"] <= target), None)


def quiet_per_step(points: list[dict]) -> float | None:
    """10th percentile of a run's own per-step wall time: its speed when the shared CPU was quiet."""
    per = [(b["t"] - a["t"]) / (b["step"] - a["step"]) for a, b in zip(points[1:], points[2:]) if b["step"] > a["step"]]
    return p10(per) if len(per) >= 3 else None


def model_time(d: dict, key: str, n: int) -> float | None:
    """Contention-robust estimate: n steps x the run's own quiet (10th percentile) per-step time."""
    per = quiet_per_step(d["runs"][key]["points"])
    return None if per is None else n * per
