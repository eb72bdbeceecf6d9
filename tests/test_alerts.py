"""`notify:` delivery against real local HTTP servers: names that are not Latin-1 (rev7d finding 2), a server that
drips its answer, and the morning summary's counts."""
from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, HTTPServer

from daemon_helpers import SAMPLES, make_config, outputs, wait_for
from pipeline import alerts
from pipeline.alerts import Alerts
from pipeline.daemon.daemon import Daemon
from pipeline.daemon.spool import now_iso
from pipeline.daemon.tally import Tally


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
    """A server that answers a status line and then one header byte every 0.05 s, never finishing."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while not done.wait(0.05):
            try:
                conn.sendall(b"a")
            except OSError:
                return
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, done


def test_a_server_that_drips_its_answer_does_not_hold_the_notices_behind_it(monkeypatch):
    """urlopen's timeout is per read: a byte every 0.05 s never trips a 1 s timeout, so before, the one sender
    thread waited for ever (the server drips until the test ends) and b.jpg's notice never went out. Now the whole
    delivery has a deadline and b.jpg's goes out. No wall-clock bound (took < 5 s before, near on a loaded box):
    the 60 s flush only limits a hang, which the old sender was."""
    monkeypatch.setattr(alerts, "TIMEOUT", 1.0)
    slow, done = _dripping_server()
    server, got = _server()
    try:
        notices = Alerts()
        notices.on_event(f"http://127.0.0.1:{slow.getsockname()[1]}/topic", "failed",
                         {"file": "a.jpg", "reason": "bad_image", "message": "m", "fix": "f"})
        notices.on_event(f"http://127.0.0.1:{server.server_port}/topic", "failed",
                         {"file": "b.jpg", "reason": "bad_image", "message": "m", "fix": "f"})
        notices.flush(60)
    finally:
        done.set()
        slow.close()
        server.shutdown()
    assert [title for title, _ in got] == ["style-pipeline: b.jpg failed"], got


def _output(outbox, name: str, finished_at: str | None = None) -> None:
    """An output's log as the daemon writes it (only the field the count reads matters here)."""
    (outbox / "default").mkdir(parents=True, exist_ok=True)
    (outbox / "default" / f"{name}.json").write_text(json.dumps({"finished_at": finished_at or now_iso()}))


def _summaries(record) -> list[str]:
    return [line for line in record.read_text().splitlines() if line.startswith("queue_empty")] \
        if record.exists() else []


def test_the_summary_counts_the_night_from_disk_across_a_restart(tmp_path):
    """Two daemons in one night (a restart after two photos): the morning's one summary counts all six, not the
    second daemon's four; an output from before the night is not counted, and the next summary counts only what
    came after this one."""
    spool, outbox, record = tmp_path / "spool", tmp_path / "outbox", tmp_path / "n.txt"
    failed = spool / "failed"
    failed.mkdir(parents=True)
    target = f"sh -c 'echo \"$STYLE_PIPELINE_EVENT $STYLE_PIPELINE_MESSAGE\" >> {record}'"
    _output(outbox, "yesterday", "2020-01-01T00:00:00.000+00:00")
    first = Alerts(Tally(spool, outbox, failed))
    first.tick(target, drained=False)  # the daemon's first pass: the night's start goes to disk
    for i in range(2):
        _output(outbox, f"p{i}")
        first.on_event(target, "done", {})
    second = Alerts(Tally(spool, outbox, failed))  # restarted: nothing of the first one's memory survives
    for i in range(2, 6):
        _output(outbox, f"p{i}")
        second.on_event(target, "done", {})
    (failed / "bad.jpg.error.json").write_text(json.dumps({"failed_at": now_iso()}))
    second.on_event(None, "failed", {})
    second.tick(target, drained=True)
    second.flush(10)
    assert len(_summaries(record)) == 1 and "6 styled, 1 failed since " in _summaries(record)[0], record.read_text()
    time.sleep(0.01)
    _output(outbox, "p6")
    second.on_event(target, "done", {})
    second.tick(target, drained=True)
    second.flush(10)
    assert "1 styled, 0 failed since " in _summaries(record)[-1], record.read_text()


