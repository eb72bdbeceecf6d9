"""`notify:` delivery against real local HTTP servers: names that are not Latin-1 (rev7d finding 2), a server that
drips its answer, and the morning summary's counts."""
from __future__ import annotations

import socket
import threading
import time
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, HTTPServer

from pipeline import alerts
from pipeline.alerts import Alerts


def _server():
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got.append((self.headers.get("Title"), body.decode()))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def _decoded(title: str) -> str:
    """The title as ntfy shows it: RFC 2047 encoded-words decoded."""
    return str(make_header(decode_header(title)))


def test_failure_notice_for_a_cjk_or_polish_photo_name_reaches_the_webhook():
    """The daemon's notice path (Alerts.on_event for a failed photo): before, http.client's Latin-1 header
    encoding raised on 写真.jpg and Łódź.jpg and both notices were lost; ASCII titles go out unchanged."""
    server, got = _server()
    try:
        url = f"http://127.0.0.1:{server.server_port}/topic"
        notices = Alerts()
        names = ("photo.jpg", "写真.jpg", "Łódź.jpg", "café.jpg")
        for name in names:
            notices.on_event(url, "failed", {"file": name, "reason": "bad_image", "message": "not an image",
                                             "fix": "export it again"})
        notices.flush(10)
    finally:
        server.shutdown()
    assert sorted(_decoded(title) for title, _ in got) == sorted(f"style-pipeline: {n} failed" for n in names)
    assert ("style-pipeline: photo.jpg failed", got[0][1]) == got[0], "an ASCII title is sent as it is"
    for name in names:
        assert any(body.startswith(f"{name}: bad_image: not an image") for _, body in got), (name, got)


def _dripping_server() -> tuple[socket.socket, threading.Event]:
    """A server that answers a status line and then one header byte every 0.2 s, never finishing."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not done.wait(0.2):
            try:
                conn.sendall(b"a")
            except OSError:
                return
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, done


def test_a_server_that_drips_its_answer_does_not_hold_the_notices_behind_it(monkeypatch):
    """urlopen's timeout is per read: a byte every 0.2 s never trips a 1 s timeout, so before, the one sender
    thread waited for ever and no later notice went out. Now the whole delivery has a deadline."""
    monkeypatch.setattr(alerts, "TIMEOUT", 1.0)
    slow, done = _dripping_server()
    server, got = _server()
    try:
        notices = Alerts()
        began = time.monotonic()
        notices.on_event(f"http://127.0.0.1:{slow.getsockname()[1]}/topic", "failed",
                         {"file": "a.jpg", "reason": "bad_image", "message": "m", "fix": "f"})
        notices.on_event(f"http://127.0.0.1:{server.server_port}/topic", "failed",
                         {"file": "b.jpg", "reason": "bad_image", "message": "m", "fix": "f"})
        notices.flush(10)
        took = time.monotonic() - began
    finally:
        done.set()
        slow.close()
        server.shutdown()
    assert [title for title, _ in got] == ["style-pipeline: b.jpg failed"], got
    assert took < 5, f"the notice behind the dripping server waited {took:.1f} s"
