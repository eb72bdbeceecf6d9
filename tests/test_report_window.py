"""The report timer's consecutive pages neither miss nor repeat an output (rev7d finding 5).

Each run reported `--since 24h` back from its own start; RandomizedDelaySec=60 made one morning's start 45 s later
than the day before's, and an output finishing in between was on neither page. `--since-last` (the timer's) starts
where the last such run ended.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from daemon_helpers import ROOT, SAMPLES, make_config
from test_report import _output

from pipeline import cli
from pipeline.report import collect
from pipeline.report_window import MARKER, SETTLE, covered_until, mark_covered, scheduled_window

DAY = timedelta(hours=24)


@pytest.fixture
def local_noon():
    """The local zone set so that it is about noon there now: a page is named by the local date, and these tests
    name the page they expect by a date they read themselves. A test that ran across local midnight saw its second
    run take the new day's name, and failed (seen with a zone whose midnight fell 1-2 s into the test)."""
    before = os.environ.get("TZ")
    hours = 12 - datetime.now(timezone.utc).hour  # -11 to 12: a real offset
    os.environ["TZ"] = f"NOON{-hours:+d}"  # POSIX: east of UTC is negative
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def _timer_run(srv, now: datetime) -> int:
    """What `report --since 24h --since-last` does at `now`: the window, the page's count, the marker moved."""
    reports = srv / "outbox" / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    since, until, covered = scheduled_window(reports, DAY, now)
    processed = collect(srv / "outbox", srv / "spool" / "failed", since=since, now=now, until=until).summary.processed
    mark_covered(reports, covered)
    return processed


def test_consecutive_timer_runs_show_each_output_exactly_once(tmp_path):
    """A real output finishing seconds after one morning's run; the next morning's run 24 h and 45 s later (its
    random delay 50 s against 5 s), then a catch-up run at once (Persistent=true after a boot). A timer run reads
    only the disk and its `now`, so the morning's is placed 5 s before the output's real finish: it was taken
    before the photo's `once` (and failed when that took over 45 s on a loaded box), here the gap is always 5 s."""
    srv = tmp_path / "srv"
    config = make_config(srv)
    shutil.copy(SAMPLES / "rocket.jpg", srv / "inbox" / "rocket.jpg")
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "once", "--config", str(config)], cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    finished = datetime.fromisoformat(json.loads(next((srv / "outbox").glob("*/*.json")).read_text())["finished_at"])
    yesterday = finished - timedelta(seconds=5)
    seen = [_timer_run(srv, yesterday)]
    today = yesterday + DAY + timedelta(seconds=45)
    seen += [_timer_run(srv, today), _timer_run(srv, today + timedelta(seconds=20))]
    assert seen == [0, 1, 0], f"the output finished at {finished:%H:%M:%S} shows on pages {seen}"
    assert covered_until(srv / "outbox" / "reports") == today + timedelta(seconds=20) - SETTLE


def test_the_window_starts_as_since_says_without_a_marker_or_with_a_bad_one(tmp_path):
    now = datetime(2026, 11, 29, 7, 15, tzinfo=timezone.utc)
    assert scheduled_window(tmp_path, DAY, now) == (DAY, now - SETTLE, now - SETTLE)
    for text in ("yesterday", "", (now + timedelta(hours=3)).isoformat()):  # damaged, empty, from a clock ahead
        (tmp_path / MARKER).write_text(text)
        assert scheduled_window(tmp_path, DAY, now) == (DAY, now - SETTLE, now - SETTLE), text
    (tmp_path / MARKER).write_text((now - timedelta(days=3)).isoformat())  # the box was off: three days, no gap
    assert scheduled_window(tmp_path, DAY, now)[0] == timedelta(days=3)
    last = now - timedelta(seconds=20)  # a clock stepped back 40 s since the last run: this window is empty
    mark_covered(tmp_path, last)
    since, until, covered = scheduled_window(tmp_path, DAY, now)
    assert now - since == until and covered == last, "the marker went back: the next page would repeat outputs"


