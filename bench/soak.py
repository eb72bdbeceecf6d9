#!/usr/bin/env python
"""Soak: two daemons on one inbox, a random mix of good and bad drops, kill -9, SIGTERM and a full disk.

    python bench/soak.py --duration 600          # ~10 min, then a drain of up to --drain seconds
    python bench/soak.py --duration 60 --seed 3  # a quick look

Every drop gets a unique name, so at the end each can be found exactly once: an output plus its input in
done/, or its input in failed/ with an .error.json. Checks: nothing lost, nothing twice, no daemon exited by
itself, both alive and healthy at the end. The inbox, outbox and spool live on a real tmpfs (root and
`mount` needed; without it the disk is never filled and the report says so). Prints a table of counts.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.daemon.spool import count_in_work  # noqa: E402
sys.path.insert(0, str(ROOT / "tests"))
from daemon_helpers import fill_disk  # noqa: E402

SAMPLES = ROOT / "pipeline" / "assets" / "samples"
STYLES = ROOT / "pipeline" / "assets" / "styles"
BOMB = "\n".join(["a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
                 + [f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")]) + "\n"
DROPS_START, CHAOS_START = 15, 30  # seconds after the daemons start: the first drop, the first kill/stop/fill
KINDS = {"good": 30, "odd_name": 8, "long_name": 6, "cjk_name": 6, "thin": 5, "sidecar": 6, "bad_sidecar": 3,
         "yaml_bomb": 2, "not_image": 4, "empty": 3, "truncated": 3, "symlink": 3, "slow_writer": 4,
         "recipe_folder": 6}


class Soak:
    def __init__(self, args) -> None:
        self.args, self.rng = args, random.Random(args.seed)
        self.root = Path(args.root).resolve()
        self.fs = self.root / "fs"
        self.dropped: dict[str, str] = {}  # unique name -> kind
        self.counts = collections.Counter()
        self.procs: dict[str, subprocess.Popen | None] = {"A": None, "B": None}
        self.restart_at: dict[str, float] = {"A": 0.0, "B": 0.0}
        self.terminated: set[str] = set()
        self.filler: Path | None = None
        self.n = 0

    # --- set-up -----------------------------------------------------------------------------------
    def setup(self) -> None:
        subprocess.run(["umount", "-l", str(self.fs)], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        self.fs.mkdir(parents=True)
        (self.root / "logs").mkdir()
        self.tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.args.tmpfs_mb}m", "tmpfs",
                                     str(self.fs)], capture_output=True).returncode == 0
        config = {"folders": {"inbox": "inbox", "outbox": "outbox", "spool": "spool"}, "styles_dir": str(STYLES),
                  "settle_seconds": 0.5, "rescan_seconds": 5, "retry_backoff_seconds": 0.5, "contact_sheet": False,
                  "log_format": "json", "default_recipe": "starry", "stall_seconds": 120,
                  "defaults": {"size": self.args.size, "steps": self.args.steps, "format": "png",
                               "early_stop_tol": 0, "checkpoint_every": 2, "checkpoint_seconds": 0},
                  "recipes": {"starry": {"styles": ["starry_night.jpg"]}, "scream": {"styles": ["the_scream.jpg"]}}}
        (self.fs / "inbox" / "scream").mkdir(parents=True)
        self.config = self.fs / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.outside = self.root / "outside.jpg"
        shutil.copy(SAMPLES / "coffee.jpg", self.outside)
        for folder in ("x.jpg", ".hidden"):  # skipped with a warning, their contents left alone
            (self.fs / "inbox" / folder).mkdir()
            shutil.copy(SAMPLES / "rocket.jpg", self.fs / "inbox" / folder / "inside.jpg")

    def start(self, slot: str) -> None:
        self.counts["starts"] += 1
        log = open(self.root / "logs" / f"{slot}-{self.counts['starts']:03d}.log", "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.procs[slot] = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config",
                                             str(self.config)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    # --- drops --------------------------------------------------------------------------------------
    def name(self, kind: str, ext: str = ".jpg") -> str:
        self.n += 1
        tag = f"{self.n:04d}"
        if kind == "odd_name":
            return f"odd {tag} 'quote' #hash ☃ (1){ext}"
        if kind == "long_name":
            return f"{tag}" + "L" * 246 + ext
        if kind == "cjk_name":
            return f"{tag}" + "写真" * 40 + ext
        return f"{kind}-{tag}{ext}"

    def drop(self) -> None:
        kind = self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        inbox = self.fs / "inbox"
        folder = inbox / "scream" if kind == "recipe_folder" else inbox
        name = self.name(kind, ".png" if kind in ("not_image", "thin") else ".jpg")
        target = folder / name
        try:
            self._write(kind, target)
        except OSError:  # the disk is full: the drop itself failed, as it would for a person
            self.counts["drops refused (disk full)"] += 1
            for path in (target, target.with_suffix(".yaml")):
                if path.is_file() or path.is_symlink():
                    path.unlink()
            return
        self.dropped[name] = kind
        self.counts[f"drop {kind}"] += 1

    def _write(self, kind: str, target: Path) -> None:
        sample = SAMPLES / self.rng.choice(["coffee.jpg", "rocket.jpg", "astronaut.jpg"])
        if kind == "thin":
            Image.new("RGB", (self.rng.choice([300, 900]), self.rng.choice([4, 12, 20])), (200, 90, 40)).save(target)
        elif kind in ("sidecar", "bad_sidecar", "yaml_bomb"):
            text = {"sidecar": "recipe: scream\nseed: 3\n", "bad_sidecar": "stpes: 3\n", "yaml_bomb": BOMB}[kind]
            target.with_suffix(".yaml").write_text(text)
            shutil.copy(sample, target)
        elif kind == "not_image":
            target.write_text("this is not a picture\n")
        elif kind == "empty":
            target.write_bytes(b"")
        elif kind == "truncated":
            data = sample.read_bytes()
            target.write_bytes(data[: len(data) // 3])
        elif kind == "symlink":
            os.symlink(self.outside, target)
        elif kind == "slow_writer":
            threading.Thread(target=self._slow, args=(sample, target), daemon=True).start()
        else:
            shutil.copy(sample, target)

    def _slow(self, sample: Path, target: Path) -> None:
        data = sample.read_bytes()
        try:
            with open(target, "wb") as handle:
                for i in range(0, len(data), len(data) // 4 + 1):
                    handle.write(data[i:i + len(data) // 4 + 1])
                    handle.flush()
                    time.sleep(self.rng.uniform(0.3, 1.5))
        except OSError:
            self.counts["slow writes cut by a full disk"] += 1

    # --- chaos --------------------------------------------------------------------------------------
    def chaos(self) -> None:
        roll = self.rng.random()
        live = [s for s, p in self.procs.items() if p and p.poll() is None and s not in self.terminated]
        if roll < 0.45 and live:
            slot = self.rng.choice(live)
            self.procs[slot].kill()
            self.procs[slot].wait()
            self.counts["kill -9"] += 1
            self.restart_at[slot] = time.monotonic() + self.rng.uniform(0.5, 4)
        elif roll < 0.75 and live:
            slot = self.rng.choice(live)
            self.procs[slot].send_signal(signal.SIGTERM)
            self.terminated.add(slot)
            self.counts["SIGTERM"] += 1
        elif self.tmpfs and self.filler is None:
            self.fill()

    def fill(self) -> None:
        self.filler = self.fs / ".filler"
        fill_disk(self.filler)
        self.free_at = time.monotonic() + self.rng.uniform(5, 20)
        self.counts["disk filled"] += 1

    def tend(self) -> None:
        """Restart killed and stopped daemons; free the disk when its time comes; note surprise exits."""
        now = time.monotonic()
        for slot, proc in self.procs.items():
            if proc is None or proc.poll() is None:
                continue
            if slot in self.terminated:
                self.counts[f"SIGTERM exit {proc.returncode}"] += 1  # -15: it came before the handlers were set
                self.terminated.discard(slot)
                self.restart_at[slot] = now + self.rng.uniform(0.5, 3)
                self.procs[slot] = None
            elif proc.returncode not in (-9,):
                self.counts["daemon exited by itself"] += 1
                self.procs[slot] = None
        for slot, proc in self.procs.items():
            if (proc is None or proc.poll() is not None) and slot not in self.terminated and now >= self.restart_at[slot]:
                self.start(slot)
        if self.filler is not None and now >= self.free_at:
            self.filler.unlink()
            self.filler = None

    # --- the run ------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.setup()
        started = time.monotonic()
        for slot in self.procs:
            self.start(slot)
        next_drop, next_chaos = started + DROPS_START, started + CHAOS_START
        while time.monotonic() - started < self.args.duration:
            now = time.monotonic()
            self.tend()
            if now >= next_drop:
                self.drop()
                next_drop = now + self.rng.expovariate(1 / self.args.drop_every)
            if now >= next_chaos:
                self.chaos()
                next_chaos = now + self.rng.expovariate(1 / self.args.chaos_every)
            time.sleep(0.05)
        return self.drain(started)

    def drain(self, started: float) -> dict:
        if self.filler is not None:
            self.filler.unlink()
            self.filler = None
        deadline = time.monotonic() + self.args.drain
        while time.monotonic() < deadline and not self.settled():
            self.tend()
            time.sleep(1)
        self.counts["seconds"] = round(time.monotonic() - started)
        return self.check()

    def settled(self) -> bool:
        inbox = self.fs / "inbox"
        waiting = [p for p in inbox.rglob("*") if not p.is_dir() and p.parts[len(inbox.parts)] not in ("x.jpg", ".hidden")]
        return not waiting and count_in_work(self.fs / "spool" / "work") == 0

    def check(self) -> dict:
        spool = self.fs / "spool"
        done = collections.Counter(p.name for p in (spool / "done").iterdir()) if (spool / "done").is_dir() else {}
        errors = [json.loads(p.read_text()) for p in (spool / "failed").glob("*.error.json")]
        failed = collections.Counter(e["file"] for e in errors)
        outputs = collections.Counter(json.loads(p.read_text())["input"]["name"]
                                      for p in (self.fs / "outbox").rglob("*.json"))
        photos = {n for n in self.dropped}
        lost = sorted(n for n in photos if done[n] + failed[n] == 0)
        twice = sorted(n for n in photos if done[n] + failed[n] > 1 or outputs[n] > 1)
        unstyled = sorted(n for n in photos if done[n] and not outputs[n])
        codes = collections.Counter(f"failed {e['code']}" for e in errors)
        alive = [s for s, p in self.procs.items() if p is not None and p.poll() is None]
        status = self._status()
        skipped_kept = all((self.fs / "inbox" / f / "inside.jpg").exists() for f in ("x.jpg", ".hidden"))
        report = {**self.counts, "dropped": len(photos), "done (output + input in done/)": sum(done[n] > 0 for n in photos),
                  **codes, "lost": len(lost), "duplicated": len(twice), "done without an output": len(unstyled), "daemons alive at the end": len(alive),
                  "status at the end": status.get("state"), "settled": self.settled(), "tmpfs": self.tmpfs,
                  "skipped folders left alone": skipped_kept, "lost names": lost[:5], "duplicated names": twice[:5],
                  "crashes recorded": sum(e.get("crashes", 0) for e in errors) + self._crashes_in_outputs(),
                  **self._log_counts()}
        return report

    def _log_counts(self) -> dict:
        """What the daemons said about themselves, over every start."""
        wanted = {"disk full: claiming paused until space returns": "disk-full pauses (log)",
                  "disk space is back; claiming resumes": "resumed after disk full (log)",
                  "the worker thread died; starting a new one": "worker thread deaths (log)",
                  "error in the main loop; going on": "main-loop errors (log)",
                  "the failure path failed; keeping the file under its job id": "failure-path errors (log)",
                  "status.json not written": "status writes failed (log)"}
        counts = collections.Counter()
        for path in (self.root / "logs").glob("*.log"):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    counts["non-JSON log lines (tracebacks)"] += line.startswith("Traceback")
                    continue
                if event.get("event") in wanted:
                    counts[wanted[event["event"]]] += 1
        return {key: counts[key] for key in [*wanted.values(), "non-JSON log lines (tracebacks)"]}

    def _crashes_in_outputs(self) -> int:
        return sum(json.loads(p.read_text()).get("crashes", 0) for p in (self.fs / "outbox").rglob("*.json"))

    def _status(self) -> dict:
        try:
            return json.loads((self.fs / "spool" / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            if proc is not None:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.tmpfs and not self.args.keep:
            subprocess.run(["umount", "-l", str(self.fs)], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help=f"seconds of drops and chaos (drops start at {DROPS_START} s, chaos at {CHAOS_START} s)")
    parser.add_argument("--drain", type=float, default=240, help="at most this long to finish the backlog")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drop-every", type=float, default=2.5, help="mean seconds between drops")
    parser.add_argument("--chaos-every", type=float, default=35, help="mean seconds between kills/stops/fills")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tmpfs-mb", type=int, default=96)
    parser.add_argument("--root", default=str(ROOT / "bench" / "out" / "soak"))
    parser.add_argument("--keep", action="store_true", help="leave the tmpfs mounted to look around")
    args = parser.parse_args()
    soak = Soak(args)
    try:
        report = soak.run()
    finally:
        soak.stop()
    width = max(len(k) for k in report)
    print(f"soak: {args.duration:.0f} s, seed {args.seed}, {os.cpu_count()} CPUs")
    for key, value in report.items():
        print(f"  {key:<{width}}  {value}")
    ok = (report["lost"] == 0 and report["duplicated"] == 0 and report["daemons alive at the end"] == 2
          and report["done without an output"] == 0
          and not report.get("daemon exited by itself") and report["settled"])
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
