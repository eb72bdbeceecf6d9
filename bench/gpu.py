"""`make bench-gpu`: what a step costs next to the network, on whatever device is here (issue 13).

One table, per precision (tf32 and bf16 on CUDA, fp32 elsewhere) and size:
- the bare pass: VGG19 forward + backward to conv5_1, per image, at batch 1 and batch N;
- the loss pass: the same with the six loss layers used (content + style + tv), at batch 1 and batch N;
- the default step (compact L-BFGS, pipeline/engine/lbfgs.py) and the old one (two-loop, bench/lbfgs_old.py) in
  the same run, as milliseconds and as ratios to the bare and the loss pass, with their host reads per step;
- the batched step per image (StyleTransfer.stylize_batch's loop);
then the weights load (cache warm and off) and the time from a process's start to its first step;
then the precision rows: the loss pass in the default precision (tf32 on CUDA, fp32 elsewhere) against bf16, the
judged (fp32) loss after the same steps in each, and the choice `precision: auto` makes from them
(engine/precision.py), which is recorded for this device unless --no-record.

    .venv/bin/python bench/gpu.py                      # CUDA: 512 and 1024 px; CPU: 128 and 256 px
    .venv/bin/python bench/gpu.py --sizes 64 --steps 4 --repeats 2   # a smoke run
    .venv/bin/python bench/gpu.py --precision-only --precision-sizes 32,64 --precision-steps 5

Medians over --repeats; the old and the new step alternate, so a contended machine slows both alike.
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

import torch  # noqa: E402

from bench.common import ASSETS, sync, table  # noqa: E402
from bench.lbfgs_old import run_projected_lbfgs as old_lbfgs  # noqa: E402
from pipeline.engine import Settings, StyleTransfer, images, precision  # noqa: E402
from pipeline.engine.batch import JointLoss, evaluate_batch  # noqa: E402
from pipeline.engine.lbfgs import ProjectedLBFGS, run_projected_lbfgs  # noqa: E402
from pipeline.engine.optimize import Monitor  # noqa: E402

CONTENT = ASSETS / "samples" / "astronaut.jpg"
STYLE = ASSETS / "styles" / "starry_night.jpg"
READS = ("item", "tolist", "__float__", "__int__", "__bool__", "numpy", "cpu")



CLOCK = {"now": time.perf_counter}  # --cpu-clock: this thread's CPU seconds, which a contended box does not inflate


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall seconds of fn() over repeats, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        started = CLOCK["now"]()
        fn()
        sync(device)
        times.append(CLOCK["now"]() - started)
    return statistics.median(times)


class Bench:
    def __init__(self, engine: StyleTransfer, precision: str, size: int, repeats: int) -> None:
        self.engine, self.device, self.repeats = engine, engine.device, repeats
        self.settings = Settings(size=size, precision=precision, early_stop_tol=0)
        content, style = images.load(CONTENT), images.load(STYLE)
        self.style = style
        self.problem, self.hw = engine.build_loss(content, [style], self.settings)
        self.start = images.to_tensor(content.resize(self.hw[::-1]), self.device)
        self.content = content.resize(self.hw[::-1])

    def bare(self, n: int) -> float:
        """VGG19 forward + backward to conv5_1, per image."""
        x = self.engine.layout(self.start.repeat(n, 1, 1, 1)).requires_grad_()

        def once():
            with torch.autocast(self.device.type, dtype=self.problem.autocast, enabled=bool(self.problem.autocast)):
                out = self.engine.vgg(x, ("conv5_1",))["conv5_1"]
            out.float().sum().backward()
        return timed(once, self.device, self.repeats) / n

    def loss(self, n: int) -> float:
        """The loss pass (all six loss layers), per image."""
        joint = JointLoss([self.problem] * n)(list(range(n)))
        flats = [self.start.reshape(-1)] * n
        return timed(lambda: evaluate_batch(joint, flats, self.start.shape), self.device, self.repeats) / n

    def step(self, run, steps: int) -> tuple[float, float]:
        """Median seconds a step once the history is full (when the run is that long), and host reads a step."""
        marks: list[float] = []
        reads = counting_reads()
        monitor = Monitor(steps, 1, 1, 0, 1, on_step=lambda info: marks.append(CLOCK["now"]()))
        with reads:
            run(self.problem, self.engine.layout(self.start), steps, monitor, history=self.settings.lbfgs_history,
                keep_in_range=True)
        gaps = [b - a for a, b in zip(marks, marks[1:])]
        full = gaps[self.settings.lbfgs_history:] or gaps
        return statistics.median(full), reads.count / max(len(marks), 1)

    def batched_step(self, n: int, steps: int) -> float:
        """Seconds a step per image in stylize_batch's loop (n photos, each its own L-BFGS)."""
        marks: list[float] = []
        settings = self.settings.replace(steps=steps, log_every=1)
        self.engine.stylize_batch([self.content] * n, [self.style], settings,
                                  on_step=lambda i, info: marks.append(time.perf_counter()) if i == 0 else None)
        return statistics.median(b - a for a, b in zip(marks, marks[1:])) / n


