"""The gap between one photo's last step and the next photo's first step on a queued batch (issue 13), phase by
phase, for two checkouts side by side in one run: ``--before REF`` (a commit, extracted with git archive) and
this tree. Rounds alternate the two, so the box's load falls on both alike.

Two views, each run in a subprocess whose ``pipeline`` is the checkout's own:

- **engine** (in-process, the engine's public listeners): one StyleTransfer styles the photos one after another, as
  the daemon's worker does. Per photo after the first: *closing* = the last step's listener call to stylize()
  returning (the judged-loss pass and the picture); *set-up* = stylize() called to its first step's listener call,
  less that step's own loss evaluations (StepInfo.eval_seconds): the working copies, style and content targets;
  *first step* = those evaluations.
- **daemon** (`style-pipeline once` over a backlog, progress logged every step; bench/daemon_run.py): per pair of
  consecutive photos, seconds from A's last "progress" to each of A's "output written" and "job done" and B's
  "job started" and first "progress". The last two are the worker's critical path; the writes may run off it.

    .venv/bin/python bench/gap.py --before 89f30fc            # CPU: 64 px, 10 steps, 12 photos, 2 rounds
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and "--engine-in" not in sys.argv:
    sys.path.insert(0, str(ROOT))

ENGINE_PHASES = ("set-up", "first step", "closing")
DAEMON_PHASES = ("output written", "job done", "next job started", "next first step")
CPU = "CPU a photo"  # the daemon process's user + sys seconds over its photos (start-up included, the same for all)
WHOLE = "a photo"  # the daemon's steady wall seconds per photo: the main loop's claims and rescans included


def engine_phases(photos: int, size: int, steps: int) -> dict[str, list[float]]:
    """Runs inside the checkout's own interpreter path (``--engine-in TREE``): seconds of each phase per photo."""
    import torch

    from pipeline.engine import Settings, StyleTransfer, images

    torch.set_num_threads(1)
    samples = sorted((ROOT / "pipeline" / "assets" / "samples").glob("*.jpg"))
    style = images.load(ROOT / "pipeline" / "assets" / "styles" / "starry_night.jpg")
    engine = StyleTransfer(device="cpu")
    settings = Settings(size=size, steps=steps, early_stop_tol=0, device="cpu")
    found: dict[str, list[float]] = {name: [] for name in ENGINE_PHASES}
    for i in range(photos):
        content = images.load(samples[i % len(samples)])  # decoded before the clock starts: the daemon's part
        marks: list[tuple[float, float]] = []
        called = time.perf_counter()
        engine.stylize(content, [style], settings,
                       listeners=[lambda info: marks.append((time.perf_counter(), info.eval_seconds))])
        returned = time.perf_counter()
        if i == 0:
            continue  # the first photo pays for the style targets and the allocator's warm-up
        first_at, first_evals = marks[0]
        found["set-up"].append(first_at - called - first_evals)
        found["first step"].append(first_evals)
        found["closing"].append(returned - marks[-1][0])
    return found


def host_work(repeats: int = 5) -> list[tuple[str, float, float]]:
    """Medians (s: wall, and this thread's CPU time, which on a contended box is the work itself) of the host-side
    pieces of the gap for a 2400x1655 photo at 1024 px (the issue's GPU run): what a GPU does not speed up. Before:
    the working copy (a LANCZOS resize) made four times a photo, the hash once, the decode and the encode on the
    worker's path; after: the working copy once, no hash, decode ahead and encode behind."""
    import hashlib

    from PIL import Image

    from bench.common import issue_photo
    from pipeline.engine import images

    photo = issue_photo()
    hw = images.fit_size(photo.size, 1024)[::-1]
    data = images.encode(photo, "jpeg", 92)
    small = images.resize_once(photo, hw)
    pieces = {
        "decode the 2400x1655 JPEG": lambda: Image.open(io.BytesIO(data)).load(),
        "one LANCZOS working copy at 1024 px": lambda: images.resize_once(photo, hw),
        "hash the photo (checkpoint fingerprint)": lambda: hashlib.sha1(photo.tobytes()).hexdigest(),
        "picture to tensor at 1024 px": lambda: images.to_tensor(small),
        "encode the 1024 px result as PNG": lambda: images.encode(small, "png"),
    }
    found = []
    for name, work in pieces.items():
        wall, cpu = [], []
        for _ in range(repeats):
            started, used = time.perf_counter(), time.thread_time()
            work()
            wall.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - used)
        found.append((name, statistics.median(wall), statistics.median(cpu)))
    return found


