"""Shared by the throughput benchmarks (bench.py's daemon section, bench_ray.py): a backlog of drops, one
`style-pipeline once` run over it with a JSON log, and when each job was claimed and done. One parser and one
set-up, so the two tables agree."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "pipeline" / "assets" / "samples"


@dataclass
class Backlog:
    """One `once` run over a backlog: its exit status, wall seconds (start-up included) and the log's events."""

    folder: Path
    returncode: int
    total_s: float
    claims: list[float]
    dones: list[float]

    @property
    def steady_s(self) -> float:
        """First claim to last job done: the run without its start-up (NaN when the log has neither)."""
        return (max(self.dones) - min(self.claims)) if self.claims and self.dones else float("nan")

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.claims) and bool(self.dones)

    def outputs(self, pattern: str) -> list[Path]:
        return list((self.folder / "outbox").rglob(pattern))


def run_backlog(folder: Path, drops: int, size: int, steps: int, env: dict, timeout: float, *,
                second_recipe_every: int = 0, overrides: dict | None = None, root: Path = ROOT,
                photos: list[Path] | None = None, **popen) -> Backlog:
    """``drops`` photos in turn from ``photos`` (the sample photos by default; every n-th into the "scream" recipe
    folder if asked), then one `once` run of the checkout at ``root`` (bench/gap.py compares two)."""
    shutil.rmtree(folder, ignore_errors=True)
    config = backlog_config(folder, size, steps, overrides)
    samples = photos or sorted(SAMPLES.glob("*.jpg"))
    for i in range(drops):
        sub = folder / "inbox" / ("scream" if second_recipe_every and i % second_recipe_every == 3 else "")
        sub.mkdir(exist_ok=True)
        shutil.copy(samples[i % len(samples)], sub / f"drop{i:03d}.jpg")
    log = folder / "daemon.log"
    returncode, total = run_once(config, log, env, timeout, root=root, **popen)
    return Backlog(folder, returncode, total, *claim_and_done_times(log))


def backlog_config(folder: Path, size: int, steps: int, overrides: dict | None = None) -> Path:
    """The daemon's config for a backlog run: a bench layout's overrides at the top (they may turn sheets on), and
    their "defaults" joined to the engine's (``compile: true`` is an engine key, refused at the top)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from daemon_helpers import make_config

    top = dict(overrides or {})
    engine = top.pop("defaults", {})
    return make_config(folder, **{"settle_seconds": 0.1, "rescan_seconds": 1, "log_format": "json",
                                  "contact_sheet": False, **top,
                                  "defaults": {"size": size, "steps": steps, "format": "png", "early_stop_tol": 0,
                                               **engine}})


def run_once(config: Path, log: Path, env: dict, timeout: float, root: Path = ROOT, **popen) -> tuple[int, float]:
    """(exit status, wall seconds) of one `once` run, its output into ``log``."""
    started = time.monotonic()
    with open(log, "wb") as handle:
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(config)], cwd=root,
                              env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, **popen)
    return proc.returncode, time.monotonic() - started


def claim_and_done_times(log: Path) -> tuple[list[float], list[float]]:
    """Epoch seconds of each "claimed" and "job done" event in a JSON log (other lines skipped)."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass

    def stamp(event: dict) -> float:
        return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()

    return ([stamp(e) for e in events if e.get("event") == "claimed"],
            [stamp(e) for e in events if e.get("event") == "job done"])