def test_without_folders_the_summary_says_from_when_it_counts(tmp_path):
    """Counting in memory (no folders given), the summary names its start rather than passing for the night's."""
    record = tmp_path / "n.txt"
    notices = Alerts()
    notices.on_event(None, "done", {})
    notices.tick(f"sh -c 'echo \"$STYLE_PIPELINE_EVENT $STYLE_PIPELINE_MESSAGE\" >> {record}'", drained=True)
    notices.flush(10)
    assert re.fullmatch(r"queue_empty 1 styled, 0 failed since \d\d:\d\d \S+; nothing left in the inbox",
                        _summaries(record)[0]), _summaries(record)


def test_the_morning_notice_counts_the_whole_night_across_a_service_restart(tmp_path, engine, torch_threads):
    """Real daemons on the real engine: four photos, the service stopped (the path SIGTERM takes: `systemctl
    restart`, a watchdog restart) after the first is written; a new daemon writes the rest and sends the one
    summary, which counts all four (before, only the second daemon's share: rev7d finding 7)."""
    notices = tmp_path / "notices.txt"
    config = make_config(tmp_path, notify=f"tee -a {notices}",
                         defaults={"size": 32, "steps": 8, "format": "png", "early_stop_tol": 0})
    for i in range(4):
        shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "inbox" / f"p{i}.jpg")
    first = Daemon(config, engine=engine)
    running = threading.Thread(target=first.run)
    running.start()
    try:
        wait_for(lambda: outputs(tmp_path), 60)
    finally:
        first.stop.set()
        running.join(60)
    before = len(outputs(tmp_path))
    assert before < 4, "the restart came too late for this test"
    assert Daemon(config, once=True, engine=engine).run() == 0
    assert len(outputs(tmp_path)) == 4
    assert "4 styled, 0 failed since " in notices.read_text(), (notices.read_text(), before)


def test_outputs_stamped_in_the_starts_or_the_summarys_millisecond_are_counted_once(tmp_path):
    """The window's edges were taken to the microsecond, the logs' finished_at to the millisecond (now_iso): an
    output finished in the daemon's first millisecond, or in the summary's own, fell outside its window and the
    morning said 5 styled for 6 (CI, under load). The clock is handed in, so the edges here fall mid-millisecond."""
    from datetime import datetime, timedelta, timezone
    spool, outbox, record = tmp_path / "spool", tmp_path / "outbox", tmp_path / "n.txt"
    target = f"sh -c 'echo \"$STYLE_PIPELINE_EVENT $STYLE_PIPELINE_MESSAGE\" >> {record}'"
    start = datetime.now(timezone.utc).replace(microsecond=123456) - timedelta(minutes=5)
    notices = Alerts(Tally(spool, outbox, spool / "failed"), now=start)
    notices.tick(target, drained=False, now=start)
    summary_at = start + timedelta(minutes=1, microseconds=500)  # mid-millisecond, like the start
    for name, when in (("first", start), ("middle", start + timedelta(seconds=30)), ("last", summary_at)):
        _output(outbox, name, when.isoformat(timespec="milliseconds"))
        notices.on_event(target, "done", {})
    notices.tick(target, drained=True, now=summary_at)
    notices.flush(10)
    _output(outbox, "after", (summary_at + timedelta(milliseconds=1)).isoformat(timespec="milliseconds"))
    notices.on_event(target, "done", {})
    notices.tick(target, drained=True, now=summary_at + timedelta(seconds=1))
    notices.flush(10)
    assert [s.split(" since")[0] for s in _summaries(record)] == ["queue_empty 3 styled, 0 failed",
                                                                  "queue_empty 1 styled, 0 failed"], record.read_text()


