"""What one checkpoint costs next to one loss evaluation, at 512 and 1024 px, on this machine (issue 13).

Why: on an H200 the daemon wrote a checkpoint every 25 steps, and each one (the pixels and the compact L-BFGS
state, whose ``pairs`` is (2m, n): 40 x 3.1M floats at 1024 px, to the CPU, torch.save'd, written fsynced) stalled
the worker 1.0-1.4 s against 13 ms a step. Here the same ``checkpoint.save`` is timed with a full history (20 pairs) on
the disk the spool would use, side by side with one forward+backward of the loss at the same size. On a CPU there
is no device-to-host copy; on a GPU that copy comes on top.

    .venv/bin/python bench/checkpoint_cost.py                     # saves at 512 and 1024 px, an evaluation at 512
    .venv/bin/python bench/checkpoint_cost.py --eval-sizes 512 1024   # 1024 px evaluations too (~20 s each here)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.bench_outputs import median_time  # noqa: E402
from bench.common import ASSETS, machine, table  # noqa: E402

HISTORY = 20
HEADERS = ["size", "floats a picture", "checkpoint MB", "one save, s", "one loss evaluation, s",
           "save / evaluation"]


def full_optimiser(x: torch.Tensor):
    """An L-BFGS state whose history is full (20 pairs), as after the 20th step."""
    from pipeline.engine.lbfgs import ProjectedLBFGS

    opt = ProjectedLBFGS(x, HISTORY, True)
    opt.pairs.normal_()
    opt.f, opt.g, opt.pg = torch.tensor(1.0), torch.randn_like(opt.x), torch.randn(2 * HISTORY)
    opt.count = HISTORY
    return opt


def row(engine, size: int, folder: Path, evaluate_too: bool, repeats: int) -> list:
    from pipeline.engine import Settings, checkpoint, images
    from pipeline.engine.lbfgs import evaluate
    from pipeline.engine.transfer import _Run

    photo = images.load(ASSETS / "samples" / "astronaut.jpg")
    style = images.load(ASSETS / "styles" / "starry_night.jpg")
    run = _Run(engine, photo, [style], Settings(size=size, scales=1, device="cpu"), None, None,
               folder / f"{size}.ckpt")
    hw = run.levels[-1]
    x = run.initial(hw, engine.device)
    opt = full_optimiser(x)
    run.fingerprints  # made once a run, at its first checkpoint: not the save's own cost
    save = median_time(lambda: checkpoint.save(run, x, opt.state_dict()), repeats)
    megabytes = (folder / f"{size}.ckpt").stat().st_size / 1e6
    seconds = None
    if evaluate_too:
        problem = run.loss(hw)
        seconds = median_time(lambda: evaluate(problem, opt.x, opt.shape), repeats)
    return [f"{hw[1]}x{hw[0]}", x.numel(), megabytes, save, seconds, save / seconds if seconds else None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--eval-sizes", type=int, nargs="*", default=[512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=ROOT / "bench" / "out", help="where the checkpoints go")
    args = parser.parse_args()
    torch.set_num_threads(2)
    heading = machine(with_load=True)
    from pipeline.engine import StyleTransfer

    engine = StyleTransfer(device="cpu")
    args.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = [row(engine, size, Path(tmp), size in args.eval_sizes, args.repeats) for size in args.sizes]
    print(f"# bench/checkpoint_cost.py: one checkpoint (L-BFGS, {HISTORY} pairs) next to one loss evaluation, "
          f"median of {args.repeats}\n")
    print(f"Machine: {heading}\n")
    print(table(HEADERS, rows))


if __name__ == "__main__":
    main()
