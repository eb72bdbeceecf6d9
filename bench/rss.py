"""3. Peak memory (RSS): one child process per size running the default recipe, its VmHWM read at the end."""
from __future__ import annotations

import resource
import time
from pathlib import Path

from bench.common import answer_json, child_json, load_pair, pick, save_json
from pipeline.engine import Settings, StyleTransfer


def vm(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return -1


def rss_child(size: int, steps: int) -> None:
    content, style = load_pair(0)
    engine = StyleTransfer(device="cpu")
    base = vm("VmRSS")
    t = time.perf_counter()
    res = engine.stylize(content, [style], Settings(size=size, steps=steps, early_stop_tol=0.0))
    answer_json("RSS_JSON", {
        "size": size, "hw": list(res.scales[-1]), "steps": res.steps, "seconds": time.perf_counter() - t,
        "vmhwm_kb": vm("VmHWM"), "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "after_load_kb": base, "history": Settings().lbfgs_history, "optimizer": Settings().optimizer})


def history_mb(d: dict) -> float:
    """The optimiser's history work array, computed: what a run fills as it goes."""
    h, w = d["hw"]
    if d.get("optimizer") == "lbfgsb":  # scipy L-BFGS-B's float64 work array
        return (2 * d["history"] + 5) * 3 * h * w * 8 / 2 ** 20
    return (2 * d["history"] + 6) * 3 * h * w * 4 / 2 ** 20  # (s, y) pairs in float32 on the device, a few vectors


def one_size(size: int, steps: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    d, proc = child_json(["--_rss-child", str(size), str(steps)], "RSS_JSON")
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0 or d is None:
        print(f"  {size} px failed: {proc.stderr[-800:]}")
        return {"size": size, "error": proc.stderr[-800:]}
    d["children_maxrss_kb"] = children if children > before else None
    d["lbfgs_work_mb"] = history_mb(d)
    print(f"  {size} px ({d['hw'][1]}x{d['hw'][0]}): peak {d['vmhwm_kb'] / 2 ** 20:.2f} GiB, after loading VGG "
          f"{d['after_load_kb'] / 2 ** 20:.2f} GiB, {d['seconds']:.0f} s")
    return d


def run(engine, args, out: Path) -> list[dict]:
    # the L-BFGS history fills lazily: run long enough to fill it (quick mode doesn't; the report adds what's missing)
    sizes, steps = pick(args, ([256, 512, 1024], Settings().lbfgs_history + 5), ([256, 512], 8), ([64], 3))
    results = []
    print(f"\n== peak RSS, one subprocess per size, default recipe, {steps} L-BFGS steps ==")
    for size in sizes:
        results.append(one_size(size, steps))
        save_json(out, "rss", results)
    return results
