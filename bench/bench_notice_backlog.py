#!/usr/bin/env python
"""A night of failures behind a webhook that accepts the connection and never answers, then comes back (rev11a).

N failure notices and the queue-empty summary are posted while the target is dead; after `--dead` seconds it
answers. Printed: the deliveries tried while it was dead, the notices the phone gets, where the summary is among
them and how long after the target's return it arrives. The deadline a notice (alerts.TIMEOUT, 20 s) and the
breaker's first cool-off (60 s) are scaled down to `--timeout` and `--cool-off` so a run takes seconds; every
figure in seconds scales with them. Before the bounded outbox, each notice cost the whole deadline in turn: N + 1
deadlines before the summary (measured: 50 failures at 0.2 s, 10.3 s = 51.7 deadlines; at 20 s, 1,000 take 5.6 h).

    python bench/bench_notice_backlog.py [--counts 100 1000] [--timeout 0.2] [--cool-off 1] [--dead 5]
"""
from __future__ import annotations

import argparse
import platform
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import alerts, notice_outbox  # noqa: E402
from pipeline.alerts import Alerts  # noqa: E402


def night(count: int, dead_for: float) -> dict:
    """One night: `count` failures and the summary against a target dead for `dead_for` seconds."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    alive, dead_tries, got, held = threading.Event(), [], [], []

    def serve(conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(65536)
        head, _, body = request.partition(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), b"0"))
        while len(body) < length:
            body += conn.recv(65536)
        if not alive.is_set():
            dead_tries.append(1)
            held.append(conn)  # accepted, never answered
            return
        title = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.startswith(b"Title"))
        got.append((time.monotonic(), title.decode(), body.decode()))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/topic"
    notices = Alerts()
    for i in range(count):
        notices.on_event(url, "failed", {"file": f"p{i}.jpg", "reason": "bad_image", "message": "m", "fix": "f"})
    notices.tick(url, drained=True)
    held_most = notices.pending()
    time.sleep(dead_for)
    back = time.monotonic()
    alive.set()
    while notices.pending():
        time.sleep(0.05)
    listener.close()
    summary = next(i for i, (_, title, _) in enumerate(got) if title.endswith("the queue is empty"))
    return {"dead_tries": len(dead_tries), "held": held_most, "got": len(got), "summary_at": summary + 1,
            "summary_after": got[summary][0] - back, "all_after": got[-1][0] - back}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--timeout", type=float, default=0.2)
    parser.add_argument("--cool-off", type=float, default=1.0)
    parser.add_argument("--dead", type=float, default=5.0)
    args = parser.parse_args()
    alerts.TIMEOUT, notice_outbox.COOL_OFF = args.timeout, args.cool_off
    print(f"{platform.node()}: deadline {args.timeout} s a notice, first cool-off {args.cool_off} s, target dead "
          f"{args.dead} s")
    print(f"{'failures':>8} {'tried dead':>10} {'held':>5} {'phone gets':>10} {'summary nth':>11} "
          f"{'summary after':>13} {'all after':>9}")
    for count in args.counts:
        r = night(count, args.dead)
        print(f"{count:>8} {r['dead_tries']:>10} {r['held']:>5} {r['got']:>10} {r['summary_at']:>11} "
              f"{r['summary_after']:>12.2f}s {r['all_after']:>8.2f}s")


if __name__ == "__main__":
    main()