def test_report_since_last_starts_at_the_marker_and_moves_it(tmp_path, capsys):
    """The command the timer runs: an output 30 h old, after a marker 31 h old, is on the page (`--since 24h` alone
    would leave it out); the marker then stands a minute before the run, and the next run shows it no more. An
    interactive `--since` neither reads nor moves the marker."""
    config = make_config(tmp_path)
    now = datetime.now(timezone.utc)
    _output(tmp_path, "starry", "coffee.jpg", "starry_night.jpg", now - timedelta(hours=30), 12.5)
    reports = tmp_path / "outbox" / "reports"
    reports.mkdir(parents=True)
    mark_covered(reports, now - timedelta(hours=31))
    page = tmp_path / "page.html"

    def processed(*args: str) -> str:
        assert cli.main(["report", "--config", str(config), "--since", "24h", "-o", str(page), *args]) == 0
        return page.read_text().split('class="processed">')[1].split("<")[0]

    assert processed() == "0" and covered_until(reports) == now - timedelta(hours=31)
    assert processed("--since-last") == "1"
    assert now - SETTLE <= covered_until(reports) <= datetime.now(timezone.utc) - SETTLE
    assert processed("--since-last") == "0"


def test_a_second_run_the_same_day_keeps_the_nights_page(tmp_path, capsys, local_noon):
    """rev8c finding 4: the 07:00 timer run writes reports/<today>.html with the night; the operator starts the same
    unit again later (`systemctl start style-pipeline-report`) for the late photos. The second run rewrote the dated
    page with its few hours, and --since-last kept the night off every later page. Now a later run that day gets
    <date>-<HHMM>.html (then -1, -2 within a minute); report.html is the latest."""
    config = make_config(tmp_path)
    _output(tmp_path, "starry", "coffee.jpg", "starry_night.jpg", datetime.now(timezone.utc) - timedelta(hours=3), 9.5)
    reports = tmp_path / "outbox" / "reports"

    def run() -> None:
        assert cli.main(["report", "--config", str(config), "--since", "24h", "--since-last"]) == 0

    run()
    dated = reports / f"{datetime.now().astimezone():%Y-%m-%d}.html"
    night = dated.read_text()
    assert "coffee.png" in night
    run()
    run()
    assert dated.read_text() == night, "a second run the same day rewrote the night's page"
    later = sorted(p.name for p in reports.glob("*.html") if p != dated)
    assert len(later) == 2 and all(re.fullmatch(rf"{dated.stem}-\d{{4}}(-1)?\.html", name) for name in later), later
    latest = (tmp_path / "outbox" / "report.html").read_text()
    assert "coffee.png" not in latest.split('id="older"')[0] and 'class="processed">0<' in latest


def test_the_morning_report_owns_the_dated_name_after_a_look_by_hand(tmp_path, capsys, local_noon):
    """left8's list: the day's first run took <date>.html, so an operator's `report --since 12h` at 01:00 took the
    night's name and the 07:15 timer page became <date>-0715.html. Now only the timer's run (`--since-last`) writes
    <date>.html; a run by hand gets <date>-<HHMM>.html, and the morning page, written after it, keeps the plain name."""
    config = make_config(tmp_path)
    _output(tmp_path, "starry", "coffee.jpg", "starry_night.jpg", datetime.now(timezone.utc) - timedelta(hours=3), 9.5)
    reports = tmp_path / "outbox" / "reports"
    dated = reports / f"{datetime.now().astimezone():%Y-%m-%d}.html"
    assert cli.main(["report", "--config", str(config), "--since", "12h"]) == 0
    by_hand = [p.name for p in reports.glob("*.html")]
    assert len(by_hand) == 1 and re.fullmatch(rf"{dated.stem}-\d{{4}}\.html", by_hand[0]), by_hand
    assert str(reports / by_hand[0]) in capsys.readouterr().out
    assert cli.main(["report", "--config", str(config), "--since", "24h", "--since-last"]) == 0
    assert dated.exists() and "coffee.png" in dated.read_text(), "the morning page lost its dated name"
    assert (reports / by_hand[0]).exists() and len(list(reports.glob("*.html"))) == 2
