"""Names that are not UTF-8 (a Latin-1 camera card, a Samba share): os.listdir gives them as lone surrogates
(b"caf\\xe9" -> "caf\\udce9"), which a UTF-8 encoder refuses (rev6e findings 1 and 2)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote_to_bytes

from daemon_helpers import ROOT, SAMPLES, errors, log_events, make_config, start, status_json, stop, wait_for, wait_ready
from pipeline import alerts, fsio, report
from pipeline.notify import Notifier


def test_records_round_trip_a_non_utf8_name_and_stay_readable_utf8_otherwise(tmp_path):
    odd, plain = os.fsdecode(b"caf\xe9.jpg"), "café.jpg"
    fsio.write_json(tmp_path / "odd.json", {"name": odd})
    fsio.write_json(tmp_path / "plain.json", {"name": plain})
    assert os.fsencode(json.loads((tmp_path / "odd.json").read_text())["name"]) == b"caf\xe9.jpg"
    assert "café" in (tmp_path / "plain.json").read_text(encoding="utf-8")


def _pings_after(sock, count: int, timeout: float = 60) -> int:
    """The WATCHDOG=1 pings sent from now on, waited for until ``count`` came (``timeout`` only limits a hang):
    the socket is emptied first, so every ping counted was sent after what the caller waited for. Counted, not
    timed: "3 pings in 3 s" failed on a box loaded enough to delay a ping."""
    sock.setblocking(False)
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass
    sock.settimeout(0.2)
    got, end = 0, time.monotonic() + timeout
    while got < count and time.monotonic() < end:
        try:
            got += b"WATCHDOG=1" in sock.recv(4096)
        except socket.timeout:
            pass
    return got


def _notify_socket(tmp_path, monkeypatch):
    """A bound NOTIFY_SOCKET, as systemd gives one, asking for a watchdog ping every half second."""
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    return sock


# Any failure of the status write that is not an OSError (the one before: UnicodeEncodeError).
STATUS_FAILS = ("import pipeline.daemon.status as s\n"
                "def write(spool, data):\n    raise UnicodeEncodeError('utf-8', 'x', 0, 1, 'injected')\n"
                "s.write = write\n")


def _status_warnings(proc) -> list[dict]:
    return [e for e in log_events(proc) if e.get("event") == "status.json not written"]


def test_a_failing_status_write_neither_stops_the_watchdog_nor_floods_the_log(tmp_path, monkeypatch):
    sock = _notify_socket(tmp_path, monkeypatch)
    proc = start(make_config(tmp_path), patches=STATUS_FAILS)
    try:
        wait_ready(proc)
        wait_for(lambda: _status_warnings(proc), 60, proc)
        pings = _pings_after(sock, 3)  # after the first failed write: the heartbeat goes on past it
        warnings = _status_warnings(proc)
        crashed = [e for e in log_events(proc) if e.get("level") == "error"]
    finally:
        stop(proc)
        sock.close()
    assert pings == 3, f"{pings} watchdog pings in 60 s after the status write failed; errors: {crashed[:1]}"
    assert len(warnings) == 1 and "injected" in warnings[0]["error"] and not crashed


def test_watchdog_and_status_go_on_after_a_non_utf8_folder_appears(tmp_path, monkeypatch):
    """Before: status.json's "skipped" list could not be written, _report raised before the heartbeat each pass,
    the WATCHDOG=1 pings stopped and systemd killed the daemon every WatchdogSec (and again after each restart)."""
    sock = _notify_socket(tmp_path, monkeypatch)
    proc = start(make_config(tmp_path, rescan_seconds=1))
    try:
        wait_ready(proc)
        os.mkdir(os.path.join(os.fsencode(tmp_path / "inbox"), b".f\xe9tes"))
        wait_for(lambda: status_json(tmp_path).get("skipped"), 60, proc)
        first = status_json(tmp_path)["updated_at"]
        pings = _pings_after(sock, 3)
        status = wait_for(lambda: (s := status_json(tmp_path)).get("updated_at", first) != first and s, 60, proc)
        errors = [e for e in log_events(proc) if e.get("level") == "error"]
    finally:
        stop(proc)
        sock.close()
    assert pings == 3, f"{pings} watchdog pings in 60 s after the folder appeared; errors: {errors[:1]}"
    assert status["updated_at"] != first, "status.json is kept fresh"
    assert [os.fsencode(s["folder"]) for s in status["skipped"]] == [b".f\xe9tes"]
    assert not errors


def test_a_photo_with_a_non_utf8_name_is_styled_under_the_same_bytes(tmp_path):
    """Before: the claim's record could not be written; "cannot claim this file" every rescan, all night. Then the
    page, `status` under a strict UTF-8 locale (en_US.UTF-8) and a notice name such a file as its bytes (\\xe9)."""
    proc = start(make_config(tmp_path))
    inbox, starry = os.fsencode(tmp_path / "inbox"), os.fsencode(tmp_path / "outbox" / "starry")
    try:
        wait_ready(proc)
        shutil.copy(SAMPLES / "coffee.jpg", os.path.join(inbox, b"caf\xe9.jpg"))
        (tmp_path / os.fsdecode(b"inbox/bad\xe9.jpg")).write_bytes(b"not a picture" * 20)
        wait_for(lambda: os.path.isfile(os.path.join(starry, b"caf\xe9.json")) and errors(tmp_path), 30, proc)
    finally:
        stop(proc)
    events = log_events(proc)
    assert os.path.isfile(os.path.join(starry, b"caf\xe9.png"))
    record = json.loads(Path(os.fsdecode(os.path.join(starry, b"caf\xe9.json"))).read_text(encoding="utf-8"))
    assert os.fsencode(record["input"]["name"]) == b"caf\xe9.jpg"
    assert [os.fsencode(name) for name in errors(tmp_path)] == [b"bad\xe9.jpg"], "failed as a bad image, named"
    assert sorted(os.listdir(inbox)) == [b"scream", b"starry"], "claimed, not left in the inbox"
    assert [e["event"] for e in events if e.get("level") in ("error", "warning")] == ["job failed"]

    [page] = report.write_reports([tmp_path / "report.html"], tmp_path / "outbox", tmp_path / "spool" / "failed",
                                  done=tmp_path / "spool" / "done")
    page = page.read_text(encoding="utf-8")
    assert "starry / caf\\xe9.png" in page and "bad\\xe9.jpg" in page
    link = page.split('class="full-size" href="')[1].split('"')[0]
    assert link == "outbox/starry/caf%E9.png" and os.path.isfile(os.fsencode(tmp_path) + b"/" + unquote_to_bytes(link))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    shown = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "--config", str(tmp_path / "config.yaml")],
                           capture_output=True, env=env, cwd=ROOT, timeout=60)
    assert shown.returncode == 0 and b"bad\xe9.jpg" in shown.stdout, shown.stderr[-300:]


def test_a_notice_and_systemd_status_name_a_non_utf8_file_instead_of_being_lost(tmp_path, monkeypatch):
    sock = _notify_socket(tmp_path, monkeypatch)
    try:
        assert Notifier().status("styling " + os.fsdecode(b"caf\xe9.jpg"))
        assert sock.recv(4096) == b"STATUS=styling caf\\xe9.jpg"
    finally:
        sock.close()
    out = tmp_path / "notice.txt"
    assert alerts.send(f"sh -c 'cat > {out}'", "failed", "t", os.fsdecode(b"bad\xe9.jpg") + ": bad_image")
    assert out.read_text() == "bad\\xe9.jpg: bad_image"
