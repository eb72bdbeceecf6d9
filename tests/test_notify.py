"""The notify protocol against real unix datagram sockets, and the progress-gated heartbeat."""
from __future__ import annotations

import os
import socket
import uuid

import pytest

from pipeline.notify import Heartbeat, Notifier, watchdog_interval


def _listen(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


@pytest.fixture
def listener(tmp_path, monkeypatch):
    sock = _listen(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_messages_arrive(listener):
    n = Notifier()
    assert n.ready() and _recv(listener) == "READY=1"
    assert n.status("job 3/7\nstep 40") and _recv(listener) == "STATUS=job 3/7 step 40"
    assert n.watchdog() and _recv(listener) == "WATCHDOG=1"
    assert n.stopping() and _recv(listener) == "STOPPING=1"
    assert n.reloading() and _recv(listener).startswith("RELOADING=1\nMONOTONIC_USEC=")


def test_abstract_namespace(monkeypatch):
    name = f"style-pipeline-test-{uuid.uuid4().hex}"
    sock = _listen("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert Notifier().ready() and _recv(sock) == "READY=1"
    finally:
        sock.close()


def test_unset_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled and n.ready() is False and n.watchdog() is False


def test_send_errors_do_not_raise(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert Notifier().ready() is False
    assert Notifier("/" + "x" * 200).ready() is False  # path longer than sun_path


def test_watchdog_interval():
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "120000000"}) == 60.0
    assert watchdog_interval({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid())}) == 60.0
    assert watchdog_interval({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def _pings(sock: socket.socket) -> int:
    sock.settimeout(0)
    count = 0
    while True:
        try:
            count += _recv(sock) == "WATCHDOG=1"
        except BlockingIOError:
            return count


def test_stuck_worker_stops_pinging(listener):
    beat = Heartbeat(Notifier(), stall_seconds=30, clock=lambda: 0.0)
    sent = [beat.tick(("job", 5), now=t) for t in range(0, 100, 10)]
    assert sent == [True, True, True, True, False, False, False, False, False, False]
    assert _pings(listener) == 4


def test_progressing_worker_keeps_pinging(listener):
    beat = Heartbeat(Notifier(), stall_seconds=30)
    assert all(beat.tick(("job", step), now=step * 10.0) for step in range(10))
    assert _pings(listener) == 10


def test_idle_worker_keeps_pinging_and_recovers(listener):
    beat = Heartbeat(Notifier(), stall_seconds=30)
    assert beat.tick(("job", 1), now=0) and not beat.tick(("job", 1), now=100)
    assert all(beat.tick(None, now=t) for t in (200, 1000, 5000))  # idle: nothing to stall on
    assert beat.tick(("next", 0), now=5001) and beat.tick(("next", 0), now=5030)


def test_interval_limits_the_rate(listener):
    clock = iter([0.0, 1.0, 2.0, 31.0])
    beat = Heartbeat(Notifier(), stall_seconds=600, interval=30, clock=lambda: next(clock))
    assert [beat.tick(None) for _ in range(4)] == [True, False, False, True]
