"""A CUDA graph of the loss evaluation against the eager one (issue 13: "a CUDA graph of the step is the other way
to get the launches down; measure both"). The compact L-BFGS (engine/lbfgs.py) is the measured way; this script
measures the other before anything of it goes into the engine.

What is graphed: one evaluation, the loss pass forward and backward (VGG to conv5_1, content and style terms, the
pixels' gradient) at a fixed shape, captured once with ``torch.cuda.graph`` and replayed; the L-BFGS direction,
its line search and the step's one host read stay eager. That is the part a graph can hold: the line search
decides on the host whether to evaluate again, so a whole step is not one fixed sequence of kernels.

For each shape, batch 1, in one process, alternated round by round:
- the loss pass, eager and replayed (median ms);
- the default L-BFGS step of the engine's own run (StyleTransfer.stylize, medians of the steps after the first
  few), eager and with ``engine.lbfgs.evaluate`` swapped for the graphed one (bench-only: the engine is not
  changed); the ratio of each to the eager loss pass, as issue 13's step target reads it;
- the capture's one-time cost (warm-up and capture, s) and whether the two runs' final losses agree (a graph that
  replays stale inputs would show here).

    python3 bench/cuda_graph.py                      # CUDA: 512 and 1024 px, and the daemon's 1024x706
    .venv/bin/python bench/cuda_graph.py --device cpu --sizes 48 --steps 4   # the eager rows only: a smoke run

On a CPU there is no CUDA graph: the graphed cells read "CUDA only" and the eager ones are this machine's.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import ASSETS, clocked, synced_now, table  # noqa: E402

CONTENT = ASSETS / "samples" / "astronaut.jpg"
STYLE = ASSETS / "styles" / "starry_night.jpg"
DAEMON_PHOTO = (2400, 1655)  # issue 13's photo: 1024x706 at 1024 px




class Graphed:
    """lbfgs.evaluate's contract (loss, flat gradient, parts; no host read) from a replayed CUDA graph, one graph
    per (problem, shape). Its outputs are cloned: the optimiser keeps the gradient it is given (lbfgs.pack), and
    the next replay overwrites the graph's own tensors."""

    def __init__(self) -> None:
        self.graphs: dict = {}
        self.capture_s = 0.0

    def __call__(self, problem, flat, shape):
        key = (id(problem), tuple(shape))
        if key not in self.graphs:
            started = time.perf_counter()
            self.graphs[key] = self._capture(problem, flat, shape)
            self.capture_s += time.perf_counter() - started
        graph, x, loss, grad, parts = self.graphs[key]
        x.detach().copy_(flat.view(shape))
        graph.replay()
        return loss.clone(), grad.reshape(-1).clone(), parts.clone()

    @staticmethod
    def _capture(problem, flat, shape):
        import torch

        told, problem.on_evaluation = problem.on_evaluation, None  # its hook is a Python call: not in a graph
        x = flat.detach().view(shape).clone().requires_grad_()

        def once():
            loss, parts = problem(x)
            (grad,) = torch.autograd.grad(loss, x)
            return loss, grad, parts

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # torch's recipe: warm up off the default stream (lazy targets made here),
            for _ in range(3):  # on the stream the capture uses, so its library handles exist before it starts
                once()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            loss, grad, parts = once()
        torch.cuda.synchronize()
        problem.on_evaluation = told
        return graph, x, loss, grad, parts


