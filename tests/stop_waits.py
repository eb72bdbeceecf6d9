"""A stop's one deadline, checked exactly instead of timed (test_handover, test_batch_landing).

Each wait a stop hands out (a join, the landing's flush, the sheets, the notices) must end by the stop's one
deadline: it may take only what is left of it. Timing the whole stop ("under 6 + 2 s") was the check before, and a
loaded box broke it (6.2 s of 8 under load 40) while the stop was right. Here the clock of the modules that compute
the waits is read through, each reading kept for its thread, and each wait records the last reading on its
thread (the one its ``left(deadline)`` took) with the seconds it was given: ``given <= deadline - reading`` then
holds on any box, and fails for a wait with a budget of its own (30 s of WRITE_GRACE, or ``timeout`` in full
after a join had spent part of it).
"""
from __future__ import annotations

import threading
import time
import types


class StopWaits:
    def __init__(self, monkeypatch, clocks: tuple, stop: tuple, total: float) -> None:
        """``clocks``: modules whose ``time`` is read through; ``stop``: (class, method) of the stop, whose thread's
        first reading after it begins is the deadline's base; ``total``: the stop's seconds in all."""
        self.total, self.base, self.thread = total, None, None
        self.last: dict[int, float] = {}
        self.waits: list[tuple[str, float, float]] = []  # (name, last reading on the thread, seconds given)
        reader = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if not n.startswith("_")})
        reader.monotonic = self._read
        for module in clocks:
            monkeypatch.setattr(module, "time", reader)
        cls, name = stop
        real = getattr(cls, name)

        def stopping(obj, *args, **kwargs):
            self.thread = threading.get_ident()
            return real(obj, *args, **kwargs)
        monkeypatch.setattr(cls, name, stopping)
        self.monkeypatch = monkeypatch

    def _read(self) -> float:
        now = time.monotonic()
        me = threading.get_ident()
        if me == self.thread:
            if self.base is None:
                self.base = now
            self.last[me] = now
        return now

    def watch(self, cls, name: str) -> None:
        """Record each call of ``cls.name(timeout)`` on the stopping thread."""
        real = getattr(cls, name)

        def wait(obj, timeout=None, *args, **kwargs):
            me = threading.get_ident()
            if me == self.thread:
                self.waits.append((f"{cls.__name__}.{name}", self.last.get(me), timeout))
            return real(obj, timeout, *args, **kwargs)
        self.monkeypatch.setattr(cls, name, wait)

    def check(self, *expected: str) -> None:
        """Every wait watched was called on the stop, and each was given no more than its deadline had left."""
        assert self.base is not None, "the stop never read its clock"
        deadline = self.base + self.total
        assert set(expected) <= {name for name, _, _ in self.waits}, (expected, self.waits)
        for name, reading, given in self.waits:
            assert reading is not None and given is not None, (name, reading, given)
            assert given <= max(0.0, deadline - reading) + 1e-9, \
                f"{name} was given {given:.2f} s with {max(0.0, deadline - reading):.2f} s of the stop's deadline left"
