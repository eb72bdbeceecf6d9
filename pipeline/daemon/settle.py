"""The second half of settling: a quiet file must also decode before it is claimed (issue 9).

Quiet time alone (watcher.Tracker) claimed a file whose writer paused longer than `settle_seconds`
between chunks, and failed it as truncated while the rest was still coming. Here a file that does not
decode is looked at again once after a longer wait; only if it is unchanged and still broken then is it
claimed, so the worker can move it to failed/ with its reason.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..engine import images
from ..errors import ImageError

RECHECK_FACTOR, RECHECK_MIN = 10, 3.0  # the longer wait: 10 x settle_seconds, at least 3 s


class DecodeCheck:
    def __init__(self) -> None:
        self.first_failure: dict[Path, tuple] = {}  # path -> ((size, mtime), when it first failed to decode)

    def ready(self, path: Path, max_pixels: int, settle_seconds: float) -> bool | None:
        """True: claim it. False: wait. None: it is gone."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.forget(path)
            return None
        if not os.path.isfile(path) or os.path.islink(path):
            return True  # links, FIFOs and devices fail in the worker with their own reason, unread
        try:
            with open(path, "rb"):
                pass
            images.load(path, max_pixels)
            return True
        except ImageError:
            return self._stale(path, st, max(RECHECK_FACTOR * settle_seconds, RECHECK_MIN))
        except PermissionError:
            return True  # unreadable: claimed after the quiet time, to fail with the permissions fix

    def _stale(self, path: Path, st: os.stat_result, wait: float) -> bool:
        key = (st.st_size, st.st_mtime_ns)
        first = self.first_failure.setdefault(path, (key, time.monotonic()))
        if first[0] != key:
            self.first_failure[path] = (key, time.monotonic())
            return False
        return time.monotonic() - first[1] >= wait

    def forget(self, path: Path) -> None:
        self.first_failure.pop(path, None)
