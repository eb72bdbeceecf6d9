"""torch.compile of the loss pass against eager, on whatever device is here (issue 13, "Precision" item).

Why measure before building: the issue saw a compiled forward+backward at 1024 px take 8.0 ms against 10.6 eager on
an H200, after 13 s of compiling per shape. Compiling pays only where one shape is reused for enough passes, i.e.
where shapes are bucketed; this prints the compile time, the pass before and after, and the passes it takes to
break even, per size, so the choice (a config flag, default off) rests on figures.

    .venv/bin/python bench/compile.py --sizes 128 --threads 1      # the CPU
    .venv/bin/python bench/compile.py --sizes 512,1024             # a GPU
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.common import table  # noqa: E402
from bench.gpu import CONTENT, STYLE, sync, timed  # noqa: E402
from pipeline.engine import Settings, StyleTransfer, images, precision  # noqa: E402


def row(engine: StyleTransfer, size: int, repeats: int) -> list[str]:
    content, style = images.load(CONTENT), images.load(STYLE)
    problem, hw = engine.build_loss(content, [style], Settings(size=size, scales=1))
    x = engine.layout(images.to_tensor(images.resize_once(content, hw), engine.device)).requires_grad_()
    compiled = torch.compile(problem.loss, dynamic=False)

    def eager_pass():
        x.grad = None
        problem(x)[0].backward()

    def compiled_pass():
        x.grad = None
        with torch.autocast(engine.device.type, dtype=problem.autocast, enabled=problem.autocast is not None):
            out = compiled(x)
        out[0].backward()

    started = time.perf_counter()
    compiled_pass()  # the first call compiles (forward and backward graphs)
    sync(engine.device)
    compile_s = time.perf_counter() - started
    eager, fast = [], []
    for _ in range(repeats):  # alternating: contention slows both alike
        eager.append(timed(eager_pass, engine.device, 1))
        fast.append(timed(compiled_pass, engine.device, 1))
    e, c = sorted(eager)[len(eager) // 2], sorted(fast)[len(fast) // 2]
    even = f"{compile_s / (e - c):.0f}" if e > c else "never"
    return [f"{hw[1]}x{hw[0]}", precision.resolve(engine.device, "auto"), f"{compile_s:.1f}", f"{1000 * e:.1f}",
            f"{1000 * c:.1f}", f"{c / e:.2f}x", even]


HEAD = ["size", "precision", "compile s", "eager loss pass ms", "compiled loss pass ms", "compiled / eager",
        "passes to break even"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = StyleTransfer(device=args.device)
    print(f"# bench/compile.py on {precision.key(engine.device)}, {torch.get_num_threads()} threads; median of "
          f"{args.repeats}; load average {os.getloadavg()[0]:.1f}\n")
    rows = []
    for size in args.sizes:
        rows.append(row(engine, size, args.repeats))
        print(table(HEAD, rows[-1:]), flush=True)
    print("\n" + table(HEAD, rows))


if __name__ == "__main__":
    main()
