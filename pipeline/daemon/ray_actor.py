"""The Ray actor of ``executor: ray``: one engine on one node, fed the input's bytes, the decoded styles and the
Settings (the pre-checks ran in the daemon), never the shared folder. It sends the engine's Result back whole (the
daemon encodes, names and writes it), a permanent problem as its Reason code, a cancel as its step; else raises."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
from pathlib import Path

from ..errors import Cancelled, PipelineError
from ..fsio import pid_alive
from ..progress import versions

CONTROL = "control"  # the actors' second concurrency group: progress/cancel/stats answer while a job runs
PREFIX = "style-actor-"  # a job's temp folder: style-actor-<pid>-<random>, the photo's bytes and its checkpoint


def own_prefix() -> str:
    """This process's temp folder prefix: the pid in it lets a later actor tell a killed one's folder (sweep_dead)."""
    return f"{PREFIX}{os.getpid()}-"


def sweep_dead(folder: str | Path | None = None) -> list[Path]:
    """Remove the job folders (``folder``: the temp dir) left by actors no longer alive: one killed mid-run (Ray's
    kill, the OOM killer, a node's restart) never ran its TemporaryDirectory's cleanup, so the photo's bytes and the
    checkpoint stayed in /tmp for good. Only folders of this prefix with a pid in their name, this user's own."""
    removed = []
    for entry in Path(folder or tempfile.gettempdir()).glob(PREFIX + "*-*"):
        pid = entry.name[len(PREFIX):].split("-", 1)[0]
        if not (pid.isascii() and pid.isdigit()) or pid_alive(int(pid)):
            continue
        try:
            st = entry.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


class StyleActor:
    """One engine per actor: VGG loaded once, its own style-target cache. Turned into an actor by ray.remote."""

    def __init__(self, label: str, weights: str | None, device: str, cache_size: int, threads: int) -> None:
        import ray
        import torch

        from ..engine import StyleTransfer

        sweep_dead()  # a killed actor's folders, before this one adds its own
        if threads:
            torch.set_num_threads(threads)
        self.engine = StyleTransfer(weights, device, cache_size=cache_size)
        self._lock = threading.Lock()  # one job at a time, even if a caller queues two
        self._progress: dict | None = None
        self._cancel: set[str] = set()
        self.jobs = 0
        self.styles_seen: set = set()
        self.identity = {"actor": label, "node_id": ray.get_runtime_context().get_node_id(),
                         "node_ip": ray.util.get_node_ip_address(), "host": socket.gethostname(), "pid": os.getpid()}

    def run(self, job_id: str, name: str, settings, content: bytes, style_keys: list, checkpoint: bytes | None,
            *styles) -> dict:
        """``checkpoint``: the bytes of the job's last checkpoint (the daemon keeps it in work/), resumed from here;
        a cancel sends the new one back for the daemon to write, since the actor never sees the shared folder."""
        from ..engine import images

        with self._lock, tempfile.TemporaryDirectory(prefix=own_prefix()) as tmp:
            self._progress = {"job_id": job_id}
            self._cancel.discard(job_id)  # a late cancel of its last try (cancel()): this try's comes again
            self.styles_seen.update(style_keys)
            saved = Path(tmp) / "checkpoint.pt"
            try:
                path = Path(tmp) / ("input" + Path(name).suffix.lower())
                path.write_bytes(content)
                if checkpoint:
                    saved.write_bytes(checkpoint)
                result = self.engine.stylize(images.load(path, settings.max_pixels), list(styles), settings,
                                             on_step=self._on_step(job_id), should_stop=lambda: job_id in self._cancel,
                                             checkpoint=saved)
            except Cancelled as exc:
                return {"status": "cancelled", "step": exc.step,
                        "checkpoint": saved.read_bytes() if saved.is_file() else None}
            except PipelineError as exc:
                if exc.reason is None:
                    raise
                return {"status": "failed", "reason": str(exc.reason), "problem": exc.problem, "fix": exc.fix}
            finally:
                self._progress = None
                self._cancel.discard(job_id)
            self.jobs += 1
            return {"status": "ok", "result": result, "worker": self.identity}

    def _on_step(self, job_id: str):
        def on_step(info) -> None:
            self._progress = {"job_id": job_id, "step": info.step, "total_steps": info.total_steps, "scale": info.scale,
                              "n_scales": info.n_scales, "tiles": info.tiles, "loss": info.loss, "eta": info.eta}
        return on_step

    # the CONTROL group: answered from a second thread while run() holds the first
    def progress(self) -> dict:
        """Who this actor is, and the step of the job it runs (None when idle)."""
        return {"worker": {**self.identity, "device": str(self.engine.device), "versions": versions(),
                           "load_seconds": round(self.engine.load_seconds, 2)}, "job": self._progress}

    def cancel(self, job_id: str) -> None:
        """Stop the job at its next step. The dispatcher sends a cancel each pass until the try's reply lands, so one
        may come after run() returned; run() drops it as the job's next try starts here (rev10a: it stopped that try
        at step 0, logged as waiting for a window that was open). A real cancel of that try is sent again."""
        self._cancel.add(job_id)

    def stats(self) -> dict:
        return {"jobs": self.jobs, "cache_misses": self.engine.cache_misses,
                "cache_hits": self.engine.cache_hits, "styles_seen": len(self.styles_seen), **self.identity}
