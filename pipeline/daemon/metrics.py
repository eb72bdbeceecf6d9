"""Prometheus metrics as a textfile for node_exporter's textfile collector (issue 11, item 15).

node_exporter (``--collector.textfile.directory=DIR``) reads ``DIR/*.prom`` on every scrape, so the daemon
needs no listening socket and the unit keeps ``PrivateNetwork=yes``. The file is replaced atomically (temp
file, then rename; the temp name is hidden and does not end in .prom) every ``metrics_seconds``, so a scrape
never reads half of it. Counters count since the daemon started; Prometheus' rate() handles the restarts.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

from ..fsio import write_atomic
from ..errors import FAILURES

PREFIX = "style_pipeline"


class Metrics:
    """Fed by the worker's events (its thread), rendered by the main loop."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = 0
        self.failed = {str(reason): 0 for reason in FAILURES}  # every failure code from the start, at 0
        self.seconds_sum = 0.0
        self.steps_sum = 0
        self.steps_per_second = 0.0
        self.last_success = 0.0
        self.written_at = 0.0

    def on_event(self, kind: str, data: dict) -> None:
        with self.lock:
            if kind == "done":
                seconds, steps = float(data.get("seconds") or 0.0), int(data.get("steps") or 0)
                self.done += 1
                self.seconds_sum += seconds / max(1, int(data.get("batch") or 1))  # its share: see render
                self.steps_sum += steps
                self.steps_per_second = steps / seconds if seconds > 0 else 0.0
                self.last_success = time.time()
            elif kind == "failed":
                reason = str(data.get("reason"))
                self.failed[reason] = self.failed.get(reason, 0) + 1

    def render(self, queue: int, in_work: int, busy: bool, gpu: bool) -> str:
        """The exposition text (format 0.0.4): HELP and TYPE before each family's samples."""
        with self.lock:
            families = [
                ("queue_length", "gauge", "Photos waiting in the inbox, at any depth", [("", queue)]),
                ("jobs_in_work", "gauge", "Jobs in spool/work/ (running, retrying or resumable)", [("", in_work)]),
                ("jobs_done_total", "counter", "Jobs styled since the daemon started", [("", self.done)]),
                ("jobs_failed_total", "counter", "Jobs moved to failed/ since the daemon started, by reason",
                 [(f'{{reason="{r}"}}', n) for r, n in sorted(self.failed.items())]),
                # A batch of N photos runs N at once for its wall time: each counts 1/N of it, so the sum is the
                # devices' time optimising (rate() of it: how busy they were), never N times the night.
                ("job_seconds", "summary", "Device seconds in the optimiser per styled job (a batch's wall time "
                 "shared among its photos)",
                 [("_sum", round(self.seconds_sum, 3)), ("_count", self.done)]),
                ("steps_per_second", "gauge", "Optimiser steps per second of the last styled job",
                 [("", round(self.steps_per_second, 4))]),
                ("busy", "gauge", "1 while a job runs", [("", int(busy))]),
                ("gpu_in_use", "gauge", "1 while a job runs on a GPU", [("", int(busy and gpu))]),
                ("last_success_timestamp_seconds", "gauge", "Unix time of the last styled job; 0 before the first",
                 [("", round(self.last_success, 3))]),
            ]
        lines = ["# generator: style-pipeline (node_exporter textfile collector format)"]
        for name, kind, text, samples in families:
            full = f"{PREFIX}_{name}"
            lines += [f"# HELP {full} {text}", f"# TYPE {full} {kind}"]
            lines += [f"{full}{suffix} {value}" for suffix, value in samples]
        return "\n".join(lines) + "\n"

    def maybe_write(self, path: Path | None, every: float, **state) -> bool:
        """Write the file when ``every`` seconds have passed since the last write; True when written."""
        now = time.monotonic()
        if path is None or now < self.written_at + every:
            return False
        self.written_at = now
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.render(**state).encode(), path)
        return True