class counting_reads:
    """Counts tensor reads to the host while active (each is a device sync on CUDA)."""

    def __enter__(self):
        self.count, self.saved = 0, {n: getattr(torch.Tensor, n) for n in READS}
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, self._wrap(original))
        return self

    def _wrap(self, original):
        def wrapper(tensor, *args, **kwargs):
            self.count += 1
            return original(tensor, *args, **kwargs)
        return wrapper

    def __exit__(self, *exc):
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)


def start_to_first_step(device: str, cache: str | None) -> dict:
    """A fresh process: imports, device, weights, targets, up to its first step (and the weights load alone)."""
    code = ("import json,sys,time; from pipeline.engine import StyleTransfer, Settings, images; "
            f"e=StyleTransfer(device={device!r}); c=images.load({str(CONTENT)!r}); s=images.load({str(STYLE)!r})\n"
            "class Done(Exception): pass\n"
            "def first(info): raise Done\n"
            "try: e.stylize(c,[s],Settings(size=128,steps=5),on_step=first)\n"
            "except Done: print(json.dumps({'first_step': time.time(), 'load': e.load_seconds}))")
    env = {**os.environ, **({"STYLE_PIPELINE_CACHE": cache} if cache else {})}
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"first_step_s": result["first_step"] - started, "load_s": result["load"]}


def daemon_rows(args) -> list[list[str]]:
    """Hook for the daemon's photos/hour and busy share on a queued batch (issue 13's pool side adds it here,
    e.g. with bench.daemon_run.run_backlog); no rows until then."""
    return []


def precision_rows(engine: StyleTransfer, args) -> list[list[str]]:
    """The default precision against bf16 per size, each judged after the same steps; the first size's result is
    what gets recorded for `precision: auto` (as `style-pipeline precision --probe` would)."""
    content, style = images.load(CONTENT), images.load(STYLE)
    rows, first = [], None
    for size in args.precision_sizes or [None]:
        m = precision.probe(engine, content, style, size, args.precision_steps, args.repeats, judge=True)
        first = first or m
        base, ms, judged = m["default"], m["loss_pass_ms"], m["judged_loss"]
        losses = " / ".join(f"{judged[p]:.5g}" for p in dict.fromkeys(("fp32", base, "bf16")))
        rows.append([f"{m['size']} px, {m['steps']} steps", base, f"{ms[base]:.1f}", f"{ms['bf16']:.1f}",
                     f"{ms['bf16'] / ms[base]:.2f}x", losses, f"{100 * (judged['bf16'] / judged['fp32'] - 1):+.2f}%",
                     fp32_against(engine, content, style, m, args.repeats), m["choice"]])
        print(table(PRECISION_HEAD, rows[-1:]), flush=True)
    path = None if args.no_record else precision.write_record(engine.device, first)
    print(f"precision auto = {first['choice']} on {precision.key(engine.device)}; "
          + (f"recorded in {path}" if path else "not recorded"), file=sys.stderr)
    return rows


PRECISION_HEAD = ["probe", "default", "default loss pass ms", "bf16 loss pass ms", "bf16 / default time",
                  "judged loss fp32 / (tf32 /) bf16", "bf16 vs fp32", "fp32: pass time, judged loss vs tf32",
                  "auto picks"]


def fp32_against(engine: StyleTransfer, content, style, m: dict, repeats: int) -> str:
    """On CUDA, plain fp32 (TF32 off) next to the tf32 default: its loss pass's time and tf32's judged loss over
    fp32's. The H200's first probe (2026-11-28) found tf32's judged loss 2.1% / 11.6% above fp32's after 30 steps
    at 512 / 1024 px, but the probe never timed fp32, so whether fp32 should be CUDA's default was left open."""
    if m["default"] != "tf32":
        return "-"  # off CUDA the default is fp32 itself
    ms = precision.loss_pass_ms(engine, content, style, m["size"], ("fp32", "tf32"), repeats)
    judged = m["judged_loss"]
    return (f"{ms['fp32'] / ms['tf32']:.2f}x tf32's; tf32 judged "
            f"{100 * (judged['tf32'] / judged['fp32'] - 1):+.2f}% vs fp32")


