"""rev7f finding 2: alerts.send's whole-delivery deadline gave up on a slow-drip server but left its helper thread
(and its socket) running as long as the server dripped: one more per notice, without bound, until a night of
failures behind a stalling proxy ran the daemon out of descriptors. Now at most MAX_GIVEN_UP hang at once; past
them a notice is not sent (logged)."""
from __future__ import annotations

import socket
import threading
import time

from pipeline import alerts


def _drip_server(stop: threading.Event) -> int:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)

    def serve(conn):
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                conn.sendall(b"X-Drip: a\r\n")  # a header line every 0.1 s: each read is within the socket timeout
                time.sleep(0.1)
        except OSError:
            pass
        finally:
            conn.close()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1]


def test_given_up_deliveries_do_not_pile_up_threads(monkeypatch):
    monkeypatch.setattr(alerts, "TIMEOUT", 0.5)
    stop = threading.Event()
    port = _drip_server(stop)
    try:
        for n in range(12):
            assert alerts.send(f"http://127.0.0.1:{port}/topic", "failed", f"photo{n}.jpg failed", "m") is False
        time.sleep(1.0)
        stuck = [t for t in threading.enumerate() if t.name == "notify-send"]
    finally:
        stop.set()
        for thread in list(alerts._GIVEN_UP):  # the server closes: they end, and later tests send freely
            thread.join(5)
    assert len(stuck) <= alerts.MAX_GIVEN_UP, f"{len(stuck)} given-up deliveries still hold a thread and a socket each"