def test_a_log_whose_mtime_lags_the_window_by_a_clock_tick_is_still_read(tmp_path):
    """A file's mtime comes from the kernel's coarse clock, a tick behind the time the daemon stamps: a log
    written just after the window opened could carry an mtime before it, and was skipped unread (CI saw the
    morning summary say 5 styled for 6)."""
    import os
    from datetime import datetime, timedelta, timezone
    outbox, spool = tmp_path / "outbox", tmp_path / "spool"
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    _output(outbox, "p0", (since + timedelta(milliseconds=1)).isoformat(timespec="milliseconds"))
    lagging = since.timestamp() - 0.004
    os.utime(outbox / "default" / "p0.json", (lagging, lagging))
    assert Tally(spool, outbox, spool / "failed").count(since, since + timedelta(minutes=2)) == (1, 0)


def test_a_log_on_a_share_whose_clock_runs_a_minute_behind_is_still_counted_and_reported(tmp_path):
    """An outbox on a NAS (README): the server stamps a file's mtime from its own clock. One a minute behind the
    daemon's gave the logs of a window's first minute an mtime before the window opened, and the tally and the
    report skipped them unread (fsio.written_before allowed 2 s): the summary and the page missed them."""
    import os
    from datetime import datetime, timedelta, timezone

    from pipeline.report_logs import logs_in_window
    outbox, spool = tmp_path / "outbox", tmp_path / "spool"
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    _output(outbox, "first", (since + timedelta(seconds=20)).isoformat(timespec="milliseconds"))
    _output(outbox, "older", (since - timedelta(seconds=1)).isoformat(timespec="milliseconds"))  # read, not counted
    share_clock = since.timestamp() + 20.5 - 60  # written half a second after it finished, by a clock 60 s behind
    for name in ("first", "older"):
        os.utime(outbox / "default" / f"{name}.json", (share_clock, share_clock))
    assert Tally(spool, outbox, spool / "failed").count(since, since + timedelta(minutes=10)) == (1, 0)
    problems: list[str] = []
    found = logs_in_window((outbox / "default").glob("*.json"), "finished_at", since, problems)
    assert [path.name for path, _ in found] == ["first.json"] and problems == []


def test_a_wall_clock_stepped_back_between_summaries_neither_loses_nor_repeats_a_count(tmp_path):
    """NTP steps the clock back 10 minutes in the night (README: "wall clock stepped"). The outputs after the step
    are stamped before the last summary's end, outside every window: the summary said 0 styled for 2, and its end,
    moved back, had the next summary count the first two again. The clock is handed in."""
    from datetime import datetime, timedelta, timezone
    spool, outbox, record = tmp_path / "spool", tmp_path / "outbox", tmp_path / "n.txt"
    target = f"sh -c 'echo \"$STYLE_PIPELINE_EVENT $STYLE_PIPELINE_MESSAGE\" >> {record}'"
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    notices = Alerts(Tally(spool, outbox, spool / "failed"), now=start)
    notices.tick(target, drained=False, now=start)

    def night(names: list[str], finished: datetime, summary_at: datetime) -> None:
        for name in names:
            _output(outbox, name, finished.isoformat(timespec="milliseconds"))
            notices.on_event(target, "done", {})
        notices.tick(target, drained=True, now=summary_at)
        notices.flush(10)

    night(["a", "b"], start + timedelta(minutes=1), start + timedelta(minutes=2))
    stepped = start + timedelta(minutes=2) - timedelta(minutes=10)  # the clock now reads 10 minutes earlier
    night(["c", "d"], stepped + timedelta(seconds=30), stepped + timedelta(minutes=1))
    night(["e"], start + timedelta(minutes=20), start + timedelta(minutes=21))  # past the old end again
    assert [s.split(" since")[0] for s in _summaries(record)] == [
        "queue_empty 2 styled, 0 failed", "queue_empty 2 styled, 0 failed", "queue_empty 1 styled, 0 failed"], \
        record.read_text()