def daemon_phases(log: Path) -> dict[str, list[float]]:
    """Per consecutive pair on the one slot: seconds from A's last step to each later mark."""
    from bench.common import events

    runs: dict[str, dict] = {}
    order: list[str] = []
    for e in events(log):
        job = e.get("job_id")
        if not job:
            continue
        if job not in runs:
            runs[job] = {}
            order.append(job)
        mark = e.get("event")
        if mark == "progress":
            runs[job].setdefault("first step", e["t"])
            runs[job]["last step"] = e["t"]
        elif mark in ("output written", "job done", "job started"):
            runs[job].setdefault(mark, e["t"])
    stepped = sorted((r for r in runs.values() if "first step" in r), key=lambda r: r["first step"])
    found: dict[str, list[float]] = {name: [] for name in DAEMON_PHASES}
    for a, b in zip(stepped, stepped[1:]):
        end = a["last step"]
        for name, value in (("output written", a.get("output written")), ("job done", a.get("job done")),
                            ("next job started", b.get("job started")), ("next first step", b["first step"])):
            if value is not None:
                found[name].append(value - end)
    return found


def engine_run(tree: Path, name: str, args, env: dict) -> dict:
    code = subprocess.run([sys.executable, __file__, "--engine-in", str(tree), "--photos", str(args.photos),
                           "--size", str(args.size), "--steps", str(args.steps)],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=3600)
    if code.returncode:
        raise SystemExit(f"{name}: the engine run failed:\n{code.stderr[-3000:]}")
    return json.loads(code.stdout.strip().splitlines()[-1])


def measure(tree: Path, name: str, args, env: dict, out: Path) -> tuple[dict, dict]:
    from bench.daemon_run import run_backlog

    engine = {} if args.no_engine else engine_run(tree, name, args, env)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = run_backlog(out / name, args.photos, args.size, args.steps, env, 3600, root=tree,
                      overrides={"progress_seconds": 0})
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not run.ok:
        raise SystemExit(f"{name}: the daemon run failed (see {run.folder / 'daemon.log'})")
    phases = daemon_phases(run.folder / "daemon.log")
    phases["a photo"] = [run.steady_s / max(1, len(run.dones) - 1)]  # first claim to last done, per photo after the first
    # the daemon's CPU seconds (user + sys, start-up included) a photo: on a contended box the work itself
    phases[CPU] = [(now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime) / max(1, len(run.dones))]
    return engine, phases


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="89f30fc", help="the commit to compare this tree with")
    parser.add_argument("--after", default=None, help="a commit to measure instead of this tree")
    parser.add_argument("--also", action="append", default=[], help="another commit to measure beside them")
    parser.add_argument("--no-engine", action="store_true", help="the daemon's view only")
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engine-in", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gap")
    args = parser.parse_args()
    if args.engine_in:
        sys.path.insert(0, str(args.engine_in))
        print(json.dumps(engine_phases(args.photos, args.size, args.steps)))
        return
    from bench.common import extract  # not at the top: the --engine-in child imports another tree's pipeline

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    trees = {f"before ({args.before})": extract(args.before, args.out),
             **{f"also ({ref})": extract(ref, args.out) for ref in args.also},
             f"after ({args.after or 'this tree'})": extract(args.after, args.out) if args.after else ROOT}
    pooled = {name: ({p: [] for p in ENGINE_PHASES}, {p: [] for p in (*DAEMON_PHASES, WHOLE, CPU)}) for name in trees}
    load = []
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            load.append(os.getloadavg()[0])
            engine, daemon = measure(tree, f"r{round_}-{list(trees).index(name)}", args, env, args.out)
            print(name, json.dumps({"engine": engine, "daemon": daemon}), file=sys.stderr, flush=True)
            for phase, values in engine.items():
                pooled[name][0][phase] += values
            for phase, values in daemon.items():
                pooled[name][1][phase] += values
    print(f"# bench/gap.py: {args.photos} photos at {args.size} px, {args.steps} steps, {args.rounds} rounds "
          f"alternating; {os.cpu_count()} cores, OMP_NUM_THREADS=1; load average {min(load):.1f}-{max(load):.1f}\n")
    head = ["checkout", *(f"engine: {p}" for p in ENGINE_PHASES),
            *(f"daemon: last step to {p}" for p in DAEMON_PHASES), "daemon: a photo (claim to done, steady)",
            "daemon: CPU a photo (process, start-up included)"]
    print("medians, ms\n\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, (engine, daemon) in pooled.items():
        print("| " + " | ".join([name, *(ms(engine[p]) for p in ENGINE_PHASES),
                                 *(ms(daemon[p]) for p in (*DAEMON_PHASES, WHOLE, CPU))]) + " |")
    if args.no_engine:
        return
    print("\nhost work a GPU does not speed up (this CPU, medians of 5)\n\n| piece | wall ms | CPU ms |\n|---|---|---|")
    for name, wall, cpu in host_work():
        print(f"| {name} | {wall * 1000:.1f} | {cpu * 1000:.1f} |")


if __name__ == "__main__":
    main()
