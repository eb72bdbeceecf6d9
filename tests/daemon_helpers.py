"""Real daemons in subprocesses, on real folders, with tiny images and few steps."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STYLES = ROOT / "pipeline" / "assets" / "styles"
SAMPLES = ROOT / "pipeline" / "assets" / "samples"


def make_config(folder: Path, **overrides) -> Path:
    """A config for tests: 32 px, 2 steps, short settle; overrides merge at the top level."""
    data = {
        "folders": {"inbox": "inbox", "outbox": "outbox", "spool": "spool"},
        "styles_dir": str(STYLES),
        "settle_seconds": 0.3,
        "rescan_seconds": 2,
        "retry_backoff_seconds": 0.2,
        "contact_sheet": False,
        "log_format": "json",
        "default_recipe": "starry",
        "defaults": {"size": 32, "steps": 2, "format": "png", "early_stop_tol": 0},
        "recipes": {"starry": {"styles": ["starry_night.jpg"]}, "scream": {"styles": ["the_scream.jpg"]}},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "inbox").mkdir(exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


RUN_CLI = "\nimport sys\nfrom pipeline.cli import main\nsys.exit(main())\n"  # argv None: as the program


def start(config: Path, *args: str, log: Path | None = None, prefix: tuple[str, ...] = (),
          patches: str = "") -> subprocess.Popen:
    """A daemon in a subprocess; ``prefix`` wraps the command (e.g. setpriv to drop root's file powers);
    ``patches``: Python run in it first (a write held back until the kill)."""
    log = log or config.parent / f"daemon-{time.monotonic_ns()}.log"
    handle = open(log, "wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = ["-c", patches + RUN_CLI] if patches else ["-m", "pipeline.cli"]
    proc = subprocess.Popen([*prefix, sys.executable, *command, "run", "--config", str(config), *args],
                            stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def wait_ready(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the daemon logs "watching". 120 s, not 60: under load 40 (helpers at work beside a suite) a start,
    torch's import and the weights' load, passed 60 s in three -n 3 runs; a timeout only, it asserts nothing."""
    wait_for(lambda: b'"event": "watching"' in Path(proc.log_path).read_bytes(), timeout, proc)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}:\n{_tail(proc)}")
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s\n{_tail(proc) if proc is not None else ''}")


def _tail(proc: subprocess.Popen) -> str:
    """The end of the daemon's log; nothing when it logs to a device (/dev/full reads as endless zeros)."""
    path = Path(proc.log_path)
    return path.read_text(errors="replace")[-3000:] if path.is_file() else ""


def stop(proc: subprocess.Popen, timeout: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("daemon did not stop within the timeout after SIGTERM")
    return proc.returncode


def restart_until_landed(config: Path, count: int) -> None:
    """A plain daemon on ``config`` until ``count`` photos are written or failed (after a kill), then stopped."""
    daemon = start(config)
    try:
        wait_for(lambda: len(outputs(config.parent)) + len(errors(config.parent)) == count, 120, daemon)
    finally:
        stop(daemon)


def run_until_killed(config: Path, patches: str, failed: int, timeout: float = 120) -> int:
    """A daemon with ``patches`` until it dies (a poison photo's kill) or ``failed`` photos went to failed/ (then
    stopped); its exit status."""
    proc = start(config, patches=patches)
    try:
        wait_for(lambda: proc.poll() is not None or len(errors(config.parent)) >= failed, timeout)
    finally:
        if proc.poll() is None:
            stop(proc)
    return proc.returncode


def assert_landed_once_after_restart(config: Path, names: tuple[str, ...], uncharged: tuple[str, ...]) -> None:
    """After a kill -9 while results waited for their writes: nothing was written; a plain restart writes each
    photo once and fails none, and the photos in ``uncharged`` were not charged a crash."""
    root = config.parent
    assert outputs(root) == [], "the writes were held back"
    restart_until_landed(config, len(names))
    assert errors(root) == {}, "nothing failed"
    assert sorted(p.name for p in outputs(root)) == [f"{name}.png" for name in names], "each written once"
    for name in uncharged:
        assert json.loads((root / "outbox" / "starry" / f"{name}.json").read_text())["crashes"] == 0, name


def claimed(folder: Path):
    """(config, spool, job life, job): rocket.jpg claimed by a real Spool, a JobLife on it; no daemon, no try begun."""
    import shutil
    import threading

    from pipeline.daemon.config import load
    from pipeline.daemon.config_build import check_folders
    from pipeline.daemon.jobs import JobLife
    from pipeline.daemon.spool import Spool

    config = load(make_config(folder))
    check_folders(config)
    shutil.copy(SAMPLES / "rocket.jpg", config.inbox / "rocket.jpg")
    spool = Spool(config.inbox, config.work, config.done, config.failed)
    job = spool.claim(config.inbox / "rocket.jpg", "2026-11-29T00:00:00Z")
    return config, spool, JobLife(spool, lambda: config, threading.Event()), job


def outputs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "outbox").rglob("*") if p.suffix in (".png", ".jpg", ".webp")
                  and not p.name.startswith(".") and not p.name.endswith(".sheet.png"))


def assert_deleted_as_the_try_began(root: Path) -> None:
    """The one output's log and spool/done agree with after_success: delete, the config the try opened with, though
    a reload swapped in `move` mid-job (test_jobs, test_ray: the local worker and the Ray executor alike)."""
    [image] = outputs(root)
    kept_as = json.loads(image.with_suffix(".json").read_text())["input"]["kept_as"]
    kept = list((root / "spool" / "done").rglob("rocket*"))
    assert (kept_as, kept) == (None, []), f"log kept_as={kept_as!r}, done/ holds {kept}"


def errors(root: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["file"]: json.loads(p.read_text())
            for p in (root / "spool" / "failed").glob("*.error.json")}


def log_events(proc: subprocess.Popen) -> list[dict]:
    events = []
    for line in Path(proc.log_path).read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events


def status_json(root: Path) -> dict:
    try:
        return json.loads((root / "spool" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def fill_disk(filler: Path) -> int:
    """Write ``filler`` until the filesystem is full (ENOSPC); its size in bytes."""
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 20))
                handle.flush()
        except OSError:
            pass
    return filler.stat().st_size


def mounted_tmpfs(point: Path, skip_why: str):
    """A real 16 MB tmpfs at ``point`` (made if missing), unmounted after: a generator for a pytest fixture. Mounting
    needs root with mount rights (CI runs as root): elsewhere the test is skipped with ``skip_why``, never failed."""
    import pytest

    point.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(point)],
                      capture_output=True).returncode != 0:
        pytest.skip(f"mount -t tmpfs is not allowed here: {skip_why}")
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)
