"""Names that are not UTF-8 (a Latin-1 camera card, a Samba share): os.listdir gives them as lone surrogates
(b"caf\\xe9" -> "caf\\udce9"), which a UTF-8 encoder refuses (rev6e findings 1 and 2)."""
import json
import os
import shutil
import socket
import time
from pathlib import Path

from daemon_helpers import SAMPLES, log_events, make_config, start, status_json, stop, wait_for, wait_ready
from pipeline import fsio


def test_records_round_trip_a_non_utf8_name_and_stay_readable_utf8_otherwise(tmp_path):
    odd, plain = os.fsdecode(b"caf\xe9.jpg"), "café.jpg"
    fsio.write_json(tmp_path / "odd.json", {"name": odd})
    fsio.write_json(tmp_path / "plain.json", {"name": plain})
    assert os.fsencode(json.loads((tmp_path / "odd.json").read_text())["name"]) == b"caf\xe9.jpg"
    assert "café" in (tmp_path / "plain.json").read_text(encoding="utf-8")


def _pings(sock, seconds):
    got, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
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


def test_a_failing_status_write_neither_stops_the_watchdog_nor_floods_the_log(tmp_path, monkeypatch):
    sock = _notify_socket(tmp_path, monkeypatch)
    proc = start(make_config(tmp_path), patches=STATUS_FAILS)
    try:
        wait_ready(proc)
        pings = _pings(sock, 3)
        warnings = [e for e in log_events(proc) if e.get("event") == "status.json not written"]
        crashed = [e for e in log_events(proc) if e.get("level") == "error"]
    finally:
        stop(proc)
        sock.close()
    assert pings >= 3, f"{pings} watchdog pings in 3 s; errors: {crashed[:1]}"
    assert len(warnings) == 1 and "injected" in warnings[0]["error"] and not crashed


def test_watchdog_and_status_go_on_after_a_non_utf8_folder_appears(tmp_path, monkeypatch):
    """Before: status.json's "skipped" list could not be written, _report raised before the heartbeat each pass,
    the WATCHDOG=1 pings stopped and systemd killed the daemon every WatchdogSec (and again after each restart)."""
    sock = _notify_socket(tmp_path, monkeypatch)
    proc = start(make_config(tmp_path, rescan_seconds=1))
    try:
        wait_ready(proc)
        os.mkdir(os.path.join(os.fsencode(tmp_path / "inbox"), b".f\xe9tes"))
        wait_for(lambda: status_json(tmp_path).get("skipped"), 10, proc)
        first = status_json(tmp_path)["updated_at"]
        pings = _pings(sock, 3)
        status = status_json(tmp_path)
        errors = [e for e in log_events(proc) if e.get("level") == "error"]
    finally:
        stop(proc)
        sock.close()
    assert pings >= 3, f"{pings} watchdog pings in 3 s after the folder appeared; errors: {errors[:1]}"
    assert status["updated_at"] != first, "status.json is kept fresh"
    assert [os.fsencode(s["folder"]) for s in status["skipped"]] == [b".f\xe9tes"]
    assert not errors


def test_a_photo_with_a_non_utf8_name_is_styled_under_the_same_bytes(tmp_path):
    """Before: the claim's record could not be written; "cannot claim this file" every rescan, all night."""
    proc = start(make_config(tmp_path))
    try:
        wait_ready(proc)
        shutil.copy(SAMPLES / "coffee.jpg", os.path.join(os.fsencode(tmp_path / "inbox"), b"caf\xe9.jpg"))
        starry = os.fsencode(tmp_path / "outbox" / "starry")
        wait_for(lambda: os.path.isfile(os.path.join(starry, b"caf\xe9.json")), 30, proc)
        events = log_events(proc)
    finally:
        stop(proc)
    assert os.path.isfile(os.path.join(starry, b"caf\xe9.png"))
    record = json.loads(Path(os.fsdecode(os.path.join(starry, b"caf\xe9.json"))).read_text(encoding="utf-8"))
    assert os.fsencode(record["input"]["name"]) == b"caf\xe9.jpg"
    assert sorted(os.listdir(os.fsencode(tmp_path / "inbox"))) == [b"scream", b"starry"], "claimed, not left"
    assert not [e for e in events if e.get("level") in ("error", "warning")]
