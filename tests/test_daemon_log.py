"""bench/daemon_log.py on a synthetic log whose answers are worked out by hand."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from bench import daemon_log

BASE = datetime(2026, 11, 28, 16, 0, tzinfo=timezone.utc)


def _line(event: str, at: float, job: str | None, **extra) -> str:
    stamp = (BASE + timedelta(seconds=at)).isoformat().replace("+00:00", "Z")
    return json.dumps({"event": event, "timestamp": stamp, **({"job_id": job} if job else {}), **extra})


def _log(tmp_path):
    """Job a: starts at 0, 10 steps 10 ms apart from 0.1 s, with a 0.5 s stall before step 6 (a checkpoint),
    done at 0.8 s; job b: starts at 1.0 s, 10 steps from 1.05 s, done at 1.2 s."""
    lines = ["not json", _line("engine ready", 0.0, None), _line("job started", 0.0, "a")]
    lines += [_line("progress", 0.1 + 0.01 * (k - 1) + (0.5 if k >= 6 else 0), "a", step=k) for k in range(1, 11)]
    lines += [_line("job done", 0.8, "a"), _line("job started", 1.0, "b")]
    lines += [_line("progress", 1.05 + 0.01 * (k - 1), "b", step=k) for k in range(1, 11)]
    lines += [_line("job done", 1.2, "b")]
    path = tmp_path / "daemon.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_table_reads_the_stall_the_gaps_and_the_rates(tmp_path, capsys):
    row = dict(zip(daemon_log.HEADERS, daemon_log.summary(daemon_log.read(_log(tmp_path)))))
    assert row["photos"] == 2 and row["photos/hour (span)"] == 6000  # 2 photos in 1.2 s
    assert row["a photo every, s (median)"] == pytest.approx(1.0)
    assert row["job started -> first step, ms"] == pytest.approx(75.0)  # 100 and 50 ms
    assert row["first -> last step, s (median)"] == pytest.approx(0.34)  # 0.59 and 0.09 s
    assert row["median step, ms"] == pytest.approx(10.0)
    assert row["stalls per photo"] == 0.5 and row["stall s per photo"] == pytest.approx(0.255)
    assert row["last step -> next job started, s"] == pytest.approx(0.31)
    assert row["span in steps (stalls out)"] == "14.2%"  # 0.17 s of steps in 1.2 s
    daemon_log.main([str(tmp_path / "daemon.log")])
    out = capsys.readouterr().out
    assert "| stalls per photo | 0.5 |" in out


def test_photos_started_together_share_the_gap_to_the_next_start():
    assert daemon_log.photo_every([0.0, 0.001, 0.002, 3.0, 3.001, 6.0]) == pytest.approx(1.25)  # 3/3 and 3/2


def test_the_slots_opening_and_the_set_up_by_part_are_read_from_their_fields(tmp_path):
    """"job started"'s opened_ms and the first progress line's setup_ms (issue 13): their medians, by part."""
    lines = [_line("job started", 0.0, "a", opened_ms=10.0), _line("job started", 1.0, "b", opened_ms=30.0)]
    lines += [_line("progress", 0.2, "a", step=1, setup_ms={"copy": 1.0, "content": 4.0, "first_step": 20.0}),
              _line("progress", 0.3, "a", step=2), _line("job done", 0.5, "a"),
              _line("progress", 1.2, "b", step=1, setup_ms={"copy": 3.0, "content": 6.0, "first_step": 40.0}),
              _line("progress", 1.3, "b", step=2), _line("job done", 1.5, "b")]
    path = tmp_path / "daemon.log"
    path.write_text("\n".join(lines) + "\n")
    row = dict(zip(daemon_log.HEADERS, daemon_log.summary(daemon_log.read(path))))
    assert row["taken -> job started in the slot, ms (median)"] == pytest.approx(20.0)
    assert row["job started -> first step by part, ms (median)"] == "copy 2.0, content 5.0, first_step 30.0"
