"""The Ray actor of ``executor: ray``: one engine on one worker node, fed plain data, never the shared folder.

It gets the input's bytes, the style files' bytes and the Settings; it sends back the encoded image, the
engine's log and losses, or a permanent problem as data (its Reason code). Anything else raises: transient.
"""
from __future__ import annotations

import io
import os
import tempfile
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import Cancelled, EngineError, ImageError
from ..progress import versions

CONTROL = "control"  # the actors' second concurrency group: progress/cancel/stats answer while a job runs


class StyleActor:
    """One engine per actor: VGG loaded once, its own style-target cache. Turned into an actor by ray.remote."""

    def __init__(self, label: str, weights: str | None, device: str, cache_size: int, threads: int) -> None:
        import torch

        from ..engine import StyleTransfer

        if threads:
            torch.set_num_threads(threads)
        self.label = label
        self.engine = StyleTransfer(weights, device, cache_size=cache_size)
        self._lock = threading.Lock()  # one job at a time, even if a caller queues two
        self._progress: dict | None = None
        self._cancel: set[str] = set()
        self._styles: dict[str, Any] = {}
        self.jobs = 0
        self.styles_seen: set[str] = set()
        import ray
        context = ray.get_runtime_context()
        self.identity = {"actor": label, "node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                         "host": socket.gethostname(), "pid": os.getpid()}

    def hello(self) -> dict:
        return {**self.identity, "device": str(self.engine.device), "load_seconds": round(self.engine.load_seconds, 2),
                "versions": versions()}

    def run(self, job_id: str, name: str, settings, content: bytes, *styles: bytes) -> dict:
        """Decode, stylize, encode. Permanent problems come back as data; anything else raises (transient)."""
        import hashlib

        from ..engine import images

        with self._lock:
            started = time.monotonic()
            self._progress = {"job_id": job_id, "step": 0, "total_steps": settings.steps, "scale": 1, "loss": 0.0,
                              "eta": 0.0, "elapsed": 0.0}
            try:
                with tempfile.TemporaryDirectory(prefix="style-actor-") as tmp:
                    path = Path(tmp) / ("input" + Path(name).suffix.lower())
                    path.write_bytes(content)
                    picture = images.load(path, settings.max_pixels)
                    pictures = []
                    for data in styles:
                        key = hashlib.sha256(data).hexdigest()
                        self.styles_seen.add(key)
                        if key not in self._styles:
                            style_path = Path(tmp) / f"style-{key[:12]}"
                            style_path.write_bytes(data)
                            self._styles[key] = images.load(style_path)
                        pictures.append(self._styles[key])
                result = self.engine.stylize(picture, pictures, settings, on_step=self._on_step(job_id),
                                             should_stop=lambda: job_id in self._cancel)
                data = images.encode(result.image, settings.format, settings.quality, alpha=result.alpha,
                                     dpi=settings.print_dpi)
            except Cancelled as exc:
                return {"status": "cancelled", "step": exc.step, "worker": self.identity}
            except (EngineError, ImageError) as exc:  # the reason travels as its code (a str)
                return {"status": "failed", "reason": str(exc.reason), "problem": exc.problem, "fix": exc.fix,
                        "worker": self.identity}
            finally:
                self._progress = None
                self._cancel.discard(job_id)
            self.jobs += 1
            return {"status": "ok", "data": data, "log": result.log(), "losses": result.losses, "steps": result.steps,
                    "stop_reason": result.stop_reason, "timings": result.timings, "worker": self.identity,
                    "seconds": round(time.monotonic() - started, 3)}

    def _on_step(self, job_id: str):
        def on_step(info) -> None:
            self._progress = {"job_id": job_id, "step": info.step, "total_steps": info.total_steps,
                              "scale": info.scale, "loss": info.loss, "eta": info.eta or 0.0, "elapsed": info.elapsed}
        return on_step

    # the CONTROL group: answered from a second thread while run() holds the first
    def progress(self) -> dict | None:
        return self._progress

    def cancel(self, job_id: str) -> None:
        self._cancel.add(job_id)

    def stats(self) -> dict:
        return {"actor": self.label, "jobs": self.jobs, "cache_misses": self.engine.cache_misses,
                "cache_hits": self.engine.cache_hits, "styles_seen": len(self.styles_seen), **self.identity}


class RemoteResult:
    """What JobLife.record() reads from an engine Result, rebuilt from an actor's reply."""

    def __init__(self, reply: dict) -> None:
        self.reply = reply
        self.losses, self.steps, self.timings = reply["losses"], reply["steps"], reply["timings"]
        self.stop_reason = reply["stop_reason"]

    def log(self) -> dict:
        return self.reply["log"]

    @property
    def image(self):
        from PIL import Image
        return Image.open(io.BytesIO(self.reply["data"]))
