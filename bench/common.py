"""What the benchmarks here share: paths and pairs, the machine's name, medians, JSON files, markdown tables, and
child processes that answer with one tagged JSON line. Nothing here imports torch: bench_ray.py uses it too."""
from __future__ import annotations

import json
import os
import platform
import statistics
import io
import subprocess
import sys
import tarfile
import time
from datetime import datetime
from pathlib import Path

from pipeline.engine.device import cpu_model  # no torch; the precision record names a CPU the same way

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
ASSETS = ROOT / "pipeline" / "assets"
PAIRS = [
    (ASSETS / "samples" / "coffee.jpg", ASSETS / "styles" / "starry_night.jpg"),
    (ASSETS / "samples" / "astronaut.jpg", ASSETS / "styles" / "the_scream.jpg"),
]


ISSUE_PHOTO = (2400, 1655)  # issue 13's GPU run: 12 photos of this size at 1024 px


def sync(device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a CPU needs nothing): before and after a timing."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clocked(fn, device) -> float:
    """Wall seconds of fn(), the device's queue drained before and after."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def synced_now(device) -> float:
    """The host clock once the device's queue is drained: a step's end as the device saw it."""
    sync(device)
    return time.perf_counter()


def issue_photo():
    """A sample photo upscaled to issue 13's 2400x1655, with 5% sensor-like noise (pure upscaling compresses too
    well): the photo the issue measured the daemon with (1024x706 at 1024 px), for bench/gap.py and bench/pool.py."""
    from PIL import Image

    from pipeline.engine import images

    photo = images.load(ASSETS / "samples" / "rocket.jpg").resize(ISSUE_PHOTO, Image.LANCZOS)
    return Image.blend(photo, Image.effect_noise(photo.size, 64).convert("RGB"), 0.05)


def load_pair(index: int = 0):
    """(photo, painting) of PAIRS[index], decoded as the engine decodes them."""
    from pipeline.engine import images

    c, s = PAIRS[index]
    return images.load(c), images.load(s)


def pair_name(index: int) -> str:
    return f"{PAIRS[index][0].stem}+{PAIRS[index][1].stem}"


def pick(args, full, quick, smoke):
    """The setting for this run's tier: full, --quick (minutes), or --smoke (seconds: checks the script runs)."""
    return smoke if getattr(args, "smoke", False) else quick if args.quick else full


def median(xs):
    return statistics.median(xs) if xs else None


def median_time(fn, repeat: int) -> float:
    """The median of ``repeat`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def big_photo(mp: float, source: Path = ASSETS / "samples" / "coffee.jpg"):
    """``source`` upscaled to ``mp`` megapixels at 3:2, RGB: a big camera photo's size for the load benches."""
    from PIL import Image

    width = int((mp * 1e6 * 3 / 2) ** 0.5)
    photo = Image.open(source).convert("RGB")
    return photo.resize((width, width * 2 // 3), Image.Resampling.BICUBIC)


def p10(xs) -> float | None:
    """10th percentile (numpy's linear rule): a run's speed when the shared CPU was quiet."""
    import numpy as np

    return float(np.percentile(xs, 10)) if len(xs) else None


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def save_json(out: Path, name: str, data) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1))


def read_json(out: Path, name: str):
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(v) -> str:
    """A table cell: three significant figures, one decimal from 10 up, a dash for nothing."""
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000 or abs(v) < 0.01 or abs(v) < 10:
            return f"{v:.3g}"
        return f"{v:.1f}"
    return "—" if v is None else str(v)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**missed**")


def memory() -> str:
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        return f", {kb / 2 ** 20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        return ""


def machine(with_load: bool = False) -> str:
    """The machine in words, for every table's heading: cores, CPU, memory, torch's threads if it is loaded."""
    load = f" (load average {loadavg()[0]:.1f} at the start)" if with_load and loadavg() else ""
    torch = sys.modules.get("torch")
    threads = f"torch {torch.__version__} with {torch.get_num_threads()} threads, " if torch else ""
    return (f"{os.cpu_count()} CPU cores ({cpu_model()}){memory()}, shared with other jobs{load}, no GPU; "
            f"{threads}Python {platform.python_version()}")


def child_json(args: list[str], tag: str, env: dict | None = None) -> tuple[dict | None, subprocess.CompletedProcess]:
    """Run ``python bench/bench.py ARGS`` in a fresh process; its answer is the stdout line ``TAG {json}``."""
    proc = subprocess.run([sys.executable, str(BENCH / "bench.py"), *args], capture_output=True, text=True, cwd=ROOT,
                          env=env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith(tag + " ")]
    return (json.loads(lines[0][len(tag) + 1:]) if lines else None), proc


def answer_json(tag: str, data: dict) -> None:
    """A child's answer to child_json."""
    print(f"{tag} {json.dumps(data)}", flush=True)


def extract(ref: str, out: Path) -> Path:
    """The commit's tree (git archive), once per commit: the code before, run beside this tree's
    (bench/gap.py and bench/pool.py --before)."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    tree = out / f"tree-{commit[:10]}"
    if not (tree / "pipeline").is_dir():
        data = subprocess.run(["git", "archive", commit, "pipeline"], cwd=ROOT, capture_output=True, check=True).stdout
        tree.mkdir(parents=True, exist_ok=True)
        tarfile.open(fileobj=io.BytesIO(data)).extractall(tree)
    return tree


def events(log: Path) -> list[dict]:
    """A daemon log's JSON events, each with ``t``, its ISO timestamp (structlog's, with Z) as epoch seconds;
    lines that are not JSON events are skipped (bench/pool.py, gap.py and daemon_log.py read logs through it)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "timestamp" in event:
            event["t"] = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            found.append(event)
    return found
