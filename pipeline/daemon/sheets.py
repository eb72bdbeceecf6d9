"""Contact sheets written beside the worker, not by it (issue 13): a sheet is a convenience, and its resize,
PNG encode and fsync must not sit between one photo's last step and the next photo's first.

One background thread takes (pictures, path) and writes each sheet through outputs.contact_sheet (one atomic
write, fsio.write_atomic). ``close()`` writes every sheet still queued before it returns, so a shutdown loses
none unless the stop's wait runs out (then it says how many); a sheet that cannot be written is logged and skipped, never failing its job.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import structlog

from . import outputs

log = structlog.get_logger("style-pipeline.worker")


class SheetWriter:
    """The thread starts at the first sheet; after close() a sheet is written in the caller's thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, content, style, result, path: Path) -> None:
        """Hand over the three pictures (never changed afterwards: the engine made new ones) and go on."""
        with self._lock:
            if not self._closed:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="sheets", daemon=True)
                    self._thread.start()
                self._queue.put((content, style, result, path))
                return
        self._write((content, style, result, path))  # after shutdown began: written at once rather than lost

    def close(self, timeout: float) -> None:
        """Write every queued sheet, then stop the thread; within ``timeout`` (what the stop's one deadline left,
        Executor.close): a sheet still unwritten then is lost, and said so, a convenience not worth a SIGKILL."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            if thread.is_alive():
                log.warning("contact sheets not written: the stop's wait ran out", unwritten=self._queue.qsize(),
                            waited_s=round(timeout, 1))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._write(item)

    @staticmethod
    def _write(item: tuple) -> None:
        content, style, result, path = item
        try:
            outputs.contact_sheet(content, style, result, path)
        except FileExistsError:
            log.warning("contact sheet not written: its name is another file's (never replaced)", sheet=str(path))
        except Exception as exc:  # noqa: BLE001 - a convenience: no sheet is worth the thread
            log.warning("contact sheet not written", sheet=str(path), error=f"{exc.__class__.__name__}: {exc}")
