"""cuDNN's autotuner and torch.compile where the daemon runs (issue 13): one table per shape and batch.

For each shape (--sizes, square, and the daemon's photos, 2400x1655, at --daemon-size: 1024x706 at 1024 px) and
batch (1, and the batch the daemon picks for that shape, engine/batch.batch_size_for; --batch to fix it):
- the loss pass (forward and backward through the run's loss, JointLoss as the daemon's batches use it) and the
  default L-BFGS step (StyleTransfer.stylize / stylize_batch, medians of the steps after the first few), per image,
  in ms, with ``cudnn_benchmark`` off and on, and with ``compile: true`` (the engine's own hook, engine/speed.py)
  against eager, both with the autotuner on;
- the first call of the new shape in each process (its loss built, the style targets cached, plus its first pass):
  on minus off is the autotuner's one-time cost; and the compile time (the first compiled pass minus a steady one).

Off and on run in two child processes, one after the other: torch's cuDNN algorithm cache is keyed without the
flag, so whichever value is in force at a shape's first convolution decides that shape for the whole process.

    .venv/bin/python bench/conv_speed.py                           # CUDA: 512, 1024 px and 1024x706
    .venv/bin/python bench/conv_speed.py --device cpu --sizes 64 --threads 1     # a smoke run, seconds
    .venv/bin/python bench/conv_speed.py --device cpu --sizes 32 --compile all --compile-backend aot_eager \\
        --compile-anywhere                                         # the compiled path, traced on a CPU

What compiles: --compile batch (the default on CUDA) the daemon's shape at the daemon's batch only, where its photos
run; daemon: at batch 1 too; all: every row; none. Each new shape and batch compiles again (the issue measured 13 s
at 1024 px), so a row costs that much more. On a CPU the engine's compile is a no-op: none by default there.
--budget (seconds, default 200) bounds the two children together: a child past it is stopped and its rows so far
are kept (the compiled rows come last in the on child, so a slow compile loses only them).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import ASSETS, clocked, synced_now, table  # noqa: E402

CONTENT = ASSETS / "samples" / "astronaut.jpg"
STYLE = ASSETS / "styles" / "starry_night.jpg"
DAEMON_PHOTO = (2400, 1655)  # the H200 runs' photos (/work/wt/device5/1): 1024x706 at 1024 px
TAG = "CONV_SPEED"




class Case:
    """One (picture, size, batch) in one child process: its loss pass, its steps and its first call."""

    def __init__(self, engine, content, style, size: int, batch: int, args) -> None:
        from pipeline.engine import Settings

        self.engine, self.content, self.style, self.n, self.args = engine, content, style, batch, args
        self.settings = Settings(size=size, scales=1, early_stop_tol=0, log_every=1, steps=args.steps,
                                 cudnn_benchmark=args.child == "on")

    def loss(self, compile: bool) -> tuple[float, float]:
        """(the first call: build + first pass, s; the steady pass per image, s)."""
        from pipeline.engine import images
        from pipeline.engine.batch import JointLoss, evaluate_batch

        device, holder = self.engine.device, {}

        def build():
            problem, hw = self.engine.build_loss(self.content, [self.style], self.settings.replace(compile=compile))
            x = images.to_tensor(images.resize_once(self.content, hw), device)
            holder.update(joint=JointLoss([problem] * self.n)(list(range(self.n))), flats=[x.reshape(-1)] * self.n,
                          shape=x.shape)
            evaluate_batch(holder["joint"], holder["flats"], holder["shape"])

        first = clocked(build, device)
        once = lambda: evaluate_batch(holder["joint"], holder["flats"], holder["shape"])  # noqa: E731
        steady = statistics.median(clocked(once, device) for _ in range(self.args.repeats))
        return first, steady / self.n

    def step(self, compile: bool) -> float:
        """Seconds a step per image: the engine's own run (alone at batch 1, stylize_batch above)."""
        marks: list[float] = []
        settings = self.settings.replace(compile=compile)
        if self.n == 1:
            self.engine.stylize(self.content, [self.style], settings, on_step=lambda info: marks.append(_now()))
        else:
            self.engine.stylize_batch([self.content] * self.n, [self.style], settings,
                                      on_step=lambda i, info: marks.append(_now()) if i == 0 else None)
        gaps = [b - a for a, b in zip(marks, marks[1:])]
        return statistics.median(gaps[self.args.skip:] or gaps) / self.n

    def measure(self, compile: bool) -> dict:
        row = {}
        row["first_s"], row["loss_s"] = self.loss(False)
        row["step_s"] = self.step(False)
        if compile:
            try:
                made = _graphs()
                first, row["compiled_loss_s"] = self.loss(True)
                row["compile_s"] = first - self.n * row["compiled_loss_s"]  # the first pass less a steady one
                loss_graphs = _graphs() - made
                row["compiled_step_s"] = self.step(True)
                row["graphs"] = f"{loss_graphs} + {_graphs() - made - loss_graphs}"  # the step's should be 0
            except Exception as exc:  # noqa: BLE001 - one GPU call: a failed compile must not lose the table
                row["compile_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        return row


def _graphs() -> int:
    """Graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _now() -> float:
    return synced_now(_DEVICE[0])


_DEVICE: list = [None]


def pictures():
    from pipeline.engine import images

    content, style = images.load(CONTENT), images.load(STYLE)
    return content, content.resize(DAEMON_PHOTO), style


def child(args) -> None:
    """One process, cudnn_benchmark as args.child says: every case's row as a tagged JSON line."""
    import torch

    from pipeline.engine import Settings, StyleTransfer, speed
    from pipeline.engine.batch import batch_size_for

    if args.threads:
        torch.set_num_threads(args.threads)
    speed.BACKEND = args.compile_backend
    engine = StyleTransfer(device=args.device)
    _DEVICE[0] = engine.device
    if args.compile_anywhere:
        speed.COMPILE_DEVICES = (engine.device.type,)
    square, photo, style = pictures()
    engine.stylize(square, [style], Settings(size=32, steps=2, cudnn_benchmark=args.child == "on"))  # warm-up
    plan = json.loads(args.plan) if args.plan else {}
    for label, content, size in [*((f"{s} px", square, s) for s in args.sizes), ("daemon", photo, args.daemon_size)]:
        hw = _hw(content, size)
        batches = plan.get(label) or [1, args.batch or batch_size_for(engine.device, hw, Settings(size=size))]
        for n in dict.fromkeys(batches):
            compile = args.compile == "all" or label == "daemon" and (args.compile == "daemon" or
                                                                      args.compile == "batch" and n == batches[-1])
            row = Case(engine, content, style, size, n, args).measure(compile and args.child == "on")
            print(f"{TAG} " + json.dumps({"label": label, "hw": list(hw), "batch": n, **row}), flush=True)


def _hw(content, size: int) -> tuple[int, int]:
    """The working (height, width) a photo of this size runs at (one level: scales 1)."""
    from pipeline.engine import Settings
    from pipeline.engine.levels import for_size

    return tuple(for_size(content.size, Settings(size=size, scales=1))[1][-1])


def run_child(mode: str, argv: list[str], seconds: float) -> list[dict]:
    """The child's rows; one stopped after ``seconds`` gives the rows it had printed."""
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, *argv, "--child", mode], capture_output=True, text=True,
                              cwd=ROOT, timeout=max(seconds, 1))
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:  # its output comes back as bytes whatever text= says
        out, err, rc = (_text(exc.stdout), _text(exc.stderr), f"stopped after {seconds:.0f} s (--budget)")
    rows = [json.loads(x[len(TAG) + 1:]) for x in out.splitlines() if x.startswith(TAG + " ")]
    print(f"  child cudnn_benchmark {mode}: {len(rows)} rows, {time.perf_counter() - started:.1f} s, rc {rc}",
          file=sys.stderr, flush=True)
    if rc:
        print(err[-3000:], file=sys.stderr)
    return rows


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


