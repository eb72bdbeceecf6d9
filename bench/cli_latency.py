"""How long the CLI takes to say no (issue 11 item 7): a usage or path error, `status`, `validate`, `init`.

Each command runs as a fresh process (as a person types it), N times; the table gives the median wall time and
whether torch was imported. ``--against DIR`` also runs another checkout (e.g. the commit before the fix) side by
side, interleaved, so the ratio comes from one run on one (possibly contended) machine.

    .venv/bin/python bench/cli_latency.py [-n 5] [--against /path/to/old/checkout]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ROOT / "pipeline" / "assets" / "samples" / "rocket.jpg"
STYLE = ROOT / "pipeline" / "assets" / "styles" / "the_scream.jpg"
PROBE = ("import json, sys, time; t = time.perf_counter(); from pipeline import cli; rc = cli.main(sys.argv[1:]); "
         "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}))")


def cases(tmp: Path, config: Path) -> dict[str, list[str]]:
    out = str(tmp / "x.png")
    return {
        "stylize nope.jpg (no such file)": ["stylize", "nope.jpg", str(STYLE), "-o", out],
        "stylize --size 0": ["stylize", str(CONTENT), str(STYLE), "-o", out, "--size", "0"],
        "stylize -o /missing/dir/x.png": ["stylize", str(CONTENT), str(STYLE), "-o", "/missing/dir/x.png"],
        "stylize -o x.gif": ["stylize", str(CONTENT), str(STYLE), "-o", str(tmp / "x.gif"), "--size", "32",
                             "--steps", "1"],
        "stylize --device banana": ["stylize", str(CONTENT), str(STYLE), "-o", out, "--device", "banana"],
        "stylize --device cuda (no GPU)": ["stylize", str(CONTENT), str(STYLE), "-o", out, "--device", "cuda"],
        "status": ["status", "--config", str(config)],
        "validate": ["validate", "--config", str(config)],
    }


def run_once(checkout: Path, argv: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=checkout,
                            env=env, timeout=600)
    seconds = time.perf_counter() - started
    last = result.stdout.strip().splitlines()[-1:] or ["{}"]
    try:
        return seconds, json.loads(last[0])
    except json.JSONDecodeError:  # e.g. argparse exited before the probe printed
        return seconds, {"rc": result.returncode, "torch": "?"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--against", type=Path, help="another checkout to time side by side")
    args = parser.parse_args()
    checkouts = {"this": ROOT, **({"against": args.against.resolve()} if args.against else {})}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = ROOT / "config.yaml"
        times: dict[tuple[str, str], list[float]] = {}
        facts: dict[tuple[str, str], dict] = {}
        for _ in range(args.n):
            for name, argv in cases(tmp, config).items():
                for label, checkout in checkouts.items():  # interleaved: contention hits both alike
                    seconds, fact = run_once(checkout, argv)
                    times.setdefault((name, label), []).append(seconds)
                    facts[(name, label)] = fact
    print(f"median wall seconds over {args.n} runs, fresh process each; {os.cpu_count()} CPUs")
    header = f"{'command':34} {'this':>7} {'torch':>6} {'rc':>3}"
    if args.against:
        header += f" {'against':>8} {'torch':>6} {'ratio':>6}"
    print(header)
    for name in cases(Path("/"), config):
        this = statistics.median(times[(name, "this")])
        fact = facts[(name, "this")]
        row = f"{name:34} {this:7.2f} {str(fact.get('torch')):>6} {fact.get('rc')!s:>3}"
        if args.against:
            other = statistics.median(times[(name, "against")])
            row += f" {other:8.2f} {str(facts[(name, 'against')].get('torch')):>6} {other / this:5.1f}x"
        print(row)


if __name__ == "__main__":
    main()