class Case:
    """One shape at batch 1: its loss pass and its steps, eager and graphed, side by side."""

    def __init__(self, engine, content, style, size: int, args) -> None:
        from pipeline.engine import Settings, images

        self.engine, self.content, self.style, self.args = engine, content, style, args
        self.settings = Settings(size=size, scales=1, early_stop_tol=0, log_every=1, steps=args.steps)
        self.problem, hw = engine.build_loss(content, [style], self.settings)
        self.hw = hw
        self.x = images.to_tensor(images.resize_once(content, hw), engine.device)
        self.graphed = Graphed() if engine.device.type == "cuda" else None

    def loss_pass(self, graphed: bool) -> float:
        from pipeline.engine import lbfgs

        evaluate = self.graphed if graphed else lbfgs.evaluate
        flat = self.x.reshape(-1)
        evaluate(self.problem, flat, self.x.shape)  # warm (and, graphed, the capture)
        return statistics.median(clocked(lambda: evaluate(self.problem, flat, self.x.shape), self.engine.device)
                                 for _ in range(self.args.repeats))

    def step(self, graphed: bool) -> tuple[float, float]:
        """(median seconds a step, the run's final loss) of the engine's own run, its evaluate swapped if graphed."""
        from pipeline.engine import lbfgs

        marks: list[float] = []
        eager = lbfgs.evaluate
        lbfgs.evaluate = self.graphed if graphed else eager
        try:
            result = self.engine.stylize(self.content, [self.style], self.settings,
                                         on_step=lambda info: marks.append(synced_now(self.engine.device)))
        finally:
            lbfgs.evaluate = eager
        gaps = [b - a for a, b in zip(marks, marks[1:])]
        self.precision = result.precision
        return statistics.median(gaps[self.args.skip:] or gaps), float(result.curve[-1]["loss"])

    def measure(self) -> dict:
        modes = (False, True) if self.graphed else (False,)
        row: dict = {mode: {"pass": [], "step": [], "loss": None} for mode in modes}
        for _ in range(self.args.rounds):  # alternated: the box's drift lands on both alike
            for mode in modes:
                row[mode]["pass"].append(self.loss_pass(mode))
                seconds, row[mode]["loss"] = self.step(mode)
                row[mode]["step"].append(seconds)
        out = {mode: {"pass": statistics.median(v["pass"]), "step": statistics.median(v["step"]), "loss": v["loss"]}
               for mode, v in row.items()}
        if self.graphed:
            out["capture_s"] = self.graphed.capture_s / max(len(self.graphed.graphs), 1)
        return out



HEAD = ["shape", "loss pass ms eager", "graphed", "step ms eager", "graphed", "step / eager pass: eager",
        "graphed", "capture s", "final loss graphed / eager"]


def row_of(hw, m: dict) -> list[str]:
    eager, graphed = m[False], m.get(True)
    ms = lambda s: f"{1000 * s:.2f}"  # noqa: E731
    if graphed is None:
        only = "CUDA only"
        return [f"{hw[1]}x{hw[0]}", ms(eager["pass"]), only, ms(eager["step"]), only,
                f"{eager['step'] / eager['pass']:.2f}x", only, "-", "-"]
    return [f"{hw[1]}x{hw[0]}", ms(eager["pass"]), f"{ms(graphed['pass'])} ({graphed['pass'] / eager['pass']:.2f}x)",
            ms(eager["step"]), f"{ms(graphed['step'])} ({graphed['step'] / eager['step']:.2f}x)",
            f"{eager['step'] / eager['pass']:.2f}x", f"{graphed['step'] / eager['pass']:.2f}x",
            f"{m['capture_s']:.2f}", f"{graphed['loss'] / eager['loss']:.4f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=None,
                        help="square sizes (default: 512,1024 on CUDA, 48 elsewhere); issue 13's photo is added")
    parser.add_argument("--daemon-size", type=int, default=None, help="issue 13's photo's size (1024 CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="per run (30 CUDA, 4 elsewhere)")
    parser.add_argument("--skip", type=int, default=None, help="steps not timed at each run's start (5 CUDA, 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed loss passes a round (10 CUDA, 3)")
    parser.add_argument("--rounds", type=int, default=None, help="alternated rounds (3 CUDA, 1)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import torch

    from pipeline.engine import StyleTransfer, images

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = StyleTransfer(device=args.device)
    cuda = engine.device.type == "cuda"
    args.sizes = args.sizes or ([512, 1024] if cuda else [48])
    args.daemon_size = args.daemon_size or (1024 if cuda else max(args.sizes))
    args.steps, args.skip = args.steps or (30 if cuda else 4), args.skip if args.skip is not None else (5 if cuda else 1)
    args.repeats, args.rounds = args.repeats or (10 if cuda else 3), args.rounds or (3 if cuda else 1)
    started, args.precision = time.perf_counter(), "-"
    content, style = images.load(CONTENT), images.load(STYLE)
    rows = []
    for picture, size in [*((content, s) for s in args.sizes), (content.resize(DAEMON_PHOTO), args.daemon_size)]:
        case = Case(engine, picture, style, size, args)
        rows.append(row_of(case.hw, case.measure()))
        args.precision = case.precision
        print(f"  {rows[-1][0]} done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores"
    print(f"# bench/cuda_graph.py on {name}, torch {torch.__version__}; batch 1, {args.steps} steps (the first "
          f"{args.skip} not timed), {args.rounds} alternated rounds, loss pass median of {args.repeats} a round; "
          f"precision: {args.precision}; {time.perf_counter() - started:.0f} s in all\n")
    print(table(HEAD, rows))
    if not cuda:
        print("\nNo GPU here: a CUDA graph needs CUDA, so only the eager rows are this machine's.")


if __name__ == "__main__":
    main()
