"""systemd's notify protocol (Type=notify, WatchdogSec=), and a heartbeat that only beats on progress.

Written here rather than taken from python-systemd or sdnotify: the whole protocol is one datagram of
"KEY=value" lines sent to the unix socket named in $NOTIFY_SOCKET, so a dependency (and, for
python-systemd, a C build against libsystemd) would cost more than these lines.

Sending never raises: a daemon must not die because systemd went away or the socket is gone.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable

from .fsio import shown


class Notifier:
    """Sends state changes to systemd; a no-op (every call returns False) when $NOTIFY_SOCKET is unset."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in the abstract namespace, which the kernel spells with a NUL.
        self.address = "\0" + address[1:] if address.startswith("@") else address

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *lines: str) -> bool:
        """Send one datagram; True when it was handed to the socket."""
        if not self.enabled:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(shown("\n".join(lines)).encode(), self.address)  # a name not UTF-8: \xe9
            return True
        except (OSError, ValueError):
            return False

    def ready(self) -> bool:
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        # One line only: a newline would start a new (bogus) assignment.
        return self.send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match this to the reload it asked for.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between pings (half of WatchdogSec=, as sd_watchdog_enabled(3) advises), or None if off.

    $WATCHDOG_PID, when set, names the process the watchdog is meant for; a child that inherited the
    environment must not ping on its parent's behalf.
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        pid = env.get("WATCHDOG_PID")
        if pid and int(pid) != os.getpid():
            return None
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


@dataclass
class Heartbeat:
    """Pings the watchdog only while the worker is idle or making progress.

    A plain timer thread would keep pinging while the worker hangs in one step (a wedged GPU
    driver, a deadlock), and systemd would never restart it. Here the main loop passes a progress
    marker (e.g. (job_id, step)) on every pass: when it has not changed for `stall_seconds` the
    pings stop, and systemd's watchdog kills and restarts the service. None means idle.
    """

    notifier: Notifier
    stall_seconds: float
    interval: float | None = None
    clock: Callable[[], float] = time.monotonic
    _marker: Hashable = field(default=None, init=False)
    _changed_at: float | None = field(default=None, init=False)
    _sent_at: float | None = field(default=None, init=False)

    def tick(self, marker: Hashable, now: float | None = None) -> bool:
        """Record progress; True when a WATCHDOG=1 was sent on this call."""
        now = self.clock() if now is None else now
        if self._changed_at is None or marker != self._marker:
            self._marker, self._changed_at = marker, now
        if not self.healthy(now):
            return False
        if self.interval and self._sent_at is not None and now < self._sent_at + self.interval:
            return False  # pinged recently enough; don't flood the socket from a tight loop
        self._sent_at = now
        return self.notifier.watchdog()

    def healthy(self, now: float) -> bool:
        """Idle, or the marker moved within stall_seconds."""
        return self._marker is None or now <= self._changed_at + self.stall_seconds
