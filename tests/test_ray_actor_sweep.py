"""A Ray actor killed mid-run (Ray's kill, the OOM killer) never ran its job folder's cleanup: the photo's bytes and
its checkpoint stayed in /tmp for good. The folder's name now carries the actor's pid, and an actor starting removes
those of actors no longer alive (ray_actor.sweep_dead). No Ray here: a plain process makes the folder and is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from pipeline.daemon import ray_actor

MAKER = """
import sys, tempfile, time
from pipeline.daemon.ray_actor import own_prefix
tmp = tempfile.TemporaryDirectory(prefix=own_prefix(), dir=sys.argv[1])
open(tmp.name + "/input.jpg", "wb").write(b"the photo")
print(tmp.name, flush=True)
time.sleep(60)
"""


def test_a_killed_actors_job_folder_is_removed_when_an_actor_starts_and_no_other(tmp_path):
    maker = subprocess.Popen([sys.executable, "-c", MAKER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    left = maker.stdout.readline().strip()
    maker.send_signal(signal.SIGKILL)  # mid-run: its TemporaryDirectory is never cleaned up
    maker.wait()
    assert os.path.basename(left).startswith(f"style-actor-{maker.pid}-") and os.path.isfile(left + "/input.jpg")
    alive = tmp_path / f"{ray_actor.own_prefix()}abc"  # a running actor's (this process's pid)
    old = tmp_path / "style-actor-k2x9q_1z"  # no pid in its name: not known dead, kept
    other = tmp_path / "style-other-1-abc"  # not an actor's
    for folder in (alive, old, other):
        folder.mkdir()
    a_file = tmp_path / "style-actor-1999999999-file"  # not a folder
    a_file.write_text("x")
    assert ray_actor.sweep_dead(tmp_path) == [tmp_path / os.path.basename(left)]
    assert not os.path.exists(left) and alive.is_dir() and old.is_dir() and other.is_dir() and a_file.is_file()