def measure(engine: StyleTransfer, args) -> list[list[str]]:
    precisions = ("tf32", "bf16") if engine.device.type == "cuda" else ("fp32",)
    rows = []
    for precision in precisions:
        for size in args.sizes:
            b = Bench(engine, precision, size, args.repeats)
            bare1, bareN, loss1, lossN = b.bare(1), b.bare(args.batch), b.loss(1), b.loss(args.batch)
            print(f"  {size} px: passes measured", file=sys.stderr, flush=True)
            new, old, new_reads, old_reads = [], [], 0.0, 0.0
            for _ in range(args.repeats):  # alternate: contention slows both alike
                t, new_reads = b.step(run_projected_lbfgs, args.steps)
                new.append(t)
                t, old_reads = b.step(old_lbfgs, args.steps)
                old.append(t)
            new_s, old_s = statistics.median(new), statistics.median(old)
            batched = b.batched_step(args.batch, max(args.steps // 4, 3)) if args.batch > 1 else float("nan")
            hw = f"{b.hw[1]}x{b.hw[0]}"
            ms = lambda s: f"{1000 * s:.1f}"  # noqa: E731
            rows.append([precision, hw, ms(bare1), ms(bareN), ms(loss1), ms(lossN), ms(new_s), ms(old_s),
                         f"{new_s / bare1:.2f}x / {new_s / loss1:.2f}x", f"{old_s / bare1:.2f}x / {old_s / loss1:.2f}x",
                         f"{new_reads:.1f} / {old_reads:.1f}", ms(batched)])
            print(table(HEAD, rows[-1:]), flush=True)
    return rows


HEAD = ["precision", "size", "bare b1 ms", "bare bN ms/img", "loss b1 ms", "loss bN ms/img", "step new ms",
        "step old ms", "new / bare, / loss", "old / bare, / loss", "host reads/step new / old", "batched step ms/img"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=None)
    parser.add_argument("--batch", type=int, default=None, help="N for the batch rows (CUDA 16, CPU 4)")
    parser.add_argument("--steps", type=int, default=40, help="per run; steps after the 20th are the ones timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-start", action="store_true", help="skip the fresh-process start-up rows")
    parser.add_argument("--precision-only", action="store_true", help="only the precision rows")
    parser.add_argument("--precision-sizes", type=lambda s: [int(v) for v in s.split(",")], default=None,
                        help="sizes of the precision rows (default: the probe's, 512 px on CUDA, 64 px on a CPU)")
    parser.add_argument("--precision-steps", type=int, default=None, help="same-steps runs (default 30 CUDA, 10 CPU)")
    parser.add_argument("--no-record", action="store_true", help="do not record the precision choice")
    parser.add_argument("--cpu-clock", action="store_true", help="on a CPU with --threads 1: time the passes and "
                        "steps by this thread's CPU seconds (a contended box inflates wall time, unevenly)")
    args = parser.parse_args()
    if args.cpu_clock:
        CLOCK["now"] = time.thread_time
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = StyleTransfer(device=args.device)
    cuda = engine.device.type == "cuda"
    args.sizes = args.sizes or ([512, 1024] if cuda else [128, 256])
    args.batch = args.batch or (16 if cuda else 4)
    threads = f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    name = torch.cuda.get_device_name(engine.device) if cuda else threads
    print(f"# bench/gpu.py on {name}; torch {torch.__version__}; batch N = {args.batch}; {args.steps} steps, "
          f"median of {args.repeats}; load average {os.getloadavg()[0]:.1f}"
          f"{'; CPU seconds of the timing thread' if args.cpu_clock else ''}\n")
    if not args.precision_only:
        print(table(HEAD, measure(engine, args) + daemon_rows(args)))
    print("\n" + table(PRECISION_HEAD, precision_rows(engine, args)))
    if args.no_start or args.precision_only:
        return
    print("\n" + table(["weights", "weights load s", "process start to first step s"], start_rows(engine)))


def start_rows(engine: StyleTransfer, rounds: int = 2) -> list[list[str]]:
    """Cache warm and off, alternating for ``rounds``, medians. On the H200 the rows ran once each in a fixed
    order and the first (warm) paid the machine's cold file cache: 6.3 s against 4.3 s for the second."""
    seen: dict[str, list[dict]] = {"cache warm": [], "cache off": []}
    for _ in range(rounds):
        for label, cache in (("cache warm", None), ("cache off", "off")):
            seen[label].append(start_to_first_step(str(engine.device), cache))
    med = {label: {k: statistics.median(d[k] for d in runs) for k in runs[0]} for label, runs in seen.items()}
    return [[f"{label} (median of {rounds})", f"{d['load_s']:.2f}", f"{d['first_step_s']:.1f}"]
            for label, d in med.items()]


if __name__ == "__main__":
    main()
