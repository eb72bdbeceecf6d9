"""4. Daemon throughput: `style-pipeline once` on a backlog of drops, in a subprocess (bench/daemon_run.py).

busy = Σ optimizing_seconds (each output's JSON record) ÷ (last "job done" − first "claimed"), from the daemon's
JSON log: the share of the wall time the engine was optimising while there was work waiting.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from bench.common import loadavg, pick, save_json
from bench.daemon_run import run_backlog


def skipped(msg: str) -> dict:
    print("  " + msg)
    return {"skipped": msg}


def run(engine, args, out: Path) -> dict:
    print("\n== daemon throughput ==")
    try:
        import pipeline.daemon  # noqa: F401
    except ImportError as exc:
        return skipped(f"skipped: pipeline.daemon cannot be imported ({exc})")
    drops, size, steps = pick(args, (8, 256, 50), (4, 128, 20), (2, 64, 3))
    run_ = run_backlog(out / "daemon", drops, size, steps, {**os.environ, "PYTHONUNBUFFERED": "1"}, 3600)
    busy_s = sum(json.loads(p.read_text()).get("optimizing_seconds", 0.0) for p in run_.outputs("*.json"))
    if not run_.ok:
        return skipped(f"daemon run failed (rc {run_.returncode}); see {run_.folder / 'daemon.log'}")
    span = run_.steady_s
    d = {"images": len(run_.dones), "outputs": len(run_.outputs("*.json")), "wall_s": span, "total_s": run_.total_s,
         "busy_s": busy_s, "images_per_hour": 3600 * len(run_.dones) / span, "busy": busy_s / span, "size": size,
         "steps": steps, "drops": drops, "loadavg": loadavg()}
    print(f"  {d['images']} images at {size} px, {steps} steps: {d['images_per_hour']:.0f} images/hour, optimiser busy "
          f"{d['busy']:.1%} of {span:.1f} s (process {run_.total_s:.1f} s with start-up)")
    save_json(out, "daemon", d)
    return d
