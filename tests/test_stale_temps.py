"""rev7b: a kill -9 inside write_atomic leaves its temp file (.<hash>.<host>.<pid>.<rand>.tmp) for good: its
`finally` never runs. A 4096 px print's checkpoint holds the pixels and the L-BFGS history (0.5 GB at 1024 px,
README; ~8 GB at 4096 px), so each kill mid-write left gigabytes hidden beside `--checkpoint`; the daemon's outputs
and records in outbox/ and spool/ the same. A run sweeps its checkpoint's, the daemon its folders' at start: only
temps no live writer holds (fsio.sweep_temps)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from daemon_helpers import ROOT, SAMPLES, STYLES, make_config
from pipeline.daemon.daemon import Daemon
from pipeline.fsio import HOST_TAG, STALE_SECONDS, sweep_temps, temp_name

HOLD = ("import os, time\n_fsync = os.fsync\n"
        "def held(fd):\n    if os.readlink(f'/proc/self/fd/{fd}').startswith(os.environ['HELD_IN']):\n"
        "        open(os.environ['HELD_FLAG'], 'w').close()\n        time.sleep(120)\n    return _fsync(fd)\n"
        "os.fsync = held\n")
RUN = "\nimport sys\nfrom pipeline.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def test_kill_9_during_the_checkpoint_write_leaves_no_temp_behind(tmp_path):
    folder = tmp_path / "prints"
    folder.mkdir()
    out, checkpoint, flag = tmp_path / "print.png", folder / "print.ckpt", tmp_path / "held"
    args = ["stylize", str(SAMPLES / "rocket.jpg"), str(STYLES / "starry_night.jpg"), "-o", str(out), "-q",
            "--size", "48", "--steps", "6", "--scales", "1", "--optimizer", "adam", "--checkpoint", str(checkpoint),
            "--checkpoint-every", "2", "--checkpoint-seconds", "0", "--early-stop-tol", "0", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HELD_FLAG": str(flag), "HELD_IN": str(folder)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD + RUN, *args], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "the checkpoint write never began"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")], "the kill left the temp (the case here)"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    left = sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))
    assert left == [], f"a killed checkpoint write's temp file is left for good: {left}"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temp(folder, target: str, host: str = HOST_TAG, pid: int | None = None, age: float = 0.0):
    """A temp file as write_atomic names it, for ``target``, written by ``pid`` on ``host``, ``age`` seconds old."""
    name = temp_name(folder / target).name.split(".")
    name[2], name[3] = host, str(os.getpid() if pid is None else pid)
    path = folder / ".".join(name)
    path.write_bytes(b"x" * 1000)
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_only_temps_no_live_writer_holds_are_swept(tmp_path):
    dead = _dead_pid()
    gone = [_temp(tmp_path, "a.png", pid=dead), _temp(tmp_path, "a.png", host="ffff", age=STALE_SECONDS + 60)]
    kept = [_temp(tmp_path, "a.png"),  # this process: a live writer
            _temp(tmp_path, "a.png", host="ffff", pid=dead),  # another host's (a shared outbox): its pid says nothing
            _temp(tmp_path, "b.png", pid=dead)]  # another target's, where one target is asked for
    (tmp_path / ".notours.tmp").write_bytes(b"y")
    assert sweep_temps(tmp_path, "a.png") == 2000
    assert [p.exists() for p in gone + kept] == [False] * 2 + [True] * 3 and (tmp_path / ".notours.tmp").exists()
    assert sweep_temps(tmp_path) == 1000 and not kept[2].exists()


def test_the_daemon_sweeps_killed_writes_in_its_outbox_and_spool_at_start(tmp_path, engine):
    """The suspected leak is real: the daemon's outputs (outbox/<recipe>/, nested as the inbox is), its records and
    status.json (spool/) go through write_atomic, and nothing removed a killed write's temp. Swept at start."""
    config = make_config(tmp_path)
    nested = tmp_path / "outbox" / "starry" / "vacation"
    nested.mkdir(parents=True)
    (tmp_path / "spool").mkdir(exist_ok=True)
    dead = _dead_pid()
    gone = [_temp(nested, "print.png", pid=dead), _temp(tmp_path / "spool", "status.json", pid=dead)]
    live = _temp(nested, "other.png")
    assert Daemon(config, once=True, engine=engine).run() == 0
    assert not any(p.exists() for p in gone) and live.exists()


def test_every_temp_name_the_readme_shows_is_the_one_written():
    """rev8a: README showed two temp names, `.<hash>.<host>.<pid>.<random>.tmp` (true) and, under "Every write",
    `.<hash>.<pid>.<random>.tmp` (stale since the host was added). A person matching the README's pattern to clean
    by hand must see the fields fsio.temp_name writes."""
    import re
    from pathlib import Path

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"`(\.<hash>[^`]*\.tmp)`", readme))
    written = temp_name(Path("/x/photo.png")).name
    assert shown and all(p.count(".") == written.count(".") for p in shown), (shown, written)


def test_a_temp_name_with_an_absurd_pid_neither_stops_the_daemon_nor_waits_a_day(tmp_path, engine):
    """rev9d: fsio had a second, unguarded "is this pid alive" beside status's: a temp-shaped name with a 20-digit
    pid (a sync tool's copy, a copied folder) made os.kill raise OverflowError in the start's sweep, which `once`
    and `run` did not catch (traceback, exit 1; under systemd a restart loop); pid 0 asked about our own process
    group, so such a temp was "alive" for a day. One pid_alive now, guarded, for the sweep and status alike."""
    config = make_config(tmp_path)
    outbox = tmp_path / "outbox"
    outbox.mkdir(exist_ok=True)
    absurd = outbox / f".0123456789.{HOST_TAG}.{'9' * 20}.01234567.tmp"
    absurd.write_bytes(b"x")
    group = _temp(outbox, "print.png", pid=0)
    assert Daemon(config, once=True, engine=engine).run() == 0
    assert not absurd.exists() and not group.exists()
    from pipeline.fsio import pid_alive  # the one copy (status.py had the guarded one, fsio an unguarded one)

    assert [pid_alive(p) for p in (10 ** 20, 0, -1, "12", 1.5, os.getpid())] == [False] * 5 + [True]
