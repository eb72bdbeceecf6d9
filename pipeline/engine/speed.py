"""Speed-only settings of a run (issue 13): cuDNN's autotuner and torch.compile of the VGG network, CUDA only.

Neither changes what a run computes, only how fast a GPU computes it, so neither is part of Settings.identity():
a checkpoint resumes whatever they are. Each run records what they did (``Result.speed``, the job log's ``speed``).

``cudnn_benchmark`` (off by default, measured): with ``torch.backends.cudnn.benchmark`` cuDNN times its convolution
algorithms at each new input shape and keeps the fastest, instead of taking its heuristics' pick. Why it is off: on
an H200 (bench/RESULTS.md, "On an NVIDIA H200 again") the search cost 3.5-4.9 s at each new shape and batch against
0.3-0.5 s without it, for a step 0-10% cheaper, and a daemon meets new ones all night: every batch size a batch
shrinks to as its photos stop early, every closing judged pass, every tile shape of a print. With it on, the pool's
first step took 2.6 s (median) and its batches stalled mid-run; the 1024 px print reference peaked at 16.9 GiB
against 3.3 (the search's scratch memory). Worth turning on only for a long run of one shape (a single print). The flag is process-wide, and torch's algorithm
cache is keyed without it: whichever value is in force at a shape's first convolution decides that shape for the
rest of the process. So it is set as each run is built (:func:`prepare`, from transfer._Run), before the run's first
convolution; an engine's runs all ask the same unless a recipe says otherwise. A CPU run leaves the flag alone (only
cuDNN reads it). Off: torch's default, the heuristics' choice.

``compile`` (off by default until measured on a GPU): the loss pass runs the VGG network through
``torch.compile(dynamic=False)``, made once per engine (:func:`network`), so each (shape, batch) is compiled once,
at its first pass, and reused by every later photo of that shape. A shape it has not seen compiles again (the
issue measured 13 s for 1024 px on an H200, against 2.6 ms saved a pass: ~5,000 passes, ~45 photos of 100 steps,
to break even), and so does each batch size a batch shrinks to as its photos stop early; past torch's recompile
limit (8 a function) a new shape simply runs eager. Passes without a gradient (the style and content targets, the
closing judged pass) stay eager: compiling them would cost a second graph per shape for one pass a photo. Only on
CUDA: on the 2-core CPU box compiling the loss pass took 476 s at 128 px and the result was slower (bench/RESULTS.md),
so elsewhere ``compile: true`` is a no-op, which the run records.
"""
from __future__ import annotations

import torch
from torch import nn

COMPILE_DEVICES = ("cuda",)  # device types where `compile: true` compiles (tests widen it, with a cheap backend)
BACKEND = "inductor"  # torch.compile's default; tests use "aot_eager", which traces the same graphs in seconds


def prepare(device: torch.device, cudnn_benchmark: bool, compile: bool) -> dict[str, str]:
    """Set cuDNN's autotuner for a run on ``device`` (CUDA only); what the two settings do in this run, for its
    Result and log: ``on``, ``off``, or ``no-op on cpu (CUDA only)``."""
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    return {"cudnn_benchmark": _said(cudnn_benchmark, cuda, device),
            "compile": _said(compile, device.type in COMPILE_DEVICES, device)}


def _said(asked: bool, applies: bool, device: torch.device) -> str:
    if not asked:
        return "off"
    return "on" if applies else f"no-op on {device.type} (CUDA only)"


def network(engine, compile: bool) -> nn.Module:
    """The VGG network a run's loss pass uses: the engine's own, or, with ``compile`` on a CUDA engine, its
    compiled form, made once per engine and kept (``engine.compiled``), so later runs reuse its graphs."""
    if not (compile and engine.device.type in COMPILE_DEVICES):
        return engine.vgg
    if getattr(engine, "compiled", None) is None or engine.compiled.eager is not engine.vgg:
        engine.compiled = Compiled(engine.vgg)
    return engine.compiled


class Compiled(nn.Module):
    """The VGG network, compiled for passes with a gradient (the optimiser's) and eager for those without."""

    def __init__(self, vgg: nn.Module) -> None:
        super().__init__()
        self.eager = vgg
        self.fast = torch.compile(vgg, dynamic=False, backend=BACKEND)

    def forward(self, pixels: torch.Tensor, layers: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        return (self.fast if torch.is_grad_enabled() else self.eager)(pixels, layers)
