"""The morning page says what state the service is in, and the report's own run fails in one line (rev7d finding 4).

A night the daemon spent paused (a full disk), stuck or stopped made no outputs and no failures, and the page read
"No outputs. Nothing failed." as if the night had been empty; the timer's run on that full disk died with a traceback.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

from daemon_helpers import ROOT, SAMPLES, make_config, start, status_json, stop, wait_for, wait_ready
from test_daemon_faults import _fill, small_tmpfs  # noqa: F401 - the fixture

from pipeline.daemon.spool import RECORD
from pipeline.report import write_reports
from pipeline.report_state import service_state


class StateBlock(HTMLParser):
    """The lines of the page's "State of the service" block."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.inside, self.lines = False, []
        self.feed(html)
        self.lines = [" ".join(line.split()) for line in self.lines]

    def handle_starttag(self, tag, attrs):
        self.inside |= dict(attrs).get("class") == "service-state"
        if self.inside and tag == "li":
            self.lines.append("")

    def handle_endtag(self, tag):
        self.inside &= tag != "section"

    def handle_data(self, data):
        if self.inside and self.lines:
            self.lines[-1] += data


def _report(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "report", "--config", str(config), "--since", "24h",
                           *args], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=60)


def test_a_full_disk_night_page_says_why_and_the_timers_run_fails_in_one_line(tmp_path, small_tmpfs):  # noqa: F811
    """The disk filled in the evening: claiming paused all night with a photo waiting. The timer's run cannot write
    its page: one line naming the folder and what to do, no traceback, the old page kept. A page written off the full
    disk says the service is paused on a full disk and names the photo waiting."""
    config = make_config(small_tmpfs, settle_seconds=0.3)
    old_page = small_tmpfs / "outbox" / "report.html"
    old_page.parent.mkdir(parents=True, exist_ok=True)
    old_page.write_text("yesterday's page")
    proc = start(config, log=tmp_path / "daemon.log")
    try:
        wait_ready(proc)
        photo = SAMPLES / "coffee.jpg"
        _fill(small_tmpfs, photo.stat().st_size)
        shutil.copy(photo, small_tmpfs / "inbox" / "coffee.jpg")
        wait_for(lambda: status_json(small_tmpfs).get("state", "").startswith("paused: disk full"), 30, proc)
        timer = _report(config)
        page = tmp_path / "page.html"
        written = _report(config, "-o", str(page))
    finally:
        stop(proc)
    assert timer.returncode == 2 and "Traceback" not in timer.stderr, timer.stderr[-800:]
    lines = timer.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{small_tmpfs / 'outbox' / 'reports'}: the page could not be written (No space " \
        "left on device)" in lines[0] and "MB free there: free some space" in lines[0], lines
    assert old_page.read_text() == "yesterday's page"
    assert written.returncode == 0, written.stderr[-800:]
    state = StateBlock(page.read_text()).lines
    assert state[0].startswith("Service: paused: disk full (") and "MB free in" in state[0], state
    assert state[1] == "1 photo waiting in the inbox: coffee.jpg.", state


def _install(tmp_path: Path) -> dict[str, Path]:
    folders = {key: tmp_path / key for key in ("inbox", "outbox", "spool")}
    for folder in folders.values():
        folder.mkdir()
    return folders


def _status(spool: Path, text: str) -> None:
    (spool / "status.json").write_text(text)


def test_the_state_block_reads_what_the_disk_holds(tmp_path):
    """A stopped night: waiting photos named (five, then a count), jobs in work/, the daemon's last word when it died
    paused, and its held jobs and skipped folders."""
    folders = _install(tmp_path)
    for i in range(7):
        (folders["inbox"] / f"p{i}.jpg").write_bytes(b"x")
    job = folders["spool"] / "work" / "job-1"
    job.mkdir(parents=True)
    (job / RECORD).write_text(json.dumps({"name": "left.jpg"}))
    (job / "left.jpg").write_bytes(b"x")
    stale = datetime.now(timezone.utc) - timedelta(hours=3)
    _status(folders["spool"], json.dumps({
        "pid": 999999999, "state": "paused: disk full (3 MB free in /srv/spool)", "updated_at": stale.isoformat(),
        "worker": {"alive": True, "restarts": 0, "held": ["held.jpg"]},
        "skipped": [{"folder": "old.jpg", "why": "a folder named like a picture"}]}))
    state = service_state(folders)
    assert state[0].startswith("Service: not running; its last word, at ") and \
        state[0].endswith(": paused: disk full (3 MB free in /srv/spool).") and f"{stale.astimezone():%H:%M}" in state[0]
    assert state[1] == "7 photos waiting in the inbox: p0.jpg, p1.jpg, p2.jpg, p3.jpg, p4.jpg and 2 more."
    assert state[2].startswith("1 job in spool/work/")
    assert state[3].startswith("1 job held in spool/work/") and state[3].endswith(": held.jpg.")
    assert state[4] == "1 inbox folder passed over: old.jpg (a folder named like a picture)."


def test_a_damaged_status_file_never_costs_the_page(tmp_path):
    """Cut short, not an object, or holding the wrong types: the page is written and says "not running"."""
    folders = _install(tmp_path)
    for text in ('{"state": "runn', "[1, 2]", "null",
                 json.dumps({"pid": os.getpid(), "state": 5, "updated_at": time.time(), "worker": "x", "skipped": 7,
                             "next_window": ["x"]})):
        _status(folders["spool"], text)
        state = service_state(folders)
        [page] = write_reports([tmp_path / "page.html"], folders["outbox"], folders["spool"] / "failed", state=state)
        assert StateBlock(page.read_text()).lines == ["Service: not running.", "Nothing is waiting in the inbox."], text


def test_paintings_kept_below_the_inbox_are_not_counted_as_photos_waiting(tmp_path):
    """styles_dir: inbox/paintings is never scanned for photos (rev9c); the page counted its paintings as photos
    waiting, as if the daemon were stuck. A config that cannot be read since still gets its page."""
    from daemon_helpers import STYLES
    from pipeline.daemon.config import read_folders

    paintings = tmp_path / "inbox" / "paintings"
    paintings.mkdir(parents=True)
    shutil.copy(STYLES / "starry_night.jpg", paintings / "starry_night.jpg")
    shutil.copy(STYLES / "the_scream.jpg", paintings / "the_scream.jpg")
    config = make_config(tmp_path, styles_dir="inbox/paintings")
    (tmp_path / "inbox" / "beach.jpg").write_bytes(b"x")
    folders = read_folders(config)
    assert service_state(folders, config)[1] == "1 photo waiting in the inbox: beach.jpg."
    config.write_text("folders: [broken\n")
    state = service_state(folders, config)  # paintings counted then: the scan cannot know them, the page is written
    assert state[1] == "3 photos waiting in the inbox: beach.jpg, paintings/starry_night.jpg, paintings/the_scream.jpg."
