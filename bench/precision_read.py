"""What `precision: auto` costs a run that reads the record (README, "Precision"): each run asks
engine.precision.recorded() as it builds its loss. The first ask in a process reads and checks precision.json
(and the CPU's name, its key); later asks stat the file and find that version remembered.

Each fresh process (imports not timed) times its first ask, then the median of WARM asks; medians over
PROCESSES processes, a record present beside none at all.

    .venv/bin/python bench/precision_read.py
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROCESSES = 5
WARM = 2000


def child() -> None:
    """In a fresh process: the first ask, then the median of WARM asks, in seconds (one JSON line)."""
    import torch

    from pipeline.engine import precision

    cpu = torch.device("cpu")
    started = time.perf_counter()
    choice = precision.recorded(cpu)
    first = time.perf_counter() - started
    times = []
    for _ in range(WARM):
        started = time.perf_counter()
        precision.recorded(cpu)
        times.append(time.perf_counter() - started)
    print(json.dumps({"choice": choice, "first_s": first, "warm_s": statistics.median(times)}))


def measure(cache: Path) -> dict:
    env = {"STYLE_PIPELINE_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    runs = [json.loads(subprocess.run([sys.executable, __file__, "--child"], env=env, cwd=ROOT, check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(PROCESSES)]
    return {"choice": runs[0]["choice"], "first_s": statistics.median(r["first_s"] for r in runs),
            "warm_s": statistics.median(r["warm_s"] for r in runs)}


def main() -> None:
    import torch

    from bench.common import machine, table
    from pipeline.engine import precision

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        rows.append(["no record", *measure(cache).values()])
        os.environ["STYLE_PIPELINE_CACHE"] = str(cache)  # where write_record puts it
        precision.write_record(torch.device("cpu"), {"choice": "fp32", "measured": "bench/precision_read.py"})
        rows.append(["a record for this CPU", *measure(cache).values()])
    print(f"Machine: {machine(with_load=True)}\n")
    print(f"precision.recorded() in a fresh process: the first ask, then the median of {WARM}; medians over "
          f"{PROCESSES} processes\n")
    print(table(["precision.json", "choice", "first ask, ms", "each later ask, µs"],
                [[name, choice, first * 1e3, warm * 1e6] for name, choice, first, warm in rows]))


if __name__ == "__main__":
    child() if sys.argv[1:] == ["--child"] else main()
