"""rev11a: the notices behind a webhook that accepts and never answers. Before, a plain queue: each notice cost the
whole deadline (20 s), so a night of 1,000 failures took 5.6 h to drain, the morning summary waited behind all of
them, and a stop dropped the rest without a word. Real local HTTP servers; a short alerts.TIMEOUT; every wait is on
an event or a count, never on the clock."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from structlog.testing import capture_logs

from daemon_helpers import wait_for
from pipeline import alerts, notice_outbox
from pipeline.alerts import Alerts
from pipeline.notice_outbox import BREAK_AFTER, MAX_QUEUED


class Target:
    """A webhook: while `alive` is clear it accepts, reads the request and never answers (until the test ends);
    while set it answers 200 and keeps (title, body). `held` also holds each live request until it is set."""

    def __init__(self) -> None:
        self.alive, self.held, self.end = threading.Event(), threading.Event(), threading.Event()
        self.held.set()
        self.dead_tries, self.got = [], []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if not target.alive.is_set():
                    target.dead_tries.append(body)
                    target.end.wait(60)
                    return
                target.got.append((self.headers.get("Title"), body))
                target.held.wait(60)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/topic"

    def close(self) -> None:
        self.end.set()
        self.held.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target():
    webhook = Target()
    yield webhook
    webhook.close()


def _fail(notices: Alerts, url: str, first: int, count: int) -> None:
    for i in range(first, first + count):
        notices.on_event(url, "failed", {"file": f"p{i}.jpg", "reason": "bad_image", "message": "m", "fix": "f"})


def _told(got: list) -> int:
    """Photos told: one per failure notice, N per "N more photos failed"."""
    return sum(int(body.split()[0]) if title.endswith("more photos failed") else title.endswith(" failed")
               for title, body in got)


def test_failures_behind_a_slow_target_wait_bounded_and_the_surplus_is_one_notice(monkeypatch, target):
    """The first notice hangs on the target; 29 more failures come meanwhile. Before: 29 notices queued, each to be
    sent one by one. Now MAX_QUEUED wait as they are and the rest is one "19 more photos failed" notice."""
    monkeypatch.setattr(alerts, "TIMEOUT", 60.0)  # the held request is released long before
    target.alive.set()
    target.held.clear()
    notices = Alerts()
    _fail(notices, target.url, 0, 1)
    wait_for(lambda: target.got, 30)  # in flight, held by the target
    _fail(notices, target.url, 1, 29)
    assert notices.pending() == 1 + MAX_QUEUED + 1, "in flight, the queued ones, one count"
    target.held.set()
    notices.flush(60)
    titles = [title for title, _ in target.got]
    assert titles[:-1] == [f"style-pipeline: p{i}.jpg failed" for i in range(1 + MAX_QUEUED)], titles
    assert titles[-1] == f"style-pipeline: {29 - MAX_QUEUED} more photos failed", titles
    assert target.got[-1][1] == f"{29 - MAX_QUEUED} more photos failed (see `style-pipeline report`)"


def test_the_breaker_holds_notices_from_a_dead_target_and_logs_once_each_way(monkeypatch, target):
    """The target never answers: after BREAK_AFTER failures the breaker opens and the sender waits out a cool-off
    (doubling) between single tries, instead of spending the deadline on each of 20 notices. Logged once when it
    opens, once when the target answers again; then every photo is told, none twice."""
    monkeypatch.setattr(alerts, "TIMEOUT", 0.3)
    monkeypatch.setattr(notice_outbox, "COOL_OFF", 0.2)
    notices = Alerts()
    with capture_logs() as logs:
        _fail(notices, target.url, 0, 20)
        wait_for(lambda: len(target.dead_tries) >= BREAK_AFTER + 2, 60)  # open, and two tries after a cool-off
        monkeypatch.setattr(alerts, "TIMEOUT", 60.0)  # from now on an answer is never late, however loaded the box
        target.alive.set()
        wait_for(lambda: not notices.pending(), 60)
    opened = [e for e in logs if e["event"].startswith("notify target failed each of the last")]
    closed = [e for e in logs if e["event"].startswith("notify target answers again")]
    assert len(opened) == 1 and len(closed) == 1, [e["event"] for e in logs]
    assert len(target.dead_tries) < 20, "each notice was tried at the full deadline"
    # at least once: a try under way as the target came back may be answered after the client gave up on it
    assert _told(target.got) >= 20 and len(target.got) <= MAX_QUEUED + 2, target.got
    notices.flush(60)  # nothing left: the sender thread ends (conftest)


def test_the_summary_goes_first_once_the_target_answers_again(monkeypatch, target):
    """A dead target all night, 20 failures held, then the queue empties: when the target answers, the summary is
    the first notice, not the last behind the failures; the failures follow, bounded. While the breaker held them
    the target was tried BREAK_AFTER times, not 20."""
    monkeypatch.setattr(alerts, "TIMEOUT", 0.3)
    monkeypatch.setattr(notice_outbox, "COOL_OFF", 3600.0)  # nothing is tried again until the stop's last try
    notices = Alerts()
    _fail(notices, target.url, 0, 20)
    wait_for(lambda: notices.outbox.breaker.is_open() and not notices.outbox.in_flight
             and len(target.dead_tries) == BREAK_AFTER, 60)
    notices.tick(target.url, drained=True)
    monkeypatch.setattr(alerts, "TIMEOUT", 60.0)  # nothing is in flight: every try from now on is answered in time
    target.alive.set()
    notices.flush(60)  # the stop's one try goes to the summary, which succeeds and closes the breaker
    assert target.got[0][0] == "style-pipeline: the queue is empty", target.got
    assert target.got[0][1].startswith("0 styled, 20 failed since "), target.got[0]
    assert len(target.dead_tries) == BREAK_AFTER, target.dead_tries
    assert _told(target.got[1:]) == 20 and len(target.got) <= MAX_QUEUED + 2, target.got


def test_notices_a_stop_could_not_send_are_logged_with_their_count(monkeypatch, target):
    """The stop's wait runs out with the first notice hanging on the target: before, the rest were dropped without
    a word. Now one log line says how many were not sent (the one in flight, four queued, the summary)."""
    monkeypatch.setattr(alerts, "TIMEOUT", 60.0)
    notices = Alerts()
    _fail(notices, target.url, 0, 1)
    wait_for(lambda: target.dead_tries, 30)
    _fail(notices, target.url, 1, 4)
    notices.tick(target.url, drained=True)
    with capture_logs() as logs:
        notices.flush(0.5)
    lost = [e for e in logs if e["event"] == "notices not sent at stop"]
    assert len(lost) == 1 and lost[0]["count"] == 6 and lost[0]["summary"] and lost[0]["in_flight"] == 1, logs


def test_a_summary_the_target_did_not_take_counts_the_same_when_it_goes_out(monkeypatch, target, tmp_path):
    """The summary counts from disk when it is sent. Its first try fails (the target is dead); the window must not
    be marked as told then, or the try that gets through counts nothing from disk: "1 styled" (this run's own) for
    a night of three, two of them styled before a restart."""
    import json

    from pipeline.daemon.spool import now_iso
    from pipeline.daemon.tally import Tally
    monkeypatch.setattr(alerts, "TIMEOUT", 0.3)
    monkeypatch.setattr(notice_outbox, "COOL_OFF", 3600.0)
    spool, outbox = tmp_path / "spool", tmp_path / "outbox"
    (outbox / "default").mkdir(parents=True)
    spool.mkdir()
    notices = Alerts(Tally(spool, outbox, spool / "failed"))
    notices.tick(target.url, drained=False)
    for name in ("a", "b", "c"):
        (outbox / "default" / f"{name}.json").write_text(json.dumps({"finished_at": now_iso()}))
    notices.on_event(target.url, "done", {})  # c: this run's; a and b, the run's before the restart
    notices.tick(target.url, drained=True)
    wait_for(lambda: notices.outbox.breaker.is_open() and not notices.outbox.in_flight
             and len(target.dead_tries) == BREAK_AFTER, 60)
    monkeypatch.setattr(alerts, "TIMEOUT", 60.0)
    target.alive.set()
    notices.flush(60)
    assert [body.split(" since")[0] for _, body in target.got] == ["3 styled, 0 failed"], target.got
