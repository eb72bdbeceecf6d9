"""Ctrl-C (and SIGTERM) on `stylize --checkpoint`: the first one asks the engine to stop, so it writes its
checkpoint as the daemon's stop does; a second one exits at once, as before.

Why: main() caught KeyboardInterrupt and said "interrupted", exit 130, and the run's work since its last scheduled
checkpoint (25 steps and 30 s; a large print's ~54 min) was lost, while every daemon stop writes one (rev12b). The
handler only sets a flag and puts the signal's previous handler back; the engine reads the flag after each step
(its should_stop), where it is safe to save."""
from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignored(signum: int) -> bool:
    """A signal the process was started ignoring stays ignored, as Python itself leaves an inherited SIG_IGN for
    SIGINT: a script's background job (`stylize ... &` without job control) is meant to outlive the terminal's
    Ctrl-C, and a handler put in its place made that Ctrl-C stop the run."""
    return signal.getsignal(signum) is signal.SIG_IGN


class StopOnSignal:
    """A should_stop for the engine, true once SIGINT or SIGTERM came; the handlers are in place only inside
    ``with`` (and only in the main thread, the one Python delivers signals to)."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.asked: int | None = None  # the signal that asked for the stop
        self.previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.asked is not None

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._asked) for s in self.signals if not ignored(s)}
        return self

    def _asked(self, signum: int, frame) -> None:
        """A flag, and the old handler back: a second Ctrl-C raises KeyboardInterrupt, a second SIGTERM ends us."""
        self.asked = signum
        signal.signal(signum, self.previous[signum])

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    @property
    def exit_code(self) -> int:
        """As a shell reports a program that a signal ended: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + int(self.asked or signal.SIGINT)
