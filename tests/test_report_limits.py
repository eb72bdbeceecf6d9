"""The morning report's limits (rev6e findings 6 and 7): a damaged log costs its own card, named in the page's
problems, never the page; a busy night gets full cards only for the failures and the newest SHOWN_OUTPUTS outputs,
and the night is read once however many pages are written."""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pipeline import report
from pipeline.report import build_report

NOW = datetime(2026, 11, 29, 7, 0, tzinfo=timezone.utc)


def _log(folder: Path, name: str, extra: str = "", minutes: int = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    when = (NOW - timedelta(minutes=minutes)).isoformat()
    path = folder / f"{name}.json"
    path.write_text('{"finished_at": "%s", "input": {"name": "%s.jpg"}%s}' % (when, name, ", " + extra if extra else ""))
    return path


@pytest.mark.parametrize("extra", [
    '"styles": [{"name": "s.jpg", "path": 5}]',
    '"curve": [{"step": Infinity, "loss": 1.0}, {"step": 2, "loss": 0.5}]',
    '"output": {"name": "/tmp/elsewhere.png"}',
    '"output": {"name": "../../../etc/passwd"}',
    '"settings": {"steps": 10, "coarse_steps": Infinity}, "scales": [1, 2], "steps": 5',
    '"timings": {"total": 1e300}',
    '"losses": {"style": 1%s}' % ("0" * 400),
], ids=["style_path_number", "curve_step_inf", "output_name_absolute", "output_name_dotdot", "coarse_steps_inf",
        "seconds_overflow", "loss_400_digits"])
def test_one_damaged_log_does_not_sink_the_report(tmp_path, extra):
    out = tmp_path / "outbox" / "starry"
    _log(out, "a")
    _log(out, "b", extra)
    (tmp_path / "failed").mkdir()
    html = build_report(tmp_path / "outbox", tmp_path / "failed", since=timedelta(hours=12), now=NOW)
    assert "a.jpg" in html and "</html>" in html
    shown = "b.jpg" in html
    named = "starry/b.json: unreadable (" in html
    assert shown != named, "b.json is either shown or named as unreadable, never both, never neither"
    if "output" in extra or "1e300" in extra:  # what cannot be shown honestly is named, not guessed at
        assert named and "/etc/passwd" not in html.split("unreadable (")[0]


def test_a_failure_log_that_cannot_be_shown_is_named(tmp_path, monkeypatch):
    """The failure cards are under the same guard: whatever breaks one costs that card only."""
    _log(tmp_path / "outbox" / "starry", "a")
    failed = tmp_path / "failed"
    failed.mkdir()
    for name in ("x", "y"):
        (failed / f"{name}.jpg.error.json").write_text(json.dumps({"file": f"{name}.jpg", "code": "unreadable_image",
                                                                   "failed_at": NOW.isoformat()}))
    real = report.failure_card
    monkeypatch.setattr(report, "failure_card",
                        lambda path, log, *limit: (_ for _ in ()).throw(RuntimeError("boom")) if log["file"] == "y.jpg"
                        else real(path, log, *limit))
    html = build_report(tmp_path / "outbox", failed, now=NOW)
    assert "x.jpg" in html and "y.jpg.error.json: unreadable (RuntimeError: boom)" in html and "a.jpg" in html


def test_a_busy_night_has_cards_for_the_newest_and_names_the_rest(tmp_path, monkeypatch):
    """N + k outputs: N full cards (the newest), the k others counted per recipe and listed by name; every
    figure (processed, rate) still counts all N + k; failures all get cards."""
    n, k = report.SHOWN_OUTPUTS, 7
    for i in range(n + k):  # p0 is the newest; the k oldest are p200..p206: scream the even, starry the odd
        _log(tmp_path / "outbox" / ("starry" if i % 2 else "scream"), f"p{i}", '"timings": {"total": 10}', minutes=i)
    (tmp_path / "failed").mkdir()
    html = build_report(tmp_path / "outbox", tmp_path / "failed", now=NOW, link_from=tmp_path / "outbox")
    assert len(re.findall(r'<article class="card output"', html)) == n
    assert f'<b class="processed">{n + k}</b>' in html
    older = html.split('id="older"')[1]
    assert all(f"p{i}.png" in older for i in range(n, n + k)) and "p0.png" not in older
    assert f"{k} more outputs in the outbox" in older and "scream 4, starry 3" in older
    monkeypatch.setattr(report, "LISTED_OUTPUTS", 5)
    html = build_report(tmp_path / "outbox", tmp_path / "failed", now=NOW)
    assert "and 2 more in the outbox, not listed" in html


def test_two_pages_one_reading_each_its_own_links(tmp_path, monkeypatch):
    """cmd_report's two pages (dated and latest) come from one reading of the night: each output's card is made
    once, and each page links to the outputs from where it lies."""
    outbox = tmp_path / "outbox"
    for i in range(3):
        _log(outbox / "starry", f"p{i}", '"output": {"name": "p%d.png"}' % i, minutes=i)
        (outbox / "starry" / f"p{i}.png").write_bytes(b"not really a png")
    (tmp_path / "failed").mkdir()
    made = []
    real = report.output_card
    monkeypatch.setattr(report, "output_card", lambda item, done, *limit: made.append(item.name) or real(item, done, *limit))
    (outbox / "reports").mkdir()
    dated, latest = report.write_reports([outbox / "reports" / "d.html", outbox / "report.html"], outbox, tmp_path / "failed",
                                  now=NOW)
    assert sorted(made) == ["p0.png", "p1.png", "p2.png"]
    for page, href in ((dated, "../starry/p0.png"), (latest, "starry/p0.png")):
        assert f'href="{href}"' in page.read_text() and (page.parent / href).is_file()


def test_thumbnails_decode_under_the_configs_largest_max_pixels(tmp_path):
    """rev7g: the report decoded its thumbnails under the engine's default max_pixels (200 MP), whatever the config
    said: a photo in failed/ over the config's limit (too_large, a bomb for this box) was decoded for its thumbnail.
    Now nothing over the largest limit a recipe has is decoded, and a recipe's higher limit counts."""
    from PIL import Image

    from daemon_helpers import make_config
    from pipeline import cli

    failed = tmp_path / "spool" / "failed"
    failed.mkdir(parents=True)
    Image.new("RGB", (40, 20), "red").save(failed / "huge.jpg")  # 800 pixels
    (failed / "huge.jpg.error.json").write_text(json.dumps({"file": "huge.jpg", "code": "too_large",
                                                            "failed_at": datetime.now(timezone.utc).isoformat()}))
    page = tmp_path / "page.html"

    def thumbnails(**overrides) -> int:
        config = make_config(tmp_path, **overrides)
        assert cli.main(["report", "--config", str(config), "--since", "24h", "-o", str(page)]) == 0
        html = page.read_text()
        assert "huge.jpg" in html
        return html.count("data:image/")

    assert thumbnails(defaults={"max_pixels": 256}) == 0
    assert thumbnails(defaults={"max_pixels": 256},
                      recipes={"big": {"styles": ["starry_night.jpg"], "max_pixels": 1000}}) == 1
    assert thumbnails(defaults={"max_pixels": 1000}) == 1


def test_old_nights_are_not_read_and_an_old_damaged_log_is_not_a_problem_again(tmp_path, monkeypatch):
    """rev8c findings 2 and 3: each morning read and parsed every log ever written (a week of 600-output nights:
    4,201 logs parsed, 5.3 s, for a page of one output) and named last week's damaged log among its problems on
    every page after. A log is written after its time, so one whose file changed before the window opened is
    skipped by a stat (fsio.written_before, as the daemon's tally does)."""
    from pipeline import report_logs

    out = tmp_path / "outbox" / "starry"
    for night in range(1, 8):
        # written a minute after it finished, both past fsio.MTIME_SLACK (an hour) before the window opened
        moment = (NOW - timedelta(days=night, minutes=89)).timestamp()
        for i in range(20):
            path = _log(out / f"night{night}", f"old{i}", minutes=night * 24 * 60 + 90)
            os.utime(path, (moment, moment))
    broken = out / "night7" / "broken.json"
    broken.write_text('{"finished_at": ')
    week_ago = (NOW - timedelta(days=7)).timestamp()
    os.utime(broken, (week_ago, week_ago))
    _log(out, "fresh")  # last night's one output (its file changed now: after the window opened)
    (tmp_path / "failed").mkdir()
    parsed = []
    real = report_logs.read_json
    monkeypatch.setattr(report_logs, "read_json", lambda path, problems: parsed.append(path.name) or real(path, problems))
    night = report.collect(tmp_path / "outbox", tmp_path / "failed", since=timedelta(hours=24), now=NOW)
    assert night.summary.processed == 1 and parsed == ["fresh.json"], f"{len(parsed)} logs parsed for one output"
    assert not [p for p in night.summary.problems if "broken.json" in p]
    everything = report.collect(tmp_path / "outbox", tmp_path / "failed", now=NOW)  # no window: all of them
    assert everything.summary.processed == 141 and any("broken.json" in p for p in everything.summary.problems)


def test_a_page_asked_for_in_the_inbox_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    """rev10b #8: README says a page is never written into the inbox, yet `report -o inbox/r.html` wrote it among
    the photos (relative to the current folder, as a person types it). Refused with exit 2, nothing written; an
    outbox inside the inbox is still the outbox."""
    from daemon_helpers import make_config
    from pipeline import cli

    config = make_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    for page in ("inbox/r.html", "inbox/starry/r.html", "inbox/../inbox/r.html"):
        assert cli.main(["report", "--config", str(config), "--since", "1h", "-o", page]) == 2
        err = capsys.readouterr().err
        assert f"-o {page} lies in the inbox {tmp_path / 'inbox'}, among the photos" in err and err.count("\n") == 1
    assert [p for p in (tmp_path / "inbox").rglob("*") if p.is_file()] == []
    assert cli.main(["report", "--config", str(config), "--since", "1h", "-o", "r.html"]) == 0
    inside = make_config(tmp_path, folders={"inbox": "inbox", "outbox": "inbox/out", "spool": "spool"})
    assert cli.main(["report", "--config", str(inside), "--since", "1h", "-o", "inbox/out/r.html"]) == 0
    assert (tmp_path / "inbox" / "out" / "r.html").is_file()