HEAD = ["shape", "batch", "loss ms/img off", "loss on", "loss compiled", "step ms/img off", "step on",
        "step compiled", "new shape's first call s off / on", "compile s", "graphs: loss + step"]


def rows_of(off: list[dict], on: list[dict]) -> list[list[str]]:
    """One row per (shape, batch) either child measured: a child that failed leaves its cells "-"."""
    ms = lambda s, base=None: "-" if s is None else f"{1000 * s:.1f}" + (f" ({s / base:.2f}x)" if base else "")  # noqa
    sec = lambda r: f"{r['first_s']:.2f}" if "first_s" in r else "-"  # noqa: E731
    keys = list(dict.fromkeys((r["label"], r["batch"]) for r in off + on))
    out = []
    for key in keys:
        a, b = (next((r for r in rows if (r["label"], r["batch"]) == key), {}) for rows in (off, on))
        hw = (a or b)["hw"]
        compiled = b.get("compile_error", "-")[:60] if "compiled_loss_s" not in b else None
        out.append([f"{hw[1]}x{hw[0]}" + (" (daemon)" if key[0] == "daemon" else ""), str(key[1]),
                    ms(a.get("loss_s")), ms(b.get("loss_s"), a.get("loss_s")),
                    compiled or ms(b["compiled_loss_s"], b["loss_s"]), ms(a.get("step_s")),
                    ms(b.get("step_s"), a.get("step_s")), compiled or ms(b["compiled_step_s"], b["step_s"]),
                    f"{sec(a)} / {sec(b)}", f"{b['compile_s']:.1f}" if "compile_s" in b else "-", b.get("graphs", "-")])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=None,
                        help="square sizes (default: 512,1024 on CUDA, 64 elsewhere)")
    parser.add_argument("--daemon-size", type=int, default=None, help="the daemon's size (1024 CUDA; largest of --sizes)")
    parser.add_argument("--batch", type=int, default=None, help="N (default: the daemon's choice; 2 off CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="per run (20 CUDA, 6 elsewhere)")
    parser.add_argument("--skip", type=int, default=None, help="steps not timed at each run's start (4 CUDA, 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed loss passes (5 CUDA, 3 elsewhere)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", choices=("none", "batch", "daemon", "all"), default=None,
                        help="which rows compile (default: batch on CUDA, none elsewhere; see above)")
    parser.add_argument("--budget", type=float, default=200, help="seconds for both children together")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-anywhere", action="store_true", help="let the engine compile off CUDA too")
    parser.add_argument("--child", choices=("off", "on"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plan", default=None, help=argparse.SUPPRESS)  # {label: [batches]}: the on child's
    args = parser.parse_args()
    if args.child:
        return child(args)
    from pipeline.engine.device import pick_device

    cuda = pick_device(args.device).type == "cuda"
    args.sizes = args.sizes or ([512, 1024] if cuda else [64])
    args.daemon_size = args.daemon_size or (1024 if cuda else max(args.sizes))
    args.compile = args.compile or ("batch" if cuda else "none")
    args.batch = args.batch or (None if cuda else 2)
    args.steps, args.skip, args.repeats = (args.steps or (20 if cuda else 6), (4 if cuda else 1) if args.skip is None
                                           else args.skip, args.repeats or (5 if cuda else 3))
    argv = sys.argv[1:] + ["--sizes", ",".join(map(str, args.sizes)), "--daemon-size", str(args.daemon_size),
                           "--compile", args.compile, "--steps", str(args.steps), "--skip", str(args.skip),
                           "--repeats", str(args.repeats)]
    argv += ["--batch", str(args.batch)] if args.batch else []
    started = time.perf_counter()
    off = run_child("off", argv, args.budget)
    plan: dict[str, list[int]] = {}
    for row in off:  # the on child runs the very batches the off child picked (free memory may differ a little)
        plan.setdefault(row["label"], []).append(row["batch"])
    on = run_child("on", argv + ["--plan", json.dumps(plan)], args.budget - (time.perf_counter() - started))
    print(f"# bench/conv_speed.py on {_machine(cuda)}; {args.steps} steps (the first {args.skip} not timed), loss "
          f"pass median of {args.repeats}; compile: {args.compile} ({args.compile_backend}); load average "
          f"{os.getloadavg()[0]:.1f}; {time.perf_counter() - started:.0f} s in all\n")
    print(table(HEAD, rows_of(off, on)))
    for row in on:
        if "compile_error" in row:
            print(f"\ncompile failed at {row['hw'][1]}x{row['hw'][0]}, batch {row['batch']}: {row['compile_error']}")
    if not cuda:
        print("\nNo GPU here: cudnn_benchmark is read by cuDNN only, so off and on run the same code (their gap is "
              "this machine's noise), and compile is a no-op unless --compile-anywhere.")


def _machine(cuda: bool) -> str:
    import torch

    name = torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores"
    return f"{name}, torch {torch.__version__}"


if __name__ == "__main__":
    main()
